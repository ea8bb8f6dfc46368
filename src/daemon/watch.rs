//! The daemon's watches: each kept as a trimmed cache (a store and the stream that fills it),
//! and the filters that turn their events into namespaces to reconcile. Only what a reader
//! needs stays in memory (managedFields were the bulk); the initial list never triggers a
//! reconcile (the first pass covers it), nor does the echo of our own write.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::future::Either;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Resource;
use kube::api::Api;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::ahead::Ahead;
use super::wake::Wake;
use crate::namespaces::{NamespaceFilter, SKIP_ANNOTATION};
use crate::writer::Writer;

pub(super) type NamespaceMeta = PartialObjectMeta<Namespace>;
pub(super) type SecretMeta = PartialObjectMeta<Secret>;

type Events<K> = Result<watcher::Event<K>, watcher::Error>;

/// The events of a watch, each object trimmed before anything keeps it.
pub(super) fn trimmed<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> impl Stream<Item = Events<K>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, config).default_backoff().modify(trim)
}

/// A trimmed cache: the store, and the stream that fills it (the store stays empty and never
/// ready unless the stream is polled).
pub(super) fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Events<K>> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    (store, trimmed(api, config, trim).reflect(writer))
}

/// What the namespace rules read: labels only when a selector reads them (every namespace
/// carries at least `kubernetes.io/metadata.name`, a map allocation each), and of the
/// annotations only the opt-out.
pub(super) fn namespace_trim(filter: &NamespaceFilter) -> impl Fn(&mut NamespaceMeta) + use<> {
    let labels = filter.reads_labels();
    move |ns| {
        ns.types = None;
        let annotations = ns
            .metadata
            .annotations
            .take()
            .and_then(|mut a| a.remove_entry(SKIP_ANNOTATION))
            .map(|kv| BTreeMap::from([kv]));
        ns.metadata = ObjectMeta {
            name: ns.metadata.name.take(),
            labels: ns.metadata.labels.take().filter(|_| labels),
            annotations,
            deletion_timestamp: ns.metadata.deletion_timestamp.take(),
            resource_version: ns.metadata.resource_version.take(),
            ..Default::default()
        }
    }
}

/// What pruning and echo detection read.
pub(super) fn trim_secret(s: &mut SecretMeta) {
    s.types = None;
    s.metadata = identity(&s.metadata);
}

/// What a reconcile reads of a ServiceAccount: whether it references our secrets.
pub(super) fn trim_service_account(sa: &mut ServiceAccount) {
    *sa = ServiceAccount {
        metadata: identity(&sa.metadata),
        image_pull_secrets: sa.image_pull_secrets.take(),
        ..Default::default()
    }
}

fn identity(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

pub(super) fn to_namespace<K: Resource>(obj: K) -> Option<ObjectRef<NamespaceMeta>> {
    obj.meta().namespace.as_deref().map(ObjectRef::new)
}

/// The namespaces to reconcile from their watch: each one added or changed, but none of the
/// first list, which the first pass (every namespace, once credentials are there) covers;
/// reconciled for both, a namespace was written twice at start. A later re-list is passed on:
/// a namespace relabelled while the watch was away is in no other event.
pub(super) fn after_first_list(
    stream: impl Stream<Item = Events<NamespaceMeta>> + Send + 'static,
) -> impl Stream<Item = Result<NamespaceMeta, watcher::Error>> + Send + 'static {
    let mut listed_once = false;
    stream.filter_map(move |ev| {
        let out = match ev {
            Ok(watcher::Event::Apply(ns)) => Some(Ok(ns)),
            Ok(watcher::Event::InitApply(ns)) if listed_once => Some(Ok(ns)),
            Ok(watcher::Event::InitDone) => {
                listed_once = true;
                None
            }
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        };
        std::future::ready(out)
    })
}

/// The changes of a watched kind that call for a look at their namespace: not the initial
/// list (the start-up pass covers it), not the echo of our own write. A re-list after the
/// first (the watch lost track) calls for a pass: a deletion missed meanwhile is in no event.
/// `ahead`: the pass's read-ahead list, told of each change (the managed-secret watches).
pub(super) fn changes<K>(
    stream: impl Stream<Item = Events<K>> + Send + 'static,
    kind: &'static str,
    writer: Arc<Writer>,
    relisted: mpsc::UnboundedSender<Wake>,
    ahead: Option<Arc<Ahead>>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
{
    let mut listed_once = false;
    stream.filter_map(move |ev| {
        let writer = writer.clone();
        let ahead = ahead.clone();
        let out = match ev {
            Ok(watcher::Event::Apply(obj)) => {
                return Either::Left(async move {
                    let m = obj.meta();
                    if writer.is_echo(kind, m).await {
                        None
                    } else {
                        debug!(kind, namespace = ?m.namespace, name = ?m.name, "change seen");
                        if let (Some(a), Some(ns)) = (&ahead, &m.namespace) {
                            a.changed(ns);
                        }
                        Some(Ok(obj))
                    }
                });
            }
            Ok(watcher::Event::Delete(obj)) => {
                let m = obj.meta();
                if let (Some(ns), Some(name)) = (&m.namespace, &m.name) {
                    writer.forget(kind, ns, name);
                    if let Some(a) = &ahead {
                        a.changed(ns);
                    }
                }
                debug!(kind, namespace = ?m.namespace, name = ?m.name, "deletion seen");
                Some(Ok(obj))
            }
            Ok(watcher::Event::InitDone) => {
                if listed_once {
                    let _ = relisted.send(Wake::Relisted);
                    ahead.iter().for_each(|a| a.lost_track());
                } else {
                    ahead.iter().for_each(|a| a.watch_listed());
                }
                listed_once = true;
                None
            }
            Ok(_) => None,
            Err(error) => {
                warn!(kind, %error, "watch error; retrying");
                ahead.iter().for_each(|a| a.lost_track());
                None
            }
        };
        Either::Right(std::future::ready(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> NamespaceMeta {
        let mut ns = NamespaceMeta::default();
        ns.metadata.name = Some("team-a".into());
        ns.metadata.labels = Some(BTreeMap::from([
            ("kubernetes.io/metadata.name".into(), "team-a".into()),
            ("team".into(), "a".into()),
        ]));
        ns.metadata.annotations = Some(BTreeMap::from([
            (SKIP_ANNOTATION.into(), "true".into()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                "{}".into(),
            ),
        ]));
        ns.metadata.uid = Some("u-1".into());
        ns
    }

    fn filter(selector: Option<&str>) -> NamespaceFilter {
        NamespaceFilter::new(&["team-*".into()], &[], selector).unwrap()
    }

    #[test]
    fn a_namespace_keeps_what_the_filter_reads_and_decides_as_before() {
        for selector in [None, Some("team=a"), Some("team=b")] {
            let f = filter(selector);
            let mut ns = listed();
            namespace_trim(&f)(&mut ns);
            assert_eq!(
                f.decide_namespace(&ns),
                f.decide_namespace(&listed()),
                "{selector:?}"
            );
            assert_eq!(
                ns.metadata.labels.is_some(),
                selector.is_some(),
                "{selector:?}"
            );
            let kept: Vec<_> = ns
                .metadata
                .annotations
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(kept, [SKIP_ANNOTATION]);
            assert!(ns.metadata.uid.is_none());
        }
    }
}
