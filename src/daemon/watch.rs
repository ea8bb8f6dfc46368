//! Watches that turn cluster changes into reconcile triggers: a namespace that starts to
//! match, a managed secret deleted or edited, a configured ServiceAccount (re)created. They
//! carry metadata only, and recover by themselves (backoff, re-list) when the API server goes
//! away and comes back.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Api;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Trigger;
use crate::writer::managed_selector;

/// Namespaces, cached for the reconciler's per-namespace decisions. After every (re)list the
/// whole set is reconciled once; afterwards each change triggers its own namespace.
pub fn namespaces(
    client: kube::Client,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) -> (
    Store<kube::core::PartialObjectMeta<Namespace>>,
    impl Future<Output = ()>,
) {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        // managedFields are the bulk of each object and never read here.
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client),
            watcher::Config::default(),
        )
        .modify(|ns| ns.metadata.managed_fields = None),
    )
    .default_backoff();
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        let mut listed_once = false;
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Ok(watcher::Event::Apply(ns))) | Some(Ok(watcher::Event::Delete(ns))) => {
                    if let Some(name) = ns.metadata.name {
                        let _ = tx.send(Trigger::Namespace(name));
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    // The first list coincides with the start-up cycle; a later one follows an
                    // outage, after which everything is checked again.
                    if listed_once {
                        let _ = tx.send(Trigger::All);
                    }
                    listed_once = true;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => warn!(%error, "namespace watch error; retrying"),
            }
        }
    };
    (reader, task)
}

/// Managed secrets, so a deleted or edited one is restored from the cached credentials.
/// Our own writes come back here too; their echo is skipped by resourceVersion.
pub async fn secrets(
    client: kube::Client,
    instance: String,
    names: BTreeSet<String>,
    echo: impl Fn(&ObjectMeta) -> bool,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) {
    let labels = managed_selector(&instance);
    named::<Secret>(client, names, Some(&labels), "secret", echo, tx, cancel).await;
}

/// ServiceAccounts with a configured name, so a new one gets its reference.
pub async fn service_accounts(
    client: kube::Client,
    names: BTreeSet<String>,
    echo: impl Fn(&ObjectMeta) -> bool,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) {
    named::<ServiceAccount>(client, names, None, "serviceaccount", echo, tx, cancel).await;
}

/// One metadata watch per name, by field selector, across all namespaces: RBAC can then limit
/// list/watch to those names (`resourceNames`) instead of every object of the kind.
async fn named<K>(
    client: kube::Client,
    names: BTreeSet<String>,
    labels: Option<&str>,
    kind: &'static str,
    echo: impl Fn(&ObjectMeta) -> bool,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let streams = names.iter().map(|name| {
        let mut cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        if let Some(labels) = labels {
            cfg = cfg.labels(labels);
        }
        watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), cfg)
            .default_backoff()
            .boxed()
    });
    let stream = futures::stream::select_all(streams);
    forward(
        stream,
        kind,
        move |meta, deleted| pick(&names, meta, deleted, &echo),
        tx,
        cancel,
    )
    .await;
}

/// The namespace to reconcile for a change, unless it is not ours to care about or it is the
/// echo of our own write (same resourceVersion as the object we just wrote).
fn pick(
    names: &BTreeSet<String>,
    meta: &ObjectMeta,
    deleted: bool,
    echo: &impl Fn(&ObjectMeta) -> bool,
) -> Option<String> {
    let (ns, name) = (meta.namespace.as_deref()?, meta.name.as_deref()?);
    if !names.contains(name) || (!deleted && echo(meta)) {
        return None;
    }
    Some(ns.to_string())
}

async fn forward<K: kube::Resource>(
    stream: impl futures::Stream<
        Item = Result<watcher::Event<kube::core::PartialObjectMeta<K>>, watcher::Error>,
    >,
    kind: &'static str,
    pick: impl Fn(&ObjectMeta, bool) -> Option<String>,
    tx: mpsc::UnboundedSender<Trigger>,
    cancel: CancellationToken,
) {
    let mut stream = std::pin::pin!(stream);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            // Live changes only: the initial list is covered by the start-up cycle.
            Some(Ok(watcher::Event::Apply(obj))) => {
                if let Some(ns) = pick(&obj.metadata, false) {
                    debug!(kind, namespace = %ns, name = ?obj.metadata.name, "change seen");
                    let _ = tx.send(Trigger::Namespace(ns));
                }
            }
            Some(Ok(watcher::Event::Delete(obj))) => {
                if let Some(ns) = pick(&obj.metadata, true) {
                    debug!(kind, namespace = %ns, name = ?obj.metadata.name, "deletion seen");
                    let _ = tx.send(Trigger::Namespace(ns));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => warn!(kind, %error, "watch error; retrying"),
        }
    }
}
