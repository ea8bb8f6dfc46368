//! `--prune`: deleting the managed secrets that no target needs any more. Only objects that
//! carry our instance label are touched, and each delete is preconditioned on the uid we saw,
//! so a secret re-created meanwhile by someone else survives.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use super::controller::Context;
use crate::namespaces::Decision;
use crate::writer::managed_selector;

/// A namespace that stopped being a target: its managed secrets, known from the watch of
/// managed secrets, so a relabel costs no list.
pub(super) async fn namespace(ctx: &Context, namespace: &str) {
    let victims: Vec<(String, Option<String>)> = ctx
        .held
        .iter()
        .filter_map(|(name, store)| {
            let s = store.get(&ObjectRef::new(name).within(namespace))?;
            Some((name.clone(), s.metadata.uid.clone()))
        })
        .collect();
    for (name, uid) in victims {
        delete(ctx, namespace, &name, uid).await;
    }
}

/// Once, after the first pass: managed secrets in namespaces that are not targets (one
/// relabelled while no refresher ran), from the watch of each configured name, and every
/// managed secret of the names given in `--prune-secret-names` (no longer configured), read
/// by name. No list of secrets without a name: RBAC can restrict this identity to names.
pub(super) async fn sweep(ctx: &Context) {
    let shared = &ctx.shared;
    let not_target = |ns: &str| {
        ctx.namespaces
            .get(&ObjectRef::new(ns))
            .is_some_and(|meta| ctx.decide_for(&meta) != Decision::Target)
    };
    let mut victims: Vec<(String, String, Option<String>)> = Vec::new();
    for (name, store) in &ctx.held {
        let listed = tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await;
        if !matches!(listed, Ok(Ok(()))) {
            warn!(secret = %name, "prune: the watch of managed secrets has not listed; sweep skipped");
            continue;
        }
        for s in store.state() {
            let Some(ns) = s.metadata.namespace.clone() else {
                continue;
            };
            if not_target(&ns) {
                victims.push((ns, name.clone(), s.metadata.uid.clone()));
            }
        }
    }
    let api: Api<Secret> = Api::all(shared.client.clone());
    let labels = managed_selector(&shared.config.instance);
    for name in &shared.config.daemon.prune_also {
        if shared.config.secrets.iter().any(|s| &s.name == name) {
            continue;
        }
        let lp = ListParams::default()
            .fields(&format!("metadata.name={name}"))
            .labels(&labels);
        match api.list_metadata(&lp).await {
            Ok(l) => {
                victims.extend(l.items.into_iter().filter_map(|s| {
                    Some((s.metadata.namespace?, s.metadata.name?, s.metadata.uid))
                }))
            }
            Err(error) => warn!(secret = %name, %error, "prune: cannot list secrets of that name"),
        }
    }
    futures::stream::iter(victims)
        .for_each_concurrent(shared.config.concurrency, |(ns, name, uid)| async move {
            delete(ctx, &ns, &name, uid).await;
        })
        .await;
}

async fn delete(ctx: &Context, namespace: &str, name: &str, uid: Option<String>) {
    let shared = &ctx.shared;
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(shared.client.clone(), namespace)
        .delete(name, &dp)
        .await
    {
        Ok(_) => {
            info!(namespace = %namespace, secret = %name, "pruned");
            shared.metrics.write("pruned");
            for sa in &shared.config.service_accounts {
                shared.writer.remove_reference(namespace, sa, name).await;
            }
        }
        Err(error) => warn!(namespace = %namespace, secret = %name, %error, "prune failed"),
    }
}
