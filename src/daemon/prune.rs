//! `--prune`: deleting the managed secrets that no target needs any more. Only objects that
//! carry our instance label are touched, and each delete is preconditioned on the uid we saw,
//! so a secret re-created meanwhile by someone else survives.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};

use super::watch::{NamespaceMeta, SecretMeta};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::namespaces::Decision;
use crate::writer::{Writer, managed_selector};

/// What pruning reads and writes through: the caches of namespaces and of the managed
/// secrets that exist (by configured name), the client it deletes with, and the writer whose
/// ServiceAccount references it takes back.
pub(super) struct Prune<'a> {
    pub config: &'a Config,
    pub client: &'a kube::Client,
    pub writer: &'a Writer,
    pub metrics: &'a Metrics,
    pub namespaces: &'a Store<NamespaceMeta>,
    pub managed: &'a [(String, Store<SecretMeta>)],
}

impl Prune<'_> {
    /// A namespace that stopped being a target: its managed secrets, known from the watch of
    /// managed secrets, so a relabel costs no list.
    pub async fn namespace(&self, namespace: &str) {
        let victims: Vec<(String, Option<String>)> = self
            .managed
            .iter()
            .filter_map(|(name, store)| {
                let s = store.get(&ObjectRef::new(name).within(namespace))?;
                Some((name.clone(), s.metadata.uid.clone()))
            })
            .collect();
        for (name, uid) in victims {
            self.delete(namespace, &name, uid).await;
        }
    }

    /// Once, after the first pass: managed secrets in namespaces that are not targets (one
    /// relabelled while no refresher ran), from the watch of each configured name, and every
    /// managed secret of the names given in `--prune-secret-names` (no longer configured),
    /// read by name. No list of secrets without a name: RBAC can restrict this identity to
    /// names.
    pub async fn sweep(&self) {
        let config = self.config;
        let not_target = |ns: &str| {
            self.namespaces
                .get(&ObjectRef::new(ns))
                .is_some_and(|meta| config.namespaces.decide_namespace(&meta) != Decision::Target)
        };
        let mut victims: Vec<(String, String, Option<String>)> = Vec::new();
        for (name, store) in self.managed {
            let listed =
                tokio::time::timeout(Duration::from_secs(10), store.wait_until_ready()).await;
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
        let api: Api<Secret> = Api::all(self.client.clone());
        let labels = managed_selector(&config.instance);
        for name in &config.daemon.prune_also {
            if config.secrets.iter().any(|s| &s.name == name) {
                continue;
            }
            let lp = ListParams::default()
                .fields(&format!("metadata.name={name}"))
                .labels(&labels);
            match api.list_metadata(&lp).await {
                Ok(l) => victims.extend(l.items.into_iter().filter_map(|s| {
                    Some((s.metadata.namespace?, s.metadata.name?, s.metadata.uid))
                })),
                Err(error) => {
                    warn!(secret = %name, %error, "prune: cannot list secrets of that name")
                }
            }
        }
        futures::stream::iter(victims)
            .for_each_concurrent(config.concurrency, |(ns, name, uid)| async move {
                self.delete(&ns, &name, uid).await;
            })
            .await;
    }

    async fn delete(&self, namespace: &str, name: &str, uid: Option<String>) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<Secret>::namespaced(self.client.clone(), namespace)
            .delete(name, &dp)
            .await
        {
            Ok(_) => {
                info!(namespace = %namespace, secret = %name, "pruned");
                self.metrics.write("pruned");
                for sa in &self.config.service_accounts {
                    self.writer.remove_reference(namespace, sa, name).await;
                }
            }
            Err(error) => warn!(namespace = %namespace, secret = %name, %error, "prune failed"),
        }
    }
}
