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
                self.metrics.pruned();
                for sa in &self.config.service_accounts {
                    self.writer.remove_reference(namespace, sa, name).await;
                }
            }
            Err(error) => warn!(namespace = %namespace, secret = %name, %error, "prune failed"),
        }
    }
}

/// Pruning against a fake API server, given only the caches, client and writer it uses.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{self, listed, namespace, secret_meta};
    use super::*;
    use crate::cycle::tests::config;

    const YAML: &str = "registries:\n  - name: quay\n    static: { server: quay.io, username: bot, passwordFile: {pw} }\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: { include: [\"team-*\"] }\n";

    #[tokio::test]
    async fn the_sweep_deletes_ours_outside_the_targets_and_retired_names_listed_by_name() {
        let yaml = format!("{YAML}serviceAccounts: [builder]\n");
        let config = config(
            &yaml,
            &[
                "--prune",
                "--prune-secret-names=old,regcred",
                "--instance=blue",
            ],
        );
        let (client, log) = testing::server(|s| match (s.method.as_str(), s.path.as_str()) {
            ("GET", "/api/v1/secrets") => (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": {}, "items": [{"apiVersion": "meta.k8s.io/v1",
                       "kind": "PartialObjectMetadata",
                       "metadata": {"name": "old", "namespace": "team-c", "uid": "u-old"}}]}),
            ),
            // The ServiceAccount whose reference a pruned secret takes with it.
            ("GET", _) => testing::status(404, "NotFound"),
            _ => (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
        });
        let writer = Writer::for_config(client.clone(), &config);
        let metrics = Metrics::default();
        let namespaces = listed(vec![namespace("team-a", &[]), namespace("other", &[])]);
        let managed = vec![(
            "regcred".to_string(),
            listed(vec![
                // A target keeps its secret; a namespace we do not know of is left alone.
                secret_meta("team-a", "regcred", "u-a"),
                secret_meta("other", "regcred", "u-other"),
                secret_meta("unknown", "regcred", "u-unknown"),
            ]),
        )];
        let prune = Prune {
            config: &config,
            client: &client,
            writer: &writer,
            metrics: &metrics,
            namespaces: &namespaces,
            managed: &managed,
        };
        prune.sweep().await;
        let seen = testing::requests(&log);
        let list = &seen[0];
        assert_eq!(list.line(), "GET /api/v1/secrets", "{seen:?}");
        assert_eq!(list.param("fieldSelector"), Some("metadata.name=old"));
        assert_eq!(
            list.param("labelSelector"),
            Some(
                "app.kubernetes.io/managed-by=regcred-refresher,regcred-refresher.io/instance=blue"
            )
        );
        // A still-configured name in --prune-secret-names is not listed.
        assert_eq!(
            seen.iter().filter(|s| s.path == "/api/v1/secrets").count(),
            1
        );
        let mut deletes: Vec<(String, String)> = seen
            .iter()
            .filter(|s| s.method == "DELETE")
            .map(|s| {
                (
                    s.path.clone(),
                    s.body["preconditions"]["uid"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        deletes.sort();
        assert_eq!(
            deletes,
            [
                (
                    "/api/v1/namespaces/other/secrets/regcred".to_string(),
                    "u-other".to_string()
                ),
                (
                    "/api/v1/namespaces/team-c/secrets/old".to_string(),
                    "u-old".to_string()
                ),
            ]
        );
        // Each pruned secret's reference is taken back from the configured ServiceAccount.
        let mut sa_reads: Vec<String> = seen
            .iter()
            .filter(|s| s.path.contains("/serviceaccounts/"))
            .map(|s| s.line())
            .collect();
        sa_reads.sort();
        assert_eq!(
            sa_reads,
            [
                "GET /api/v1/namespaces/other/serviceaccounts/builder",
                "GET /api/v1/namespaces/team-c/serviceaccounts/builder"
            ]
        );
        let pruned = crate::metrics::ResultLabel {
            result: "pruned".into(),
        };
        assert_eq!(metrics.writes.get_or_create(&pruned).get(), 2);
    }

    #[tokio::test]
    async fn a_failed_delete_is_not_counted_and_stops_nothing_else() {
        let config = config(YAML, &["--prune"]);
        let (client, log) = testing::server(|s| match s.path.as_str() {
            "/api/v1/namespaces/gone-1/secrets/regcred" => testing::status(409, "Conflict"),
            _ => (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
        });
        let writer = Writer::for_config(client.clone(), &config);
        let metrics = Metrics::default();
        let namespaces = listed(vec![namespace("gone-1", &[]), namespace("gone-2", &[])]);
        let managed = vec![(
            "regcred".to_string(),
            listed(vec![
                secret_meta("gone-1", "regcred", "u-1"),
                secret_meta("gone-2", "regcred", "u-2"),
            ]),
        )];
        let prune = Prune {
            config: &config,
            client: &client,
            writer: &writer,
            metrics: &metrics,
            namespaces: &namespaces,
            managed: &managed,
        };
        prune.sweep().await;
        assert_eq!(testing::requests(&log).len(), 2);
        let pruned = crate::metrics::ResultLabel {
            result: "pruned".into(),
        };
        assert_eq!(metrics.writes.get_or_create(&pruned).get(), 1);
    }
}
