//! Google Container Registry / Artifact Registry: an OAuth2 access token from gcp_auth (a
//! service-account key, GKE Workload Identity through the metadata server, or gcloud ADC),
//! used as the password of `oauth2accesstoken` on every configured host.
//!
//! The token's real expiry is kept: the GKE metadata server hands out cached tokens that may
//! have only minutes left.
//!
//! Every fetch builds its gcp_auth provider anew. gcp_auth caches a token inside each provider
//! object and hands it back until 20 s before it expires, so a kept object would answer a
//! refresh at our margin with the very token being replaced; and a new object re-reads the key
//! file, so a rotated key works without a restart.
//!
//! A workload identity federation configuration (`external_account`, from `keyFile` or
//! GOOGLE_APPLICATION_CREDENTIALS) goes to [`federation`] instead: gcp_auth has
//! no such credentials.

use std::path::PathBuf;
use std::sync::Arc;

use gcp_auth::{CustomServiceAccount, TokenProvider};

use std::time::Duration;

use serde::Deserialize;

use super::{Fetch, Kind, Labelled, SourceError};
use crate::config_error::Checked;
use crate::credentials::{Credentials, RegistryCredential};

mod check;
pub mod credential_config;
pub mod federation;

/// `google:` as the file holds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GoogleFile {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct GoogleConfig {
    pub hosts: Vec<String>,
    /// A service-account key file; `None` uses the default chain (GOOGLE_APPLICATION_CREDENTIALS,
    /// gcloud, metadata server).
    pub key_file: Option<PathBuf>,
    /// A workload identity federation configuration (`"type": "external_account"`), from
    /// `keyFile` or GOOGLE_APPLICATION_CREDENTIALS; when set, `key_file` is `None`.
    pub external_account: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error("Google access token: {0}")]
    Token(String),
    #[error("Google workload identity federation: {0}")]
    Federation(#[source] Box<federation::FederationError>),
}

impl Labelled for GoogleError {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Token(_) => "google",
            Self::Federation(_) => "google_federation",
        }
    }
}

pub struct Spec;

impl Kind for Spec {
    type File = GoogleFile;
    type Config = GoogleConfig;
    type Fetcher = GoogleProvider;
    type Error = GoogleError;

    fn check(field: &str, file: GoogleFile) -> Checked<GoogleConfig> {
        check::google(field, file)
    }

    fn recipe(g: &GoogleConfig) -> String {
        format!(
            "google hosts={} key={}{}",
            g.hosts.join(","),
            g.key_file.is_some(),
            // Appended only when set, so the recipes of existing secrets stay as they were.
            if g.external_account.is_some() {
                " federation=true"
            } else {
                ""
            }
        )
    }

    fn known_hosts(g: &GoogleConfig) -> Vec<String> {
        g.hosts.clone()
    }

    async fn fetcher(name: &str, cfg: &GoogleConfig, _: Duration) -> GoogleProvider {
        GoogleProvider::new(name, cfg)
    }
}

pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const USERNAME: &str = "oauth2accesstoken";

pub struct GoogleProvider {
    name: String,
    hosts: Vec<String>,
    key_file: Option<PathBuf>,
    external_account: Option<PathBuf>,
}

impl GoogleProvider {
    pub fn new(name: &str, cfg: &GoogleConfig) -> Self {
        Self {
            name: name.to_string(),
            hosts: cfg.hosts.clone(),
            key_file: cfg.key_file.clone(),
            external_account: cfg.external_account.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A provider of its own for this fetch (see the module comment). The default chain
    /// probes the metadata server, which takes seconds off GCP; a failure there is a fetch
    /// failure to retry, not a start-up failure.
    async fn auth(&self) -> Result<Arc<dyn TokenProvider>, gcp_auth::Error> {
        match &self.key_file {
            Some(path) => {
                Ok(Arc::new(CustomServiceAccount::from_file(path)?) as Arc<dyn TokenProvider>)
            }
            None => gcp_auth::provider().await,
        }
    }

    /// One access token as the password of every configured host.
    fn credentials(&self, token: &str, expires_at: chrono::DateTime<chrono::Utc>) -> Credentials {
        Credentials {
            source: self.name.clone(),
            entries: self
                .hosts
                .iter()
                .map(|h| RegistryCredential::new(h.clone(), USERNAME, token))
                .collect(),
            expires_at: Some(expires_at),
            issued_at: chrono::Utc::now(),
        }
    }
}

impl Fetch for GoogleProvider {
    async fn fetch(&self) -> Result<Credentials, SourceError> {
        if let Some(path) = &self.external_account {
            let token = federation::fetch(path).await.map_err(|source| {
                SourceError::failed(&self.name, GoogleError::Federation(Box::new(source)))
            })?;
            return Ok(self.credentials(&token.access_token, token.expires_at));
        }
        let fail =
            |e: gcp_auth::Error| SourceError::failed(&self.name, GoogleError::Token(explain(&e)));
        let token = self
            .auth()
            .await
            .map_err(fail)?
            .token(&[SCOPE])
            .await
            .map_err(fail)?;
        Ok(self.credentials(token.as_str(), token.expires_at()))
    }
}

/// gcp_auth's top-level message hides the cause; walk the chain so the log says why. When no
/// method worked, say what each of gcp_auth's fallbacks answered (its NoAuthMethod error keeps
/// them as fields, not as a source chain).
fn explain(e: &gcp_auth::Error) -> String {
    if let gcp_auth::Error::NoAuthMethod(gcloud, metadata, adc) = e {
        return format!(
            "no Google credentials: no keyFile and no GOOGLE_APPLICATION_CREDENTIALS; gcloud ADC file: {}; GKE metadata server (metadata.google.internal): {}; gcloud CLI: {}; fix: set keyFile or GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or run on GKE with Workload Identity",
            chain(adc),
            match chain(metadata) {
                // gcp_auth keeps the status and answer for its own warning line.
                m if m == "token request failed" =>
                    format!("{m} (status and answer: gcp_auth's warning above)"),
                m => m,
            },
            chain(gcloud)
        );
    }
    chain(e)
}

fn chain(e: &gcp_auth::Error) -> String {
    let mut msg = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}
