//! Puts one image pull secret into one namespace, and references it from ServiceAccounts.
//!
//! Server-side apply under our own field manager, and only onto secrets we manage: a
//! same-named secret someone else created is left untouched (a conflict) unless the user
//! opted in to adopt it. No write when nothing changed. Never deletes anything.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use tracing::{Instrument, debug, info_span};
use zeroize::Zeroizing;

use crate::config::WriteMode;

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
pub const SOURCES_ANNOTATION: &str = "regcred-refresher.io/sources";
pub const EXPIRES_ANNOTATION: &str = "regcred-refresher.io/expires-at";

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
    pub payload: Payload,
    pub sources: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub adopt: bool,
}

impl DesiredSecret {
    fn labels(&self, instance: &str) -> BTreeMap<String, String> {
        [
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (INSTANCE_LABEL.to_string(), instance.to_string()),
        ]
        .into()
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([(SOURCES_ANNOTATION.to_string(), self.sources.join(","))]);
        if let Some(t) = self.expires_at {
            a.insert(
                EXPIRES_ANNOTATION.to_string(),
                t.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
        }
        a
    }

    /// The object we apply: only the fields we own.
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
            data: Some(
                [(
                    DATA_KEY.to_string(),
                    ByteString(self.payload.bytes().to_vec()),
                )]
                .into(),
            ),
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
            Self::NamespaceGone { .. } => "namespace_gone",
            Self::NamespaceTerminating { .. } => "namespace_terminating",
            Self::Api { .. } => "api",
            Self::SourceFailed { .. } => "source_failed",
        }
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
                verb: op,
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

/// What the run prints instead of (or besides) writing.
#[derive(Debug, Default)]
pub struct Printed {
    pub manifest: Option<String>,
    pub diff: Option<String>,
}

pub struct Writer {
    client: kube::Client,
    mode: WriteMode,
    field_manager: String,
    instance: String,
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
            seen: Default::default(),
        }
    }

    /// The writer for a run: its mode, field manager and instance come from the configuration.
    pub fn for_config(client: kube::Client, config: &crate::config::Config) -> Self {
        Self::new(
            client,
            config.write_mode,
            config.field_manager.clone(),
            config.instance.clone(),
        )
    }

    fn remember(&self, kind: &'static str, meta: &ObjectMeta) {
        if let (Some(ns), Some(name), Some(rv)) =
            (&meta.namespace, &meta.name, &meta.resource_version)
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.insert((kind, ns.clone(), name.clone()), rv.clone());
        }
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
    ) -> (SecretOutcome, Printed) {
        let span = info_span!("write", namespace, secret = %desired.name);
        self.write_inner(namespace, desired, live)
            .instrument(span)
            .await
    }

    async fn write_inner(
        &self,
        namespace: &str,
        desired: &DesiredSecret,
        live: Option<&Live>,
    ) -> (SecretOutcome, Printed) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let fail = |e| (SecretOutcome::Failed(e), Printed::default());
        let existing = match live {
            Some(live) => live
                .get(&(namespace.to_string(), desired.name.clone()))
                .cloned(),
            None => match api.get_opt(&desired.name).await {
                Ok(e) => e,
                Err(e) => return fail(WriteError::from_kube(namespace, &desired.name, "get", e)),
            },
        };
        let changes = match &existing {
            None => None,
            Some(cur) => {
                // Ours means our label and our instance: another installation's secret is as
                // foreign as a hand-made one.
                let labels = cur.metadata.labels.as_ref();
                let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
                let managed = label(MANAGED_BY_LABEL) == Some(MANAGED_BY)
                    && label(INSTANCE_LABEL) == Some(self.instance.as_str());
                if !managed && !desired.adopt {
                    return (SecretOutcome::Conflict, Printed::default());
                }
                let found = cur.type_.clone().unwrap_or_else(|| "Opaque".into());
                if found != SECRET_TYPE {
                    return fail(WriteError::WrongType {
                        namespace: namespace.into(),
                        secret: desired.name.clone(),
                        found,
                    });
                }
                Some(changes(cur, desired, managed, &self.instance))
            }
        };
        let outcome = match &changes {
            None => SecretOutcome::Created,
            Some(c) if c.is_empty() => SecretOutcome::Unchanged,
            Some(c) => SecretOutcome::Updated(c.clone()),
        };
        let mut printed = Printed::default();
        match self.mode {
            WriteMode::DryRunClient => {
                printed.manifest =
                    Some(manifest_yaml(&desired.to_secret(namespace, &self.instance)));
                return (outcome, printed);
            }
            WriteMode::Diff => {
                printed.diff = Some(describe(namespace, &desired.name, &outcome));
                return (outcome, printed);
            }
            WriteMode::Apply | WriteMode::DryRunServer => {}
        }
        if matches!(outcome, SecretOutcome::Unchanged) {
            debug!("unchanged, no write");
            if let Some(cur) = &existing {
                self.remember("secret", &cur.metadata);
            }
            return (outcome, printed);
        }
        // Force only over a secret we saw and own: a create is not forced, so a foreign secret
        // created since we looked makes the apply conflict (409) instead of being taken over.
        let mut pp = PatchParams::apply(&self.field_manager);
        if existing.is_some() {
            pp = pp.force();
        }
        pp.dry_run = self.mode == WriteMode::DryRunServer;
        match api
            .patch(
                &desired.name,
                &pp,
                &Patch::Apply(&desired.to_secret(namespace, &self.instance)),
            )
            .await
        {
            Ok(written) => {
                if !pp.dry_run {
                    self.remember("secret", &written.metadata);
                }
                (outcome, printed)
            }
            Err(e) => fail(WriteError::from_kube(namespace, &desired.name, "patch", e)),
        }
    }
}

/// What differs between the live secret and the desired one, by registry host and metadata
/// key: never the values.
fn changes(cur: &Secret, desired: &DesiredSecret, managed: bool, instance: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !managed {
        out.push("adopted".to_string());
    }
    let live = cur
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    if live != desired.payload.bytes() {
        let hosts = |bytes: &[u8]| -> BTreeMap<String, serde_json::Value> {
            serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("auths").cloned())
                .and_then(|a| serde_json::from_value(a).ok())
                .unwrap_or_default()
        };
        let (old, new) = (hosts(live), hosts(desired.payload.bytes()));
        for (h, v) in &new {
            match old.get(h) {
                None => out.push(format!("credentials added for {h}")),
                Some(o) if o != v => out.push(format!("credentials changed for {h}")),
                _ => {}
            }
        }
        for h in old.keys().filter(|h| !new.contains_key(*h)) {
            out.push(format!("credentials removed for {h}"));
        }
        if out.is_empty() || out == ["adopted"] {
            out.push("credentials document rewritten".to_string());
        }
    }
    let empty = BTreeMap::new();
    for (kind, live, want) in [
        (
            "label",
            cur.metadata.labels.as_ref().unwrap_or(&empty),
            desired.labels(instance),
        ),
        (
            "annotation",
            cur.metadata.annotations.as_ref().unwrap_or(&empty),
            desired.annotations(),
        ),
    ] {
        for (k, v) in &want {
            if live.get(k) != Some(v) {
                out.push(format!("{kind} {k}"));
            }
        }
        if kind == "annotation"
            && !want.contains_key(EXPIRES_ANNOTATION)
            && live.contains_key(EXPIRES_ANNOTATION)
        {
            out.push(format!("annotation {EXPIRES_ANNOTATION} removed"));
        }
    }
    out
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
        DesiredSecret {
            name: "regcred".into(),
            payload: Payload::new(payload.to_vec()),
            sources: vec!["a".into(), "b".into()],
            expires_at: DateTime::from_timestamp(1_900_000_000, 0),
            adopt: false,
        }
    }

    #[test]
    fn secret_carries_type_label_and_annotations() {
        let s = desired(b"{}").to_secret("ns", "default");
        assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
        let ann = s.metadata.annotations.unwrap();
        assert_eq!(ann[SOURCES_ANNOTATION], "a,b");
        assert_eq!(ann[EXPIRES_ANNOTATION], "2030-03-17T17:46:40Z");
        assert_eq!(s.metadata.labels.unwrap()[MANAGED_BY_LABEL], MANAGED_BY);
    }

    #[test]
    fn changes_name_hosts_and_keys_never_values() {
        let old = br#"{"auths":{"h1":{"auth":"x"},"gone":{"auth":"y"}}}"#;
        let new = br#"{"auths":{"h1":{"auth":"SECRETNEW"},"h2":{"auth":"z"}}}"#;
        let live = desired(old).to_secret("ns", "default");
        let c = changes(&live, &desired(new), true, "default");
        assert_eq!(
            c,
            [
                "credentials changed for h1",
                "credentials added for h2",
                "credentials removed for gone"
            ]
        );
        assert!(changes(&live, &desired(old), true, "default").is_empty());
        let text = c.join(" ");
        assert!(!text.contains("SECRETNEW"));
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
