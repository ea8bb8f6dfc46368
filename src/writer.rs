//! Puts one image pull secret into one namespace, and references it from ServiceAccounts.
//!
//! Server-side apply under our own field manager, and only onto secrets we manage: a
//! same-named secret someone else created is left untouched (a conflict) unless the user
//! opted in to adopt it. No write unless [`decide`] finds one needed. Never deletes a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use tracing::{Instrument, debug, info_span};
use zeroize::Zeroizing;

use crate::config::WriteMode;

pub mod decide;
mod service_accounts;

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

/// The rendered `.dockerconfigjson`: zeroized on drop, never printed by `Debug`.
#[derive(Clone)]
pub struct Payload(Arc<Zeroizing<Vec<u8>>>);

impl Payload {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Zeroizing::new(bytes)))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload([redacted; {} bytes])", self.0.len())
    }
}

/// One secret as it should be, the same in every namespace.
#[derive(Debug, Clone)]
pub struct DesiredSecret {
    pub name: String,
    pub sources: Vec<String>,
    pub adopt: bool,
    /// [`crate::fingerprint::of_secret`] of its configuration.
    pub fingerprint: String,
    /// Holds credentials that expire (a token source), so the renewal time matters.
    pub expires: bool,
    /// `auths` entries whose values the user handed us (static sources), by host: compared
    /// by value, since a rotated password must land however fresh the rest is.
    pub pinned: BTreeMap<String, serde_json::Value>,
    /// `None` when the tokens were not fetched because no target needed them.
    pub content: Option<Content>,
}

/// The rendered credentials of one secret.
#[derive(Debug, Clone)]
pub struct Content {
    pub payload: Payload,
    pub expires_at: Option<DateTime<Utc>>,
    pub refresh_after: Option<DateTime<Utc>>,
}

impl DesiredSecret {
    fn annotation_keys(&self) -> BTreeSet<&'static str> {
        let mut k = BTreeSet::from([SOURCES_ANNOTATION, FINGERPRINT_ANNOTATION]);
        // Without content (tokens not fetched) the recipe says whether they expire.
        let (expires, renews) = match &self.content {
            Some(c) => (c.expires_at.is_some(), c.refresh_after.is_some()),
            None => (self.expires, self.expires),
        };
        if expires {
            k.insert(EXPIRES_ANNOTATION);
        }
        if renews {
            k.insert(REFRESH_AFTER_ANNOTATION);
        }
        k
    }

    fn labels(&self, instance: &str) -> BTreeMap<String, String> {
        [
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (INSTANCE_LABEL.to_string(), instance.to_string()),
        ]
        .into()
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (SOURCES_ANNOTATION.to_string(), self.sources.join(",")),
            (FINGERPRINT_ANNOTATION.to_string(), self.fingerprint.clone()),
        ]);
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        if let Some(c) = &self.content {
            if let Some(t) = c.expires_at {
                a.insert(EXPIRES_ANNOTATION.to_string(), stamp(t));
            }
            if let Some(t) = c.refresh_after {
                a.insert(REFRESH_AFTER_ANNOTATION.to_string(), stamp(t));
            }
        }
        a
    }

    /// The object we apply: only the fields we own. Without content (tokens not fetched) the
    /// data is empty; such a secret is never written.
    pub fn to_secret(&self, namespace: &str, instance: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(self.labels(instance)),
                annotations: Some(self.annotations()),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.to_string()),
            data: self
                .content
                .as_ref()
                .map(|c| [(DATA_KEY.to_string(), ByteString(c.payload.bytes().to_vec()))].into()),
            ..Default::default()
        }
    }
}

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
    pub fn in_place(&self) -> bool {
        matches!(self, Self::Created | Self::Updated(_) | Self::Unchanged)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "secret {namespace}/{secret}: forbidden to {verb}; fix: grant {verb} on secrets in namespace {namespace} to the refresher's identity ({message})"
    )]
    Forbidden {
        namespace: String,
        secret: String,
        verb: &'static str,
        message: String,
    },
    #[error(
        "secret {namespace}/{secret} has type {found:?}, not {SECRET_TYPE}; the type is immutable: fix: delete that secret or configure another name"
    )]
    WrongType {
        namespace: String,
        secret: String,
        found: String,
    },
    #[error(
        "secret {namespace}/{secret} is immutable (immutable: true), so its credentials can never be renewed; fix: delete it (it is written again, mutable) or configure another name"
    )]
    Immutable { namespace: String, secret: String },
    #[error("secret {namespace}/{secret}: namespace not found")]
    NamespaceGone { namespace: String, secret: String },
    /// Deleted while we wrote: the API server refuses new content with a 403 that is no RBAC
    /// problem, so it must not be reported as one.
    #[error(
        "secret {namespace}/{secret}: namespace is being deleted (Terminating); not written, and skipped from the next cycle on"
    )]
    NamespaceTerminating { namespace: String, secret: String },
    #[error("secret {namespace}/{secret}: {op} failed: {source}")]
    Api {
        namespace: String,
        secret: String,
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "secret {secret}: not written because source(s) {sources} failed; the last good secret stays in place"
    )]
    SourceFailed { secret: String, sources: String },
}

impl WriteError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::WrongType { .. } => "wrong_type",
            Self::Immutable { .. } => "immutable",
            Self::NamespaceGone { .. } => "namespace_gone",
            Self::NamespaceTerminating { .. } => "namespace_terminating",
            Self::Api { .. } => "api",
            Self::SourceFailed { .. } => "source_failed",
        }
    }

    /// Whether the same write may succeed if tried again soon, with nothing else changed: an
    /// API server away, overloaded or in conflict. What only a change of the cluster fixes
    /// (RBAC, the secret's type, immutability, a namespace going away) or a failed source
    /// (its own timer retries it) is not.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Api { .. })
    }

    fn from_kube(namespace: &str, secret: &str, op: &'static str, e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if is_terminating(s) => Self::NamespaceTerminating {
                namespace: namespace.into(),
                secret: secret.into(),
            },
            kube::Error::Api(s) if s.code == 403 => Self::Forbidden {
                namespace: namespace.into(),
                secret: secret.into(),
                verb: refused_verb(&s.message).unwrap_or(op),
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 404 && op != "get" => Self::NamespaceGone {
                namespace: namespace.into(),
                secret: secret.into(),
            },
            _ => Self::Api {
                namespace: namespace.into(),
                secret: secret.into(),
                op,
                source: e,
            },
        }
    }
}

/// The verb an RBAC refusal names (`… cannot create resource "secrets" …`): a server-side
/// apply is authorized as patch and, for a new object, as create, so the failed call's own
/// verb may not be the one to grant.
fn refused_verb(message: &str) -> Option<&'static str> {
    let verb = message.split("cannot ").nth(1)?.split_whitespace().next()?;
    [
        "create", "patch", "update", "get", "list", "watch", "delete",
    ]
    .into_iter()
    .find(|v| *v == verb)
}

/// The NamespaceLifecycle admission plugin's refusal: a 403 whose cause is
/// `NamespaceTerminating` (the message is the fallback for servers that omit the cause).
fn is_terminating(s: &kube::core::Status) -> bool {
    s.code == 403
        && (s
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
            || s.message.contains("because it is being terminated"))
}

/// Live secrets by (namespace, name), read in one list per configured name.
pub type Live = BTreeMap<(String, String), Secret>;

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
    /// resourceVersion of what we last wrote or found up to date, by (kind, namespace, name):
    /// the daemon's watches skip the echo of their own writes.
    seen: std::sync::Mutex<std::collections::HashMap<(&'static str, String, String), String>>,
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
            seen: Default::default(),
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
        if let (Some(ns), Some(name), Some(rv)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.insert((kind, ns.clone(), name.clone()), rv.clone());
        }
    }

    /// Drops what we remembered of an object that is gone, so the cache holds no more than
    /// what lives in the cluster.
    pub fn forget(&self, kind: &'static str, namespace: &str, name: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&(kind, namespace.to_string(), name.to_string()));
        }
    }

    /// Drops everything remembered of a namespace that is gone.
    pub fn forget_namespace(&self, namespace: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|(_, ns, _), _| ns != namespace);
        }
    }

    /// How many objects are remembered (a gauge: it must follow the live objects).
    pub fn remembered(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// True when `meta` is exactly the object we last wrote or found up to date.
    pub fn is_echo(&self, kind: &'static str, meta: &ObjectMeta) -> bool {
        let (Some(ns), Some(name), Some(rv)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
        else {
            return false;
        };
        self.seen
            .lock()
            .map(|seen| seen.get(&(kind, ns.clone(), name.clone())) == Some(rv))
            .unwrap_or(false)
    }

    /// Reads every live secret of the given names in one list per name (a field selector on
    /// the name, which RBAC can restrict with `resourceNames`), so a full cycle costs one
    /// request plus the writes instead of a read per namespace. `None` when the list is not
    /// allowed (a namespaced install): each write then reads its own secret.
    pub async fn list_live(&self, names: &[&str]) -> Option<Live> {
        let api: Api<Secret> = Api::all(self.client.clone());
        let mut live = Live::new();
        for name in names {
            let lp = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
            match api.list(&lp).await {
                Ok(list) => {
                    for s in list.items {
                        if let (Some(ns), Some(n)) =
                            (s.metadata.namespace.clone(), s.metadata.name.clone())
                        {
                            live.insert((ns, n), s);
                        }
                    }
                }
                Err(error) => {
                    debug!(%error, "cannot list secrets by name; reading each namespace instead");
                    return None;
                }
            }
        }
        Some(live)
    }

    pub async fn write_secret(
        &self,
        namespace: &str,
        desired: &DesiredSecret,
        live: Option<&Live>,
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
        live: Option<&Live>,
    ) -> Result<Option<Secret>, WriteError> {
        match live {
            Some(live) => Ok(live
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()),
            None => Api::<Secret>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await
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
        live: Option<&Live>,
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
        match self.apply(namespace, desired, existing.as_ref()).await {
            Ok(()) => out,
            Err(e) => failed(e),
        }
    }

    /// Server-side applies the secret, then removes what other writers left on it that we
    /// would not write: kubectl's last-applied copy (it holds the old password), our own
    /// annotations of an older configuration, and other managers' claims on the fields.
    async fn apply(
        &self,
        namespace: &str,
        desired: &DesiredSecret,
        existing: Option<&Secret>,
    ) -> Result<(), WriteError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let fail = |op, e| WriteError::from_kube(namespace, &desired.name, op, e);
        // Force only over a secret we saw and own (or adopt): a create is not forced, so a
        // foreign secret created since we looked makes the apply conflict (409) instead of
        // being taken over.
        let mut pp = PatchParams::apply(&self.field_manager);
        if existing.is_some() {
            pp = pp.force();
        }
        pp.dry_run = self.mode == WriteMode::DryRunServer;
        let written = api
            .patch(
                &desired.name,
                &pp,
                &Patch::Apply(&desired.to_secret(namespace, &self.instance)),
            )
            .await
            .map_err(|e| fail("patch", e))?;
        let Some(cleanup) = self.cleanup_patch(&written, desired) else {
            if !pp.dry_run {
                self.remember("secret", &written.metadata);
            }
            return Ok(());
        };
        let pp = PatchParams {
            dry_run: pp.dry_run,
            field_manager: Some(self.field_manager.clone()),
            ..Default::default()
        };
        let cleaned = api
            .patch(&desired.name, &pp, &Patch::<()>::Json(cleanup))
            .await
            .map_err(|e| fail("patch", e))?;
        if !pp.dry_run {
            self.remember("secret", &cleaned.metadata);
        }
        Ok(())
    }

    /// A JSON patch, guarded by the resourceVersion just written, that takes off the traces of
    /// other writers; `None` when there are none.
    fn cleanup_patch(
        &self,
        written: &Secret,
        desired: &DesiredSecret,
    ) -> Option<json_patch::Patch> {
        use json_patch::{PatchOperation, RemoveOperation, ReplaceOperation, TestOperation};
        let meta = &written.metadata;
        let annotations = meta.annotations.as_ref();
        let mut stale: Vec<String> = annotations
            .map(|a| {
                decide::stale_annotations(a.keys(), desired)
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        if annotations.is_some_and(|a| a.contains_key(LAST_APPLIED_ANNOTATION)) {
            stale.push(LAST_APPLIED_ANNOTATION.to_string());
        }
        let fields = meta.managed_fields.as_deref().unwrap_or_default();
        let ours = |f: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
            f.manager.as_deref() == Some(self.field_manager.as_str())
                && f.operation.as_deref() == Some("Apply")
        };
        let others = fields.iter().any(|f| !ours(&f));
        if stale.is_empty() && !others {
            return None;
        }
        let mut ops = vec![PatchOperation::Test(TestOperation {
            path: "/metadata/resourceVersion".parse().ok()?,
            value: serde_json::json!(meta.resource_version),
        })];
        for k in stale {
            let path = format!(
                "/metadata/annotations/{}",
                k.replace('~', "~0").replace('/', "~1")
            );
            ops.push(PatchOperation::Remove(RemoveOperation {
                path: path.parse().ok()?,
            }));
        }
        if others {
            // Only our apply's entry stays: the fields are ours alone from now on.
            let kept: Vec<_> = fields.iter().filter(ours).collect();
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: "/metadata/managedFields".parse().ok()?,
                value: serde_json::to_value(kept).ok()?,
            }));
        }
        Some(json_patch::Patch(ops))
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
            format!(
                "{namespace}/{secret}: conflict: exists and is not managed by this {MANAGED_BY} instance"
            )
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
    use super::*;

    fn desired(payload: &[u8]) -> DesiredSecret {
        let exp = DateTime::from_timestamp(1_900_000_000, 0);
        DesiredSecret {
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
    fn a_refusal_names_the_verb_the_server_refused() {
        let forbidden = |message: &str| {
            let s: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": 403, "reason": "Forbidden", "message": message,
            }))
            .unwrap();
            kube::Error::Api(s.boxed())
        };
        let msg = r#"secrets "regcred" is forbidden: User "u" cannot create resource "secrets" in API group "" in the namespace "t""#;
        let e = WriteError::from_kube("t", "regcred", "patch", forbidden(msg));
        assert!(e.to_string().contains("grant create on secrets"), "{e}");
        let e = WriteError::from_kube("t", "regcred", "patch", forbidden("no verb here"));
        assert!(e.to_string().contains("grant patch on secrets"), "{e}");
    }

    #[test]
    fn manifest_is_yaml_with_base64_data() {
        let y = manifest_yaml(&desired(b"{\"auths\":{}}").to_secret("team-a", "default"));
        assert!(y.contains("kind: Secret"), "{y}");
        assert!(y.contains("type: kubernetes.io/dockerconfigjson"), "{y}");
        assert!(y.contains("eyJhdXRocyI6e319"), "{y}");
    }

    #[test]
    fn a_terminating_namespace_is_not_reported_as_an_rbac_problem() {
        let status = |cause: &str, message: &str| {
            let s: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": 403, "reason": "Forbidden", "message": message,
                "details": {"kind": "secrets", "name": "regcred",
                            "causes": [{"reason": cause, "message": message, "field": "metadata.namespace"}]}
            }))
            .unwrap();
            kube::Error::Api(s.boxed())
        };
        let msg = "unable to create new content in namespace t because it is being terminated";
        let e = WriteError::from_kube("t", "regcred", "patch", status("NamespaceTerminating", msg));
        assert_eq!(e.metric_label(), "namespace_terminating");
        assert!(e.to_string().contains("being deleted"), "{e}");
        assert!(!e.to_string().contains("grant"), "{e}");
        let e = WriteError::from_kube("t", "regcred", "patch", status("", "nope"));
        assert_eq!(e.metric_label(), "forbidden");
    }

    #[test]
    fn payload_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Payload::new(b"abc".to_vec())),
            "Payload([redacted; 3 bytes])"
        );
    }
}
