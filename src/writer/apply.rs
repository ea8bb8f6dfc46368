//! The write itself: server-side apply under our field manager, then a cleanup of what other
//! writers left on the secret.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};

use super::{DesiredSecret, LAST_APPLIED_ANNOTATION, WriteError, Writer, decide};
use crate::config::WriteMode;

impl Writer {
    /// Server-side applies the secret, then removes what other writers left on it that we
    /// would not write: kubectl's last-applied copy (it holds the old password), our own
    /// annotations of an older configuration, and other managers' claims on the fields.
    pub(super) async fn apply(
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
