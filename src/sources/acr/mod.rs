//! Azure Container Registry, keyless or with a service principal: an Entra access token for
//! the registry's audience (client credentials, proven by a federated token or a client
//! secret), exchanged at the registry's `/oauth2/exchange` for a refresh token. The refresh
//! token is the password (user `00000000-0000-0000-0000-000000000000`, as `az acr login
//! --expose-token` hands it out) and its own `exp` claim is the expiry that drives renewal.
//!
//! The official azure_identity crate gets the Entra token only (not the exchange) and brings
//! reqwest with aws-lc-rs, a second TLS provider; these are two POSTs over the hyper/rustls
//! client already in the binary (README, "Azure").
//!
//! Both files are read again at each fetch: the kubelet rotates projected tokens and a
//! mounted Secret may change. Tokens never reach a message: errors carry Entra's or the
//! registry's error code and description, the URL and the step.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use super::{Fetch, Kind, Labelled, SourceError};
use crate::config_error::Checked;
use crate::credentials::{Credentials, RegistryCredential};

mod check;
mod exchange;

pub use exchange::AcrError;
use exchange::refresh_token;

/// `acr:` as the file holds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcrFile {
    pub login_server: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub federated_token_file: Option<PathBuf>,
    pub client_secret_file: Option<PathBuf>,
    pub authority_host: Option<String>,
    pub scope: Option<String>,
}

/// Azure Container Registry: an Entra token for the client, exchanged at the registry for a
/// refresh token (the password; its own expiry drives the schedule).
#[derive(Debug, Clone)]
pub struct AcrConfig {
    /// The registry host, lowercased: the secret's key and the exchange's `service`.
    pub login_server: String,
    pub tenant_id: String,
    pub client_id: String,
    /// Entra's endpoint, without a trailing slash.
    pub authority: String,
    /// The registry audience asked of Entra (`<resource>/.default`).
    pub scope: String,
    pub credential: AzureCredential,
}

/// What proves the client to Entra; the file is read at every fetch.
#[derive(Debug, Clone)]
pub enum AzureCredential {
    /// A federated token (Workload Identity: the pod's projected ServiceAccount token).
    FederatedToken(PathBuf),
    /// A service principal's client secret.
    ClientSecret(PathBuf),
}

/// A failed fetch, as the source's error shows it.
#[derive(Debug, thiserror::Error)]
#[error("Azure Container Registry: {0}")]
pub struct AcrFailure(#[source] Box<AcrError>);

impl Labelled for AcrFailure {
    fn metric_label(&self) -> &'static str {
        "acr"
    }
}

pub struct Spec;

impl Kind for Spec {
    type File = AcrFile;
    type Config = AcrConfig;
    type Fetcher = AcrProvider;
    type Error = AcrFailure;

    fn check(field: &str, file: AcrFile) -> Checked<AcrConfig> {
        check::acr(field, file)
    }

    fn recipe(a: &AcrConfig) -> String {
        format!(
            "acr server={} tenant={} client={} authority={} scope={} credential={}",
            a.login_server,
            a.tenant_id,
            a.client_id,
            a.authority,
            a.scope,
            match &a.credential {
                AzureCredential::FederatedToken(_) => "federated-token",
                AzureCredential::ClientSecret(_) => "client-secret",
            }
        )
    }

    fn known_hosts(a: &AcrConfig) -> Vec<String> {
        vec![a.login_server.clone()]
    }

    async fn fetcher(name: &str, cfg: &AcrConfig, _: Duration) -> AcrProvider {
        AcrProvider::new(name, cfg)
    }
}

/// The user name ACR expects with a refresh token as password.
pub const USERNAME: &str = "00000000-0000-0000-0000-000000000000";

pub struct AcrProvider {
    name: String,
    cfg: AcrConfig,
}

impl AcrProvider {
    pub fn new(name: &str, cfg: &AcrConfig) -> Self {
        Self {
            name: name.to_string(),
            cfg: cfg.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Fetch for AcrProvider {
    async fn fetch(&self) -> Result<Credentials, SourceError> {
        let (token, expires_at) = refresh_token(&self.cfg)
            .await
            .map_err(|e| SourceError::failed(&self.name, AcrFailure(Box::new(e))))?;
        Ok(Credentials {
            source: self.name.clone(),
            entries: vec![RegistryCredential::new(
                self.cfg.login_server.clone(),
                USERNAME,
                &token,
            )],
            expires_at: Some(expires_at),
            issued_at: Utc::now(),
        })
    }
}
