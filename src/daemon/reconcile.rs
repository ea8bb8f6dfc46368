//! The reconciler: turns triggers into writes. A full cycle resolves every target from the
//! watch cache and writes from the cached credentials; a namespace trigger writes (or, with
//! pruning, cleans) one namespace. Failed writes are retried on a backoff of their own. It
//! never fetches a token: the source timers do that. Secrets kept because they are still
//! fresh (written by an earlier process, or before the last token refresh) are looked at
//! again when their own renewal time comes, and then get the cached credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Shared, Trigger};
use crate::cycle::{self, CycleReport};
use crate::metrics::CycleTimer;
use crate::namespaces::Decision;
use crate::writer::{MANAGED_BY, SaOutcome, SecretOutcome, managed_selector};

/// Coalesces triggers and reconciles; finishes the batch in hand when cancelled.
pub(super) async fn reconcile_loop(
    shared: &Shared,
    mut rx: mpsc::UnboundedReceiver<Trigger>,
    store: Store<kube::core::PartialObjectMeta<Namespace>>,
    cancel: CancellationToken,
) {
    // Writes that failed (API server away, 429, …) are retried with a full cycle on a
    // backoff of their own, independent of the token schedule.
    let mut retry: Option<(tokio::time::Instant, u32)> = None;
    // The earliest renewal time of a kept secret.
    let mut due: Option<DateTime<Utc>> = None;
    loop {
        let retry_at = retry.map(|(at, _)| at);
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            t = rx.recv() => match t { Some(t) => t, None => return },
            _ = sleep_until_opt(retry_at) => Trigger::All,
            _ = sleep_until_opt(due.map(instant_of)) => Trigger::All,
        };
        // Let a burst (a token refresh and its own watch echoes) arrive, then take it whole.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut all = first == Trigger::All;
        let mut namespaces = BTreeSet::new();
        if let Trigger::Namespace(n) = first {
            namespaces.insert(n);
        }
        while let Ok(t) = rx.try_recv() {
            match t {
                Trigger::All => all = true,
                Trigger::Namespace(n) => {
                    namespaces.insert(n);
                }
            }
        }
        let clean = if all {
            let (clean, next) = full_cycle(shared, &store).await;
            due = next;
            clean
        } else {
            let (clean, next) = futures::stream::iter(namespaces)
                .map(|ns| one_namespace(shared, &store, ns))
                .buffer_unordered(shared.config.concurrency)
                .fold((true, due), |(acc, d), (ok, n)| async move {
                    (acc && ok, d.into_iter().chain(n).min())
                })
                .await;
            due = next;
            clean
        };
        retry = if clean {
            None
        } else {
            let failures = retry.map_or(0, |(_, n)| n + 1);
            let wait = crate::schedule::backoff(
                &shared.config.daemon.policy,
                failures + 1,
                fastrand::f64(),
            );
            warn!(
                retry_in_ms = wait.as_millis() as u64,
                "some writes failed; retrying"
            );
            Some((tokio::time::Instant::now() + wait, failures))
        };
    }
}

/// The monotonic instant of a wall-clock time, at least a second ahead: a renewal time that
/// has passed is served by the next full cycle, never by a hot loop.
fn instant_of(at: DateTime<Utc>) -> tokio::time::Instant {
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::Instant::now() + wait.max(Duration::from_secs(1))
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Failures a later attempt may fix (not a failed source: its own timer retries it).
fn needs_retry(report: &CycleReport) -> bool {
    report.resolve_error.is_some()
        || report.namespaces.iter().any(|ns| {
            ns.secrets.iter().any(|(_, o)| {
                matches!(o, SecretOutcome::Failed(e) if !matches!(e, crate::writer::WriteError::SourceFailed { .. } | crate::writer::WriteError::Immutable { .. }))
            }) || ns.service_accounts.iter().any(|(_, o)| matches!(o, SaOutcome::Failed(_)))
        })
}

/// Returns false when something failed that a retry may fix, and the next renewal time.
async fn full_cycle(
    shared: &Shared,
    store: &Store<kube::core::PartialObjectMeta<Namespace>>,
) -> (bool, Option<DateTime<Utc>>) {
    let _timer = CycleTimer::start(&shared.metrics.cycle_duration);
    let creds = shared.snapshot();
    let plan = cycle::plan(
        &shared.config,
        |n| creds.get(n).map(|c| c.as_ref()),
        |_| true,
    );
    let mut report = CycleReport::default();
    // The namespaces come from the watch cache once it holds a complete list: no list request
    // per cycle. Without it (no watch rights, or the API server away) they are listed.
    let ready = tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready()).await;
    let resolution = match ready {
        Ok(Ok(())) => Ok(crate::namespaces::classify(
            &shared.config.namespaces,
            &store.state(),
        )),
        _ => crate::namespaces::resolve(&shared.client, &shared.config.namespaces).await,
    };
    let names: Vec<&str> = plan.desired.iter().map(|d| d.name.as_str()).collect();
    let live = if names.is_empty() {
        None
    } else {
        shared.writer.list_live(&names).await
    };
    cycle::write_resolved(
        &shared.writer,
        &shared.config,
        &plan,
        resolution,
        live,
        &mut report,
    )
    .await;
    shared
        .metrics
        .target_namespaces
        .set(report.namespaces.len() as i64);
    record(shared, &report).await;
    report.log_summary(shared.config.write_mode, false);
    if shared.config.daemon.prune && report.resolve_error.is_none() {
        let targets: BTreeSet<&str> = report
            .namespaces
            .iter()
            .map(|n| n.namespace.as_str())
            .collect();
        prune(shared, |ns, name| {
            !targets.contains(ns) || !is_configured(shared, name)
        })
        .await;
    }
    let all_sources = shared
        .providers
        .iter()
        .all(|p| creds.contains_key(p.name()));
    if all_sources && report.resolve_error.is_none() {
        shared.cycle_done.store(true, Ordering::Relaxed);
    }
    (!needs_retry(&report), report.next_due())
}

async fn one_namespace(
    shared: &Shared,
    store: &Store<kube::core::PartialObjectMeta<Namespace>>,
    ns: String,
) -> (bool, Option<DateTime<Utc>>) {
    let decision = store.get(&ObjectRef::new(&ns)).map(|meta| {
        let m = &meta.metadata;
        let empty = BTreeMap::new();
        shared.config.namespaces.decide(
            &ns,
            m.labels.as_ref().unwrap_or(&empty),
            m.annotations.as_ref().unwrap_or(&empty),
            m.deletion_timestamp.is_some(),
        )
    });
    match decision {
        Some(Decision::Target) => {
            let creds = shared.snapshot();
            let plan = cycle::plan(
                &shared.config,
                |n| creds.get(n).map(|c| c.as_ref()),
                |_| true,
            );
            if plan.desired.is_empty() {
                return (true, None); // nothing fetched yet: the start-up cycle will come
            }
            let r = cycle::write_namespace(&shared.writer, &shared.config, ns, &plan, None).await;
            let report = CycleReport {
                namespaces: vec![r],
                ..Default::default()
            };
            record(shared, &report).await;
            report.log_outcomes(shared.config.write_mode, false);
            (!needs_retry(&report), report.next_due())
        }
        Some(_) if shared.config.daemon.prune => {
            prune(shared, |n, _| n == ns).await;
            (true, None)
        }
        _ => (true, None),
    }
}

fn is_configured(shared: &Shared, secret: &str) -> bool {
    shared.config.secrets.iter().any(|s| s.name == secret)
}

/// Counts outcomes and raises Events for the failures a cluster user should see.
async fn record(shared: &Shared, report: &CycleReport) {
    for ns in &report.namespaces {
        for (secret, o) in &ns.secrets {
            let result = match o {
                SecretOutcome::Created => "created",
                SecretOutcome::Updated(_) => "updated",
                SecretOutcome::Unchanged => "unchanged",
                SecretOutcome::Conflict => "conflict",
                SecretOutcome::Failed(_) => "failed",
            };
            shared.metrics.write(result);
            let note = match o {
                SecretOutcome::Failed(e) => Some(("WriteFailed", e.to_string())),
                SecretOutcome::Conflict => Some((
                    "Conflict",
                    format!(
                        "secret {secret} exists and is not managed by {MANAGED_BY}; left untouched (set adopt: true to take it over)"
                    ),
                )),
                _ => None,
            };
            if let Some((reason, note)) = note {
                let reference = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(secret.clone()),
                    namespace: Some(ns.namespace.clone()),
                    ..Default::default()
                };
                shared
                    .event(EventType::Warning, reason, note, reference)
                    .await;
            }
        }
        for (_, o) in &ns.service_accounts {
            if let SaOutcome::Failed(_) = o {
                shared.metrics.write("serviceaccount_failed");
            }
        }
    }
}

/// Deletes managed secrets for which `doomed(namespace, name)` holds, and removes our
/// references to them from the configured ServiceAccounts. Only objects carrying our label
/// are listed, and each delete is preconditioned on the uid we saw.
async fn prune(shared: &Shared, doomed: impl Fn(&str, &str) -> bool) {
    let api: Api<Secret> = Api::all(shared.client.clone());
    let lp = ListParams::default().labels(&managed_selector(&shared.config.instance));
    let list = match api.list_metadata(&lp).await {
        Ok(l) => l.items,
        Err(error) => {
            warn!(%error, "prune: cannot list managed secrets");
            return;
        }
    };
    let victims: Vec<(String, String, Option<String>)> = list
        .into_iter()
        .filter_map(|s| Some((s.metadata.namespace?, s.metadata.name?, s.metadata.uid)))
        .filter(|(ns, name, _)| doomed(ns, name))
        .collect();
    futures::stream::iter(victims)
        .for_each_concurrent(shared.config.concurrency, |(ns, name, uid)| async move {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match Api::<Secret>::namespaced(shared.client.clone(), &ns)
                .delete(&name, &dp)
                .await
            {
                Ok(_) => {
                    info!(namespace = %ns, secret = %name, "pruned");
                    shared.metrics.write("pruned");
                    for sa in &shared.config.service_accounts {
                        shared.writer.remove_reference(&ns, sa, &name).await;
                    }
                }
                Err(error) => warn!(namespace = %ns, secret = %name, %error, "prune failed"),
            }
        })
        .await;
}
