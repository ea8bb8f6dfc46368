//! regcred-refresher keeps Kubernetes image pull secrets for private registries valid.
//!
//! Data flows one way, and the module list reads in that order:
//!
//! ```text
//! cli ─▶ config ─▶ sources ─▶ credentials ─▶ dockerconfig ─▶ writer ─▶ cluster
//!                  (ecr, ecrPublic, google, acr, static)         ▲
//!                                            namespaces ─────────┘
//! ```
//!
//! * [`config`] turns flags and the YAML file into one validated [`config::Config`]; nothing
//!   downstream re-validates.
//! * [`sources`] fetch short-lived credentials (ECR's 12 h token, Google's 1 h access token,
//!   ACR's refresh token) or read static ones, each with its expiry: one module per kind, one
//!   table of kinds. One fetch per source per cycle. Below both, [`input`] (files, variables),
//!   [`names`] and [`config_error`] are leaves.
//! * [`dockerconfig`] renders the `.dockerconfigjson` exactly as kubectl does (pure).
//! * [`namespaces`] decides which namespaces are targets (pure matching plus one list).
//! * [`writer`] server-side-applies one secret into one namespace, only onto secrets we
//!   manage, and references it from ServiceAccounts.
//! * [`cycle`] is the pipeline both modes share (plan → per-namespace verdict and write) and
//!   its report; [`once`] runs it over every target once; [`daemon`] runs it per namespace
//!   from a kube-runtime `Controller`, with a refresh timer per source.
//!
//! Invariants: no password, token or `.dockerconfigjson` reaches a log; a failed refresh
//! leaves the last good secret in place; nothing we did not create is overwritten or deleted.

pub mod admin;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod credentials;
pub mod cycle;
pub mod daemon;
pub mod dockerconfig;
pub mod error_chain;
pub mod events;
pub mod fingerprint;
pub mod input;
pub mod kube_client;
pub mod label_selector;
pub mod metrics;
pub mod names;
pub mod namespaces;
pub mod once;
pub mod schedule;
pub mod secret_format;
pub mod sources;
pub mod status;
pub mod telemetry;
pub mod writer;
