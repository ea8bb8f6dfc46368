//! Kubernetes Events for what a cluster user should see without reading our log: a secret we
//! could not write or would not touch, a source that failed. Recorded on the object concerned
//! (the Secret in the tenant's namespace, our own Pod), so `kubectl describe` and `kubectl get
//! events -n <namespace>` show them to the namespace's owners. Both the daemon and `--once`
//! record them; a failure to record is a warning in the log, never a failed run.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use crate::cycle::NamespaceReport;
use crate::writer::{MANAGED_BY, SecretOutcome};

pub struct Events {
    recorder: Option<Recorder>,
}

impl Events {
    /// Records nothing unless `enabled` (`--events`).
    pub fn new(client: &kube::Client, enabled: bool) -> Self {
        Self {
            recorder: enabled.then(|| {
                Recorder::new(
                    client.clone(),
                    Reporter {
                        controller: MANAGED_BY.into(),
                        instance: crate::input::pod_name(),
                    },
                )
            }),
        }
    }

    pub async fn warn(&self, reason: &str, note: String, reference: ObjectReference) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Refresh".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&ev, &reference).await {
            warn!(%error, reason, "cannot record event");
        }
    }

    /// A Warning on each secret of `ns` that failed or that we left alone (another owner).
    pub async fn for_namespace(&self, ns: &NamespaceReport) {
        for (secret, o) in &ns.secrets {
            let (reason, note) = match o {
                SecretOutcome::Failed(e) => ("WriteFailed", e.to_string()),
                SecretOutcome::Conflict => {
                    ("Conflict", crate::writer::decide::conflict_note(secret))
                }
                _ => continue,
            };
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(secret.clone()),
                namespace: Some(ns.namespace.clone()),
                ..Default::default()
            };
            self.warn(reason, note, reference).await;
        }
    }
}
