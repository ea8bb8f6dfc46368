//! Credential sources. Each configured registry becomes one [`Provider`]; a fetch returns
//! [`Credentials`] with their expiry. One fetch per source per cycle, however many namespaces
//! the credentials go to.

use std::time::Duration;

use tracing::{Instrument, info_span};

use crate::config::{SourceConfig, SourceKind};
use crate::credentials::Credentials;

pub mod acr;
pub mod aws;
pub mod ecr;
pub mod ecr_public;
pub mod google;
pub mod google_external;
mod http;
pub mod static_creds;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "source {source_name}: no answer within {after:?}; fix: check network access to the provider, or raise --provider-timeout"
    )]
    Timeout {
        source_name: String,
        after: Duration,
    },
    #[error("source {source_name}: ECR GetAuthorizationToken failed: {message}")]
    EcrCall {
        source_name: String,
        message: String,
    },
    #[error("source {source_name}: ECR answered with an unusable token: {problem}")]
    EcrResponse {
        source_name: String,
        problem: String,
    },
    #[error("source {source_name}: ECR Public GetAuthorizationToken (us-east-1) failed: {message}")]
    EcrPublicCall {
        source_name: String,
        message: String,
    },
    #[error("source {source_name}: ECR Public answered with an unusable token: {problem}")]
    EcrPublicResponse {
        source_name: String,
        problem: String,
    },
    #[error("source {source_name}: Google access token: {message}")]
    Google {
        source_name: String,
        message: String,
    },
    #[error("source {source_name}: Google workload identity federation: {source}")]
    GoogleFederation {
        source_name: String,
        #[source]
        source: Box<google_external::FederationError>,
    },
    #[error("source {source_name}: Azure Container Registry: {source}")]
    Acr {
        source_name: String,
        #[source]
        source: Box<acr::AcrError>,
    },
    #[error("source {source_name}: cannot read {what}: {message}")]
    StaticRead {
        source_name: String,
        what: String,
        message: String,
    },
    #[error(
        "source {source_name}: the credential arrived already expired (expires at {expires_at}); fix: check the clock of this machine and of the provider"
    )]
    ExpiredOnArrival {
        source_name: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("source {source_name}: {what}: {source}")]
    StaticParse {
        source_name: String,
        what: String,
        #[source]
        source: crate::dockerconfig::DockerConfigError,
    },
}

impl ProviderError {
    /// Short, stable label for the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::EcrCall { .. } => "ecr_call",
            Self::EcrResponse { .. } => "ecr_response",
            Self::EcrPublicCall { .. } => "ecr_public_call",
            Self::EcrPublicResponse { .. } => "ecr_public_response",
            Self::Google { .. } => "google",
            Self::GoogleFederation { .. } => "google_federation",
            Self::Acr { .. } => "acr",
            Self::ExpiredOnArrival { .. } => "expired_on_arrival",
            Self::StaticRead { .. } => "static_read",
            Self::StaticParse { .. } => "static_parse",
        }
    }
}

pub enum Provider {
    Ecr(ecr::EcrProvider),
    EcrPublic(ecr_public::EcrPublicProvider),
    Google(google::GoogleProvider),
    Static(static_creds::StaticProvider),
    Acr(acr::AcrProvider),
}

/// One provider per configured source, in configuration order.
pub async fn build_all(config: &crate::config::Config) -> Vec<Provider> {
    futures::future::join_all(
        config
            .sources
            .iter()
            .map(|s| Provider::new(s, config.provider_timeout)),
    )
    .await
}

impl Provider {
    /// Builds the client for a source. Nothing here talks to the provider yet.
    pub async fn new(cfg: &SourceConfig, timeout: Duration) -> Self {
        match &cfg.kind {
            SourceKind::Ecr(e) => Self::Ecr(ecr::EcrProvider::new(&cfg.name, e, timeout).await),
            SourceKind::EcrPublic(p) => {
                Self::EcrPublic(ecr_public::EcrPublicProvider::new(&cfg.name, p, timeout).await)
            }
            SourceKind::Google(g) => Self::Google(google::GoogleProvider::new(&cfg.name, g)),
            SourceKind::Static(s) => Self::Static(static_creds::StaticProvider::new(&cfg.name, s)),
            SourceKind::Acr(a) => Self::Acr(acr::AcrProvider::new(&cfg.name, a)),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Ecr(p) => p.name(),
            Self::EcrPublic(p) => p.name(),
            Self::Google(p) => p.name(),
            Self::Static(p) => p.name(),
            Self::Acr(p) => p.name(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ecr(_) => "ecr",
            Self::EcrPublic(_) => "ecrPublic",
            Self::Google(_) => "google",
            Self::Static(_) => "static",
            Self::Acr(_) => "acr",
        }
    }

    /// Fetches fresh credentials, bounded by `timeout` whatever the SDK underneath does. A
    /// credential that has already expired when it arrives is a failure, not a success: it
    /// would be written only to fail every pull.
    pub async fn fetch(&self, timeout: Duration) -> Result<Credentials, ProviderError> {
        let span = info_span!("fetch", source = self.name(), kind = self.kind());
        let started = chrono::Utc::now();
        let work = async {
            match self {
                Self::Ecr(p) => p.fetch().await,
                Self::EcrPublic(p) => p.fetch().await,
                Self::Google(p) => p.fetch().await,
                Self::Static(p) => p.fetch(),
                Self::Acr(p) => p.fetch().await,
            }
        };
        let mut creds = tokio::time::timeout(timeout, work.instrument(span))
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Timeout {
                    source_name: self.name().to_string(),
                    after: timeout,
                })
            })?;
        // The lifetime counts from before the request: a slow answer never looks fresher.
        creds.issued_at = started;
        match creds.expires_at {
            Some(expires_at) if expires_at <= chrono::Utc::now() => {
                Err(ProviderError::ExpiredOnArrival {
                    source_name: self.name().to_string(),
                    expires_at,
                })
            }
            _ => Ok(creds),
        }
    }

    pub fn is_static(&self) -> bool {
        matches!(self, Self::Static(_))
    }
}
