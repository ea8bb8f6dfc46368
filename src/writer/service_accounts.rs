//! ServiceAccount references: `imagePullSecrets` entries for the secrets we manage.
//!
//! That list is atomic on ServiceAccount (server-side apply would replace it whole), so every
//! change is a read, a modification that keeps every other entry, and a merge patch guarded
//! by the resourceVersion we read, retried on conflict. A missing ServiceAccount is reported,
//! never created.

use k8s_openapi::api::core::v1::{LocalObjectReference, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{Instrument, debug, info_span};

use super::Writer;
use crate::config::WriteMode;

#[derive(Debug, PartialEq, Eq)]
pub enum SaOutcome {
    Patched(Vec<String>),
    Unchanged,
    Missing,
    Failed(String),
}

impl Writer {
    /// Adds references to `secrets` to a ServiceAccount's `imagePullSecrets`, keeping every
    /// other entry.
    pub async fn reference_from_service_account(
        &self,
        namespace: &str,
        sa: &str,
        secrets: &[&str],
    ) -> SaOutcome {
        let span = info_span!("service_account", namespace, service_account = sa);
        let dry = matches!(self.mode, WriteMode::DryRunClient | WriteMode::Diff);
        self.modify_references(namespace, sa, dry, |refs| {
            let missing: Vec<String> = secrets
                .iter()
                .filter(|s| !refs.iter().any(|r| r.name == **s))
                .map(|s| s.to_string())
                .collect();
            refs.extend(
                missing
                    .iter()
                    .map(|s| LocalObjectReference { name: s.clone() }),
            );
            missing
        })
        .instrument(span)
        .await
    }

    /// Removes our reference to `secret` from a ServiceAccount (pruning), keeping every other
    /// entry.
    pub async fn remove_reference(&self, namespace: &str, sa: &str, secret: &str) {
        let o = self
            .modify_references(namespace, sa, false, |refs| {
                let before = refs.len();
                refs.retain(|r| r.name != secret);
                if refs.len() < before {
                    vec![secret.to_string()]
                } else {
                    vec![]
                }
            })
            .await;
        if let SaOutcome::Failed(error) = o {
            tracing::warn!(namespace, service_account = sa, %error, "cannot remove pruned reference");
        }
    }

    /// Reads the ServiceAccount, lets `change` edit its `imagePullSecrets` (returning what it
    /// changed), and patches the result guarded by the resourceVersion read; a conflict is a
    /// fresh read and another try. `dry`: report the change without sending it.
    async fn modify_references(
        &self,
        namespace: &str,
        sa: &str,
        dry: bool,
        change: impl Fn(&mut Vec<LocalObjectReference>) -> Vec<String>,
    ) -> SaOutcome {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        for _attempt in 0..5 {
            let cur = match api.get_opt(sa).await {
                Ok(Some(cur)) => cur,
                Ok(None) => return SaOutcome::Missing,
                Err(e) => return SaOutcome::Failed(e.to_string()),
            };
            let mut refs = cur.image_pull_secrets.clone().unwrap_or_default();
            let changed = change(&mut refs);
            if changed.is_empty() {
                self.remember("serviceaccount", &cur.metadata);
                return SaOutcome::Unchanged;
            }
            if dry {
                return SaOutcome::Patched(changed);
            }
            let patch = json!({
                "metadata": { "resourceVersion": cur.metadata.resource_version },
                "imagePullSecrets": refs,
            });
            let pp = PatchParams {
                dry_run: self.mode == WriteMode::DryRunServer,
                field_manager: Some(self.field_manager.clone()),
                ..Default::default()
            };
            let _writing = self.echoes.writing("serviceaccount", namespace, sa);
            match api.patch(sa, &pp, &Patch::Merge(&patch)).await {
                Ok(written) => {
                    if !pp.dry_run {
                        self.remember("serviceaccount", &written.metadata);
                    }
                    return SaOutcome::Patched(changed);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    debug!("serviceaccount changed under us, retrying");
                }
                Err(e) => return SaOutcome::Failed(e.to_string()),
            }
        }
        SaOutcome::Failed("kept conflicting with concurrent updates (409) after 5 attempts".into())
    }
}
