//! Integration tests, one binary (link time on 2 cores). They run against the real test world
//! started by `make test` (kube-apiserver + etcd, moto, the Google token fixture); see the
//! README's Testing section.

mod integration;
