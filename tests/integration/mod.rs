mod common;
mod daemon;
mod google;
mod once_ecr;
mod once_static;
mod ownership;
mod rbac;
mod smoke;
