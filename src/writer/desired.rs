//! The secret as it should be, the same in every namespace: its credentials (zeroized, never
//! printed), labels and annotations, and the object we apply.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use zeroize::Zeroizing;

use super::{
    EXPIRES_ANNOTATION, FINGERPRINT_ANNOTATION, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    REFRESH_AFTER_ANNOTATION, SOURCES_ANNOTATION,
};
use crate::secret_format::SecretFormat;

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
    /// The shape it is written in.
    pub format: SecretFormat,
}

/// The rendered credentials of one secret.
#[derive(Debug, Clone)]
pub struct Content {
    pub payload: Payload,
    pub expires_at: Option<DateTime<Utc>>,
    pub refresh_after: Option<DateTime<Utc>>,
}

impl DesiredSecret {
    pub(super) fn annotation_keys(&self) -> BTreeSet<&'static str> {
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

    pub(super) fn labels(&self, instance: &str) -> BTreeMap<String, String> {
        let mut l: BTreeMap<String, String> = [
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (INSTANCE_LABEL.to_string(), instance.to_string()),
        ]
        .into();
        l.extend(self.format.labels());
        l
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
            type_: Some(self.format.secret_type().to_string()),
            // The plan rendered this shape once already and blocked the secret if it failed.
            data: self
                .content
                .as_ref()
                .map(|c| self.format.data(c.payload.bytes()).unwrap_or_default()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Payload::new(b"abc".to_vec())),
            "Payload([redacted; 3 bytes])"
        );
    }
}
