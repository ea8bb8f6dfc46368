//! The live secrets a cycle reads ahead in one paged list per configured name, kept in the
//! compact form a decision reads.
//!
//! Each list page is decoded straight into that form: managedFields, kubectl's last-applied
//! copy (the old password), other writers' annotations and every data key but the document are
//! skipped by the parser and never allocated, and the document is reduced to its hosts,
//! usernames and digests as it arrives. A whole `Secret` exists only for the one being decided
//! ([`LiveSecrets::get`] builds it back). At 10,000 namespaces that is the difference between
//! some 40 MiB of heap and a few.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{LAST_APPLIED_ANNOTATION, OUR_PREFIX};
use crate::secret_format::SecretFormat;

type Pairs = Box<[(Box<str>, Box<str>)]>;

/// What a decision, an echo and an adoption read of one live secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LiveSecret {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    type_: Option<Box<str>>,
    immutable: bool,
    labels: Pairs,
    /// Ours (`regcred-refresher.io/…`), and kubectl's last-applied copy with its value
    /// dropped: only its presence matters (it is removed on the next write).
    annotations: Pairs,
    /// The reduced `.dockerconfigjson` ([`SecretFormat::reduce_live`]).
    document: Option<Box<[u8]>>,
}

/// The live secrets by namespace and name.
#[derive(Debug, Default)]
pub struct LiveSecrets {
    /// `namespace/name`: one allocation per secret; a lookup formats its key.
    by_key: BTreeMap<Box<str>, LiveSecret>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl LiveSecrets {
    /// The live secret as a decision reads it (reduced), or `None`: none by that name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.by_key
            .get(key(namespace, name).as_str())
            .map(|s| s.to_secret(namespace, name))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Takes one namespace's secrets out (the daemon's pass uses each at most once).
    pub fn take_namespace(&mut self, namespace: &str) -> LiveSecrets {
        let prefix = format!("{namespace}/");
        let keys: Vec<Box<str>> = self
            .by_key
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = LiveSecrets::default();
        for k in keys {
            if let Some(v) = self.by_key.remove(&k) {
                out.by_key.insert(k, v);
            }
        }
        out
    }

    /// Forgets one secret (changed since the list): its reader reads it from the server.
    pub fn remove(&mut self, namespace: &str, name: &str) -> bool {
        self.by_key.remove(key(namespace, name).as_str()).is_some()
    }

    pub(super) fn extend_page(&mut self, page: Page) {
        self.by_key.extend(page.items);
    }
}

impl LiveSecret {
    fn to_secret(&self, namespace: &str, name: &str) -> Secret {
        let map = |p: &Pairs| -> Option<BTreeMap<String, String>> {
            (!p.is_empty()).then(|| {
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: self.uid.as_deref().map(str::to_string),
                resource_version: self.resource_version.as_deref().map(str::to_string),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                ..Default::default()
            },
            type_: self.type_.as_deref().map(str::to_string),
            immutable: self.immutable.then_some(true),
            data: self
                .document
                .as_ref()
                .map(|d| BTreeMap::from([(super::DATA_KEY.to_string(), ByteString(d.to_vec()))])),
            ..Default::default()
        }
    }
}

/// One page of a secret list, each item decoded into [`LiveSecret`] as the parser reaches it.
#[derive(Deserialize)]
pub(super) struct Page {
    #[serde(default)]
    pub metadata: PageMeta,
    #[serde(default, deserialize_with = "items")]
    items: Vec<(Box<str>, LiveSecret)>,
}

#[derive(Deserialize, Default)]
pub(super) struct PageMeta {
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
}

/// A list item as decoded: only the fields named here are kept.
#[derive(Deserialize)]
struct Item {
    metadata: ItemMeta,
    #[serde(rename = "type")]
    type_: Option<String>,
    immutable: Option<bool>,
    data: Option<BTreeMap<String, ByteString>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "labels")]
    labels: Pairs,
    #[serde(default, deserialize_with = "our_annotations")]
    annotations: Pairs,
}

fn items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Box<str>, LiveSecret)>, D::Error> {
    struct Items;
    impl<'de> Visitor<'de> for Items {
        type Value = Vec<(Box<str>, LiveSecret)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of secrets")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<Item>()? {
                out.extend(item.compact());
            }
            Ok(out)
        }
    }
    d.deserialize_any(Items)
}

impl Item {
    fn compact(self) -> Option<(Box<str>, LiveSecret)> {
        let ItemMeta {
            name,
            namespace,
            uid,
            resource_version,
            labels,
            annotations,
        } = self.metadata;
        let (name, namespace) = (name?, namespace?);
        let document = self.data.map(|data| {
            let mut s = Secret {
                type_: self.type_.clone(),
                data: Some(data),
                ..Default::default()
            };
            SecretFormat::reduce_live(&mut s);
            s.data
                .and_then(|mut d| d.remove(super::DATA_KEY))
                .map(|b| b.0.into_boxed_slice())
                .unwrap_or_default()
        });
        Some((
            key(&namespace, &name).into_boxed_str(),
            LiveSecret {
                uid: uid.map(String::into_boxed_str),
                resource_version: resource_version.map(String::into_boxed_str),
                type_: self.type_.map(String::into_boxed_str),
                immutable: self.immutable == Some(true),
                labels,
                annotations,
                document,
            },
        ))
    }
}

/// A string map, kept whole (a secret's labels are few) but compact.
fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
    pairs(d, |_| Keep::Value)
}

/// Our annotations and the marker of kubectl's copy; the others are skipped unread.
fn our_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
    pairs(d, |k| {
        if k.starts_with(OUR_PREFIX) {
            Keep::Value
        } else if k == LAST_APPLIED_ANNOTATION {
            Keep::KeyOnly
        } else {
            Keep::Nothing
        }
    })
}

enum Keep {
    Value,
    KeyOnly,
    Nothing,
}

fn pairs<'de, D: Deserializer<'de>>(d: D, keep: fn(&str) -> Keep) -> Result<Pairs, D::Error> {
    struct Pairs_(fn(&str) -> Keep);
    impl<'de> Visitor<'de> for Pairs_ {
        type Value = Pairs;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E>(self) -> Result<Pairs, E> {
            Ok(Box::default())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                match (self.0)(&k) {
                    Keep::Value => out.push((k.into(), map.next_value::<String>()?.into())),
                    Keep::KeyOnly => {
                        map.next_value::<IgnoredAny>()?;
                        out.push((k.into(), Box::default()));
                    }
                    Keep::Nothing => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            out.sort();
            Ok(out.into_boxed_slice())
        }
    }
    d.deserialize_any(Pairs_(keep)).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(items: serde_json::Value) -> Page {
        serde_json::from_value(json!({"kind": "SecretList", "apiVersion": "v1",
            "metadata": {"continue": "next", "resourceVersion": "9"}, "items": items}))
        .unwrap()
    }

    fn doc(user: &str, pass: &str) -> String {
        use base64::Engine;
        let d = json!({"auths": {"quay.io": {"username": user, "password": pass,
            "auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))}}});
        base64::engine::general_purpose::STANDARD.encode(d.to_string())
    }

    #[test]
    fn a_page_keeps_what_a_decision_reads_and_drops_the_rest_unread() {
        let p = page(json!([{
            "metadata": {"name": "regcred", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                "labels": {"app.kubernetes.io/managed-by": "regcred-refresher", "team": "a"},
                "annotations": {"regcred-refresher.io/fingerprint": "f1",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":\"old-password\"}",
                    "someone.else/note": "hello"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {}}}]},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": doc("bot", "s3cret"), "extra": "eA=="}
        }]));
        assert_eq!(p.metadata.continue_.as_deref(), Some("next"));
        let mut live = LiveSecrets::default();
        live.extend_page(p);
        let s = live.get("team-a", "regcred").unwrap();
        assert_eq!(s.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(s.metadata.labels.as_ref().unwrap()["team"], "a");
        let ann = s.metadata.annotations.unwrap();
        assert_eq!(ann["regcred-refresher.io/fingerprint"], "f1");
        assert_eq!(
            ann[LAST_APPLIED_ANNOTATION], "",
            "present, its value dropped"
        );
        assert!(!ann.contains_key("someone.else/note"));
        assert!(s.metadata.managed_fields.is_none());
        let data = s.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [".dockerconfigjson"]);
        let text = String::from_utf8(data[".dockerconfigjson"].0.clone()).unwrap();
        assert!(
            !text.contains("s3cret") && text.contains("digest"),
            "{text}"
        );
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    }

    #[test]
    fn the_reduced_form_decides_as_the_full_secret_would() {
        let full: Secret = serde_json::from_value(json!({
            "metadata": {"name": "regcred", "namespace": "team-a",
                "labels": {"app.kubernetes.io/managed-by": "regcred-refresher",
                           "regcred-refresher.io/instance": "default"},
                "annotations": {"regcred-refresher.io/sources": "quay",
                                "regcred-refresher.io/fingerprint": "fp"}},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": doc("bot", "s3cret")}
        }))
        .unwrap();
        let mut reduced = full.clone();
        super::super::reduce(&mut reduced);
        let mut live = LiveSecrets::default();
        live.extend_page(page(json!([serde_json::to_value(&full).unwrap()])));
        let compact = live.get("team-a", "regcred").unwrap();
        assert_eq!(compact.data, reduced.data);
        assert_eq!(compact.metadata.labels, reduced.metadata.labels);
        assert_eq!(compact.metadata.annotations, reduced.metadata.annotations);
    }

    #[test]
    fn taking_a_namespace_takes_its_secrets_only() {
        let item = |ns: &str, name: &str| json!({"metadata": {"name": name, "namespace": ns}});
        let mut live = LiveSecrets::default();
        live.extend_page(page(json!([
            item("a", "x"),
            item("a", "y"),
            item("a-b", "x"),
            item("b", "x")
        ])));
        let a = live.take_namespace("a");
        assert_eq!(a.len(), 2);
        assert!(a.get("a", "x").is_some() && a.get("a", "y").is_some());
        assert_eq!(live.len(), 2);
        assert!(
            live.get("a-b", "x").is_some(),
            "a prefix is not a namespace"
        );
        assert!(live.remove("b", "x") && !live.remove("b", "x"));
    }

    #[test]
    fn an_empty_page_or_null_maps_decode() {
        let p: Page = serde_json::from_value(json!({"metadata": {}, "items": null})).unwrap();
        assert!(p.items.is_empty());
        let p = page(
            json!([{"metadata": {"name": "n", "namespace": "a", "labels": null, "annotations": null}}]),
        );
        assert_eq!(p.items.len(), 1);
    }
}
