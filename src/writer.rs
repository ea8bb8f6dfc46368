//! Puts one image pull secret into one namespace, and references it from ServiceAccounts.
//!
//! Server-side apply under our own field manager, and only onto secrets we manage: a
//! same-named secret someone else created is left untouched (a conflict) unless the user
//! opted in to adopt it. No write unless [`decide`] finds one needed. Never deletes a secret.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta};
use tracing::{Instrument, debug, info_span};

use crate::config::WriteMode;

mod apply;
pub mod decide;
mod desired;
mod echo;
mod error;
mod live;
mod service_accounts;

pub use desired::{Content, DesiredSecret, Payload};
pub use error::WriteError;
pub use live::LiveSecrets;
pub use service_accounts::SaOutcome;

pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
pub const DATA_KEY: &str = ".dockerconfigjson";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "regcred-refresher";
pub const INSTANCE_LABEL: &str = "regcred-refresher.io/instance";

/// The label selector for everything one instance manages.
pub fn managed_selector(instance: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={instance}")
}
/// Every annotation we write starts with this; one we no longer write is removed.
pub const OUR_PREFIX: &str = "regcred-refresher.io/";
pub const SOURCES_ANNOTATION: &str = "regcred-refresher.io/sources";
pub const EXPIRES_ANNOTATION: &str = "regcred-refresher.io/expires-at";
/// When the credentials reach the renewal margin: before that, no run rewrites the secret.
pub const REFRESH_AFTER_ANNOTATION: &str = "regcred-refresher.io/refresh-after";
/// [`crate::fingerprint`] of the configuration that produced the secret.
pub const FINGERPRINT_ANNOTATION: &str = "regcred-refresher.io/fingerprint";
/// `kubectl apply` keeps the whole object here, old password included: gone on adoption.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug)]
pub enum SecretOutcome {
    Created,
    Updated(Vec<String>),
    Unchanged,
    /// A same-named secret we do not manage; left untouched.
    Conflict,
    Failed(WriteError),
}

impl SecretOutcome {
    /// One word for the outcome: the metric label and the summary's key.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated(_) => "updated",
            Self::Unchanged => "unchanged",
            Self::Conflict => "conflict",
            Self::Failed(_) => "failed",
        }
    }

    pub fn in_place(&self) -> bool {
        matches!(self, Self::Created | Self::Updated(_) | Self::Unchanged)
    }
}

/// What a decision reads of a live secret, and no more: its tokens and kubectl's copy of them
/// would otherwise be held for every namespace at once.
fn reduce(s: &mut Secret) {
    s.metadata.managed_fields = None;
    if let Some(last) = s
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.get_mut(LAST_APPLIED_ANNOTATION))
    {
        // Only its presence matters: it is removed on the next write.
        last.clear();
    }
    crate::secret_format::SecretFormat::reduce_live(s);
}

/// Secrets per page of a list: bounds the size of one response.
const LIST_PAGE: u32 = 500;

/// What writing one secret into one namespace came to.
#[derive(Debug)]
pub struct SecretWrite {
    pub outcome: SecretOutcome,
    /// `--dry-run=client`: the manifest that would be applied.
    pub manifest: Option<String>,
    /// `--diff`: what would change.
    pub diff: Option<String>,
    /// A kept secret's renewal time: when the daemon must look again.
    pub due: Option<DateTime<Utc>>,
}

impl SecretWrite {
    fn of(outcome: SecretOutcome) -> Self {
        Self {
            outcome,
            manifest: None,
            diff: None,
            due: None,
        }
    }
}

pub struct Writer {
    client: kube::Client,
    mode: WriteMode,
    field_manager: String,
    instance: String,
    /// `--force`: write every target whatever its freshness.
    force: bool,
    /// What we wrote: the daemon's watches skip the echo of their own writes.
    echoes: echo::Echoes,
}

impl Writer {
    pub fn new(
        client: kube::Client,
        mode: WriteMode,
        field_manager: String,
        instance: String,
    ) -> Self {
        Self {
            client,
            mode,
            field_manager,
            instance,
            force: false,
            echoes: Default::default(),
        }
    }

    pub fn forced(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// The writer for a run: its mode, field manager and instance come from the configuration.
    pub fn for_config(client: kube::Client, config: &crate::config::Config) -> Self {
        Self::new(
            client,
            config.write_mode,
            config.field_manager.clone(),
            config.instance.clone(),
        )
        .forced(config.force)
    }

    fn remember(&self, kind: &'static str, meta: &ObjectMeta) {
        self.echoes.remember(kind, meta);
    }

    /// Drops what we remembered of an object that is gone, so the cache holds no more than
    /// what lives in the cluster.
    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        self.echoes.forget(kind, namespace, name);
    }

    /// Drops everything remembered of a namespace that is gone.
    pub fn forget_namespace(&self, namespace: &str) {
        self.echoes.forget_namespace(namespace);
    }

    /// How many objects are remembered (a gauge: it must follow the live objects).
    pub fn remembered(&self) -> usize {
        self.echoes.remembered()
    }

    /// True when `meta` is exactly the object we last wrote or found up to date (waiting for
    /// a write under way on it to end).
    pub async fn is_echo(&self, kind: &'static str, meta: &ObjectMeta) -> bool {
        self.echoes.is_echo(kind, meta).await
    }

    /// Reads every live secret of the given names in one list per name (a field selector on
    /// the name, which RBAC can restrict with `resourceNames`), so a full cycle costs one
    /// request plus the writes instead of a read per namespace. `None` when the list is not
    /// allowed (a namespaced install): each write then reads its own secret.
    pub async fn list_live(&self, names: &[&str]) -> Option<LiveSecrets> {
        let mut live = LiveSecrets::default();
        for name in names {
            // Paged: no single response (nor buffer) holds every secret of a name at once,
            // and each page is decoded into the compact form as it is parsed.
            let mut lp = kube::api::ListParams::default()
                .fields(&format!("metadata.name={name}"))
                .limit(LIST_PAGE);
            loop {
                let page = match self.list_page(&lp).await {
                    Ok(page) => page,
                    Err(error) => {
                        debug!(%error, "cannot list secrets by name; reading each namespace instead");
                        return None;
                    }
                };
                let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
                live.extend_page(page);
                match next {
                    Some(token) => lp = lp.continue_token(&token),
                    None => break,
                }
            }
        }
        Some(live)
    }

    async fn list_page(&self, lp: &kube::api::ListParams) -> Result<live::Page, kube::Error> {
        let req = kube::core::Request::new("/api/v1/secrets")
            .list(lp)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<live::Page>(req).await
    }

    pub async fn write_secret(
        &self,
        namespace: &str,
        desired: &DesiredSecret,
        live: Option<&LiveSecrets>,
    ) -> SecretWrite {
        let span = info_span!("write", namespace, secret = %desired.name);
        self.write_inner(namespace, desired, live)
            .instrument(span)
            .await
    }

    /// The live secret of that name in `namespace`: from the list read ahead, or read.
    pub async fn live_secret(
        &self,
        namespace: &str,
        name: &str,
        live: Option<&LiveSecrets>,
    ) -> Result<Option<Secret>, WriteError> {
        match live {
            Some(live) => Ok(live.get(namespace, name)),
            // Reduced as a listed one is: both paths decide on the same form.
            None => Api::<Secret>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await
                .map(|s| {
                    s.map(|mut s| {
                        reduce(&mut s);
                        s
                    })
                })
                .map_err(|e| WriteError::from_kube(namespace, name, "get", e)),
        }
    }

    /// What `desired` needs, from the live secret alone (no write, no token).
    pub fn verdict(&self, existing: Option<&Secret>, desired: &DesiredSecret) -> decide::Verdict {
        match existing {
            None => decide::Verdict::Write(vec![]),
            Some(cur) => decide::verdict(cur, desired, &self.instance, Utc::now(), self.force),
        }
    }

    async fn write_inner(
        &self,
        namespace: &str,
        desired: &DesiredSecret,
        live: Option<&LiveSecrets>,
    ) -> SecretWrite {
        let failed = |e| SecretWrite::of(SecretOutcome::Failed(e));
        let existing = match self.live_secret(namespace, &desired.name, live).await {
            Ok(e) => e,
            Err(e) => return failed(e),
        };
        let (ns, name) = (namespace.to_string(), desired.name.clone());
        let (outcome, due) = match self.verdict(existing.as_ref(), desired) {
            decide::Verdict::Foreign => return SecretWrite::of(SecretOutcome::Conflict),
            decide::Verdict::WrongType(found) => {
                return failed(WriteError::WrongType {
                    namespace: ns,
                    secret: name,
                    found,
                    want: desired.format.secret_type(),
                });
            }
            decide::Verdict::Immutable => {
                return failed(WriteError::Immutable {
                    namespace: ns,
                    secret: name,
                });
            }
            decide::Verdict::Keep { due } => (SecretOutcome::Unchanged, due),
            decide::Verdict::Write(_) if existing.is_none() => (SecretOutcome::Created, None),
            decide::Verdict::Write(why) => (SecretOutcome::Updated(why), None),
        };
        let mut out = SecretWrite {
            due,
            ..SecretWrite::of(outcome)
        };
        if self.mode == WriteMode::Diff {
            out.diff = Some(describe(namespace, &desired.name, &out.outcome));
            return out;
        }
        // A client dry run prints what an apply would send, needed or not (when rendered).
        if self.mode == WriteMode::DryRunClient {
            if desired.content.is_some() {
                out.manifest = Some(manifest_yaml(&desired.to_secret(namespace, &self.instance)));
            }
            return out;
        }
        if matches!(out.outcome, SecretOutcome::Unchanged) {
            debug!("fresh, no write");
            if let Some(cur) = &existing {
                self.remember("secret", &cur.metadata);
            }
            return out;
        }
        if desired.content.is_none() {
            // Planned from the same live secrets, so this is our bug, not the user's; say so
            // rather than write a secret without credentials.
            return failed(WriteError::SourceFailed {
                secret: name,
                sources: format!("{} (not fetched)", desired.sources.join(",")),
            });
        }
        let _writing = self.echoes.writing("secret", namespace, &desired.name);
        match self.apply(namespace, desired, existing.as_ref()).await {
            Ok(()) => out,
            Err(e) => failed(e),
        }
    }
}

fn describe(namespace: &str, secret: &str, outcome: &SecretOutcome) -> String {
    match outcome {
        SecretOutcome::Created => format!("{namespace}/{secret}: would create"),
        SecretOutcome::Unchanged => format!("{namespace}/{secret}: unchanged"),
        SecretOutcome::Updated(c) => {
            format!("{namespace}/{secret}: would update: {}", c.join("; "))
        }
        SecretOutcome::Conflict => {
            format!("{namespace}/{secret}: {}", decide::conflict_note(secret))
        }
        SecretOutcome::Failed(e) => format!("{namespace}/{secret}: {e}"),
    }
}

/// YAML like `kubectl create secret docker-registry … --dry-run=client -o yaml` prints.
pub fn manifest_yaml(secret: &Secret) -> String {
    serde_saphyr::to_string(secret).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn desired(payload: &[u8]) -> DesiredSecret {
        let exp = DateTime::from_timestamp(1_900_000_000, 0);
        DesiredSecret {
            format: Default::default(),
            name: "regcred".into(),
            sources: vec!["a".into(), "b".into()],
            adopt: false,
            fingerprint: "f".into(),
            expires: true,
            pinned: BTreeMap::new(),
            content: Some(Content {
                payload: Payload::new(payload.to_vec()),
                expires_at: exp,
                refresh_after: exp.map(|e| e - chrono::Duration::hours(3)),
            }),
        }
    }

    #[test]
    fn secret_carries_type_label_and_annotations() {
        let s = desired(b"{}").to_secret("ns", "default");
        assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
        let ann = s.metadata.annotations.unwrap();
        assert_eq!(ann[SOURCES_ANNOTATION], "a,b");
        assert_eq!(ann[EXPIRES_ANNOTATION], "2030-03-17T17:46:40Z");
        assert_eq!(ann[REFRESH_AFTER_ANNOTATION], "2030-03-17T14:46:40Z");
        assert_eq!(ann[FINGERPRINT_ANNOTATION], "f");
        assert_eq!(s.metadata.labels.unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
    }

    #[test]
    fn manifest_is_yaml_with_base64_data() {
        let y = manifest_yaml(&desired(b"{\"auths\":{}}").to_secret("team-a", "default"));
        assert!(y.contains("kind: Secret"), "{y}");
        assert!(y.contains("type: kubernetes.io/dockerconfigjson"), "{y}");
        assert!(y.contains("eyJhdXRocyI6e319"), "{y}");
    }
}
