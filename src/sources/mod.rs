//! Credential sources: one module per kind (ECR, ECR Public, Google, ACR, static), each owning
//! its section of the file, its checks, its fingerprint words, its known hosts, its errors and
//! its fetch, and one table ([`kinds!`] below) that turns the modules into the file's
//! `registries[]` entry, the checked [`SourceKind`], the running [`Source`] and the one-kind
//! check with its hints. A new kind is a module implementing [`Kind`] and one row there.
//!
//! The configuration file calls a source a "registry" (`registries:`, `secrets[].registries`):
//! that is the users' word and stays; in code it is a source everywhere.
//!
//! One fetch per source per cycle, however many namespaces the credentials go to.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tracing::{Instrument, info_span};

use crate::config_error::{Checked, ConfigError};
use crate::credentials::Credentials;
use crate::names::dns_label;

pub mod aws;
mod http;

/// What a source kind brings. Each kind's module implements it on a unit type `Spec`.
pub trait Kind {
    /// The section as the file holds it (`ecr: {...}`).
    type File: for<'de> Deserialize<'de> + std::fmt::Debug;
    /// The section checked, as runs use it.
    type Config: Clone + std::fmt::Debug + Send + Sync;
    /// What fetches: built once per run, nothing sent when built.
    type Fetcher: Fetch;
    /// The kind's failures, with a short stable label each for the failure counter.
    type Error: std::error::Error + Send + Sync + 'static + Labelled;

    /// Checks the section at `field` (`registries[0].ecr`), reading now what each fetch will
    /// read (files, variables), so a missing mount stops the start.
    fn check(field: &str, file: Self::File) -> Checked<Self::Config>;
    /// The recipe words of the fingerprint: every setting that changes what is written,
    /// never a value read from a file or variable.
    fn recipe(cfg: &Self::Config) -> String;
    /// The registry hosts known before any fetch (to refuse two sources of one host).
    fn known_hosts(cfg: &Self::Config) -> Vec<String>;
    /// Whether the credentials expire (their renewal time then matters).
    fn expires(_cfg: &Self::Config) -> bool {
        true
    }
    fn fetcher(
        name: &str,
        cfg: &Self::Config,
        timeout: Duration,
    ) -> impl Future<Output = Self::Fetcher> + Send;
}

pub trait Fetch: Send + Sync {
    fn fetch(&self) -> impl Future<Output = Result<Credentials, SourceError>> + Send;
}

pub trait Labelled {
    /// Short, stable label for the failure counter.
    fn metric_label(&self) -> &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "source {source_name}: no answer within {after:?}; fix: check network access to the provider, or raise --provider-timeout"
    )]
    Timeout {
        source_name: String,
        after: Duration,
    },
    #[error(
        "source {source_name}: the credential arrived already expired (expires at {expires_at}); fix: check the clock of this machine and of the provider"
    )]
    ExpiredOnArrival {
        source_name: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("source {source_name}: {source}")]
    Failed {
        source_name: String,
        #[source]
        source: KindError,
    },
}

impl SourceError {
    /// A failure of one kind's own, for the source `name`.
    pub fn failed(name: &str, e: impl Into<KindError>) -> Self {
        Self::Failed {
            source_name: name.to_string(),
            source: e.into(),
        }
    }

    /// Short, stable label for the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::ExpiredOnArrival { .. } => "expired_on_arrival",
            Self::Failed { source, .. } => source.metric_label(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
}

/// The table of kinds. Each row: the variant, the module, the key in the file.
macro_rules! kinds {
    ($($variant:ident => $module:ident, $key:literal;)+) => {
        $(pub mod $module;)+

        /// A `registries[]` entry as the file holds it: a name and one section of one kind.
        #[derive(Debug, Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub struct RegistryFile {
            pub name: String,
            $(
                #[serde(rename = $key)]
                pub $module: Option<<$module::Spec as Kind>::File>,
            )+
        }

        /// The keys of the kinds, in the table's order (for the hints).
        pub const KEYS: &[&str] = &[$($key),+];

        /// A checked source of one kind.
        #[derive(Debug, Clone)]
        pub enum SourceKind {
            $($variant(<$module::Spec as Kind>::Config),)+
        }

        /// A failure of one kind's own.
        #[derive(Debug, thiserror::Error)]
        pub enum KindError {
            $(#[error(transparent)] $variant(<$module::Spec as Kind>::Error),)+
        }

        $(
            impl From<<$module::Spec as Kind>::Error> for KindError {
                fn from(e: <$module::Spec as Kind>::Error) -> Self {
                    Self::$variant(e)
                }
            }
        )+

        impl KindError {
            fn metric_label(&self) -> &'static str {
                match self {
                    $(Self::$variant(e) => e.metric_label(),)+
                }
            }
        }

        /// The fetchers of a run, one per configured source.
        pub enum Fetcher {
            $($variant(<$module::Spec as Kind>::Fetcher),)+
        }

        impl RegistryFile {
            /// The sections given, as (key, checked kind) builders.
            fn kinds_given(self, field: &str) -> Vec<(&'static str, Box<dyn FnOnce() -> Checked<SourceKind>>)> {
                let mut given: Vec<(&'static str, Box<dyn FnOnce() -> Checked<SourceKind>>)> = Vec::new();
                $(
                    if let Some(file) = self.$module {
                        let field = format!("{field}.{}", $key);
                        given.push((
                            $key,
                            Box::new(move || {
                                <$module::Spec as Kind>::check(&field, file).map(SourceKind::$variant)
                            }),
                        ));
                    }
                )+
                given
            }
        }

        impl SourceKind {
            /// The kind's key in the file, which also labels its spans and metrics.
            pub fn key(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $key,)+
                }
            }

            pub fn recipe(&self) -> String {
                match self {
                    $(Self::$variant(c) => <$module::Spec as Kind>::recipe(c),)+
                }
            }

            pub fn known_hosts(&self) -> Vec<String> {
                match self {
                    $(Self::$variant(c) => <$module::Spec as Kind>::known_hosts(c),)+
                }
            }

            pub fn expires(&self) -> bool {
                match self {
                    $(Self::$variant(c) => <$module::Spec as Kind>::expires(c),)+
                }
            }

            async fn fetcher(&self, name: &str, timeout: Duration) -> Fetcher {
                match self {
                    $(Self::$variant(c) => {
                        Fetcher::$variant(<$module::Spec as Kind>::fetcher(name, c, timeout).await)
                    })+
                }
            }
        }

        impl Fetcher {
            async fn fetch(&self) -> Result<Credentials, SourceError> {
                match self {
                    $(Self::$variant(f) => f.fetch().await,)+
                }
            }
        }
    };
}

kinds! {
    Ecr => ecr, "ecr";
    EcrPublic => ecr_public, "ecrPublic";
    Google => google, "google";
    Static => static_creds, "static";
    Acr => acr, "acr";
}

/// One `registries[]` entry checked: its name, and exactly one section of a known kind.
pub fn check(i: usize, r: RegistryFile) -> Checked<SourceConfig> {
    let field = format!("registries[{i}]");
    dns_label(&format!("{field}.name"), &r.name, "registry name")?;
    let name = r.name.clone();
    let mut given = r.kinds_given(&field);
    let keys = KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match given.len() {
        1 => {
            let (_, check) = given.remove(0);
            Ok(SourceConfig {
                name,
                kind: check()?,
            })
        }
        0 => Err(ConfigError::invalid(
            &field,
            &format!("registry {name:?} has no source"),
            &format!("add one of {}", or_list(&keys)),
        )),
        _ => Err(ConfigError::invalid(
            &field,
            &format!("registry {name:?} has more than one source"),
            &format!("keep one of {keys} and move the others to registries of their own"),
        )),
    }
}

/// `a, b, c or d`.
fn or_list(keys: &str) -> String {
    match keys.rsplit_once(", ") {
        Some((head, last)) => format!("{head} or {last}"),
        None => keys.to_string(),
    }
}

/// A configured source, ready to fetch.
pub struct Source {
    name: String,
    kind: &'static str,
    expires: bool,
    fetcher: Fetcher,
}

/// One source per configured entry, in configuration order.
pub async fn build_all(sources: &[SourceConfig], timeout: Duration) -> Vec<Source> {
    futures::future::join_all(sources.iter().map(|s| Source::new(s, timeout))).await
}

impl Source {
    /// Builds the client for a source. Nothing here talks to the provider yet.
    pub async fn new(cfg: &SourceConfig, timeout: Duration) -> Self {
        Self {
            name: cfg.name.clone(),
            kind: cfg.kind.key(),
            expires: cfg.kind.expires(),
            fetcher: cfg.kind.fetcher(&cfg.name, timeout).await,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Fetches fresh credentials, bounded by `timeout` whatever the SDK underneath does. A
    /// credential that has already expired when it arrives is a failure, not a success: it
    /// would be written only to fail every pull.
    pub async fn fetch(&self, timeout: Duration) -> Result<Credentials, SourceError> {
        let span = info_span!("fetch", source = self.name(), kind = self.kind());
        let started = chrono::Utc::now();
        let mut creds = tokio::time::timeout(timeout, self.fetcher.fetch().instrument(span))
            .await
            .unwrap_or_else(|_| {
                Err(SourceError::Timeout {
                    source_name: self.name.clone(),
                    after: timeout,
                })
            })?;
        // The lifetime counts from before the request: a slow answer never looks fresher.
        creds.issued_at = started;
        match creds.expires_at {
            Some(expires_at) if expires_at <= chrono::Utc::now() => {
                Err(SourceError::ExpiredOnArrival {
                    source_name: self.name.clone(),
                    expires_at,
                })
            }
            _ => Ok(creds),
        }
    }

    /// Static credentials never expire: a run reads them without a provider call.
    pub fn is_static(&self) -> bool {
        !self.expires
    }
}
