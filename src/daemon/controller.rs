//! The daemon's reconciler: a kube-runtime `Controller` keyed by namespace.
//!
//! Namespaces are watched as metadata only; a change to a managed secret or a configured
//! ServiceAccount is mapped to its namespace; fresh credentials reconcile every namespace (a
//! [`pass`](super::pass)). The controller de-duplicates the work per namespace, backs off per
//! namespace on a failure a retry can fix, and finishes in-flight reconciles on shutdown. It
//! never fetches a token: the source timers do that.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::Either;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::Api;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::DaemonState;
use super::pass::{Finished, Passes};
use crate::credentials::Credentials;
use crate::cycle::{self, CycleReport, NamespaceReport};
use crate::namespaces::Decision;
use crate::writer::{SaOutcome, SecretOutcome, managed_selector};

pub(super) type NamespaceMeta = PartialObjectMeta<Namespace>;
pub(super) type SecretMeta = PartialObjectMeta<Secret>;

/// A plan and the credentials it was rendered from.
type RenderedPlan = (Vec<Arc<Credentials>>, Arc<cycle::Plan>);

/// What every reconcile shares.
pub(super) struct Context {
    pub shared: Arc<DaemonState>,
    pub namespaces: Store<NamespaceMeta>,
    /// The managed secrets that exist, by configured name: what pruning deletes, without a
    /// list per namespace.
    pub held: Vec<(String, Store<SecretMeta>)>,
    /// The configured ServiceAccounts that exist, reduced to their `imagePullSecrets`: a
    /// reconcile reads one only when it lacks a reference.
    accounts: Vec<(String, Store<ServiceAccount>)>,
    passes: Passes,
    /// The plan with the credentials it was rendered from (held, so compared by identity):
    /// every reconcile of a pass shares one render instead of making its own.
    plan: Mutex<Option<RenderedPlan>>,
    /// Consecutive failed reconciles by namespace, for the backoff; cleared on success.
    failures: Mutex<HashMap<String, u32>>,
    swept: AtomicBool,
    /// Reconciles under way: on shutdown the controller is driven until they are done, since
    /// dropping it would abort them mid-write.
    in_flight: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ReconcileError {
    #[error("namespace {namespace}: {failed} write(s) failed; a retry may fix them")]
    WritesFailed { namespace: String, failed: usize },
}

/// What calls for a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// A source has stored fresh credentials.
    Refreshed,
    /// A watch lost track and listed again: a deletion missed meanwhile is in no event.
    Relisted,
}

/// Runs the controller until `cancel`; `wake` says when a pass is due.
pub(super) async fn run(
    shared: Arc<DaemonState>,
    mut wake: mpsc::UnboundedReceiver<Wake>,
    relisted: mpsc::UnboundedSender<Wake>,
    cancel: CancellationToken,
) {
    let client = shared.watch_client.clone();
    let (ns_reader, ns_writer) = reflector::store();
    // Only pruning reads which managed secrets exist; without it their watch keeps nothing
    // (at 10,000 namespaces, some 6 MiB of heap).
    let mut held = Vec::new();
    let mut held_writers = Vec::new();
    for s in &shared.config.secrets {
        if shared.config.daemon.prune {
            let (r, w) = reflector::store();
            held.push((s.name.clone(), r));
            held_writers.push((s.name.clone(), Some(w)));
        } else {
            held_writers.push((s.name.clone(), None));
        }
    }
    let mut accounts = Vec::new();
    let mut account_writers = Vec::new();
    for name in &shared.config.service_accounts {
        let (r, w) = reflector::store();
        accounts.push((name.clone(), r));
        account_writers.push((name.clone(), w));
    }
    let ctx = Arc::new(Context {
        shared: shared.clone(),
        namespaces: ns_reader.clone(),
        held,
        accounts,
        passes: Passes::default(),
        plan: Mutex::default(),
        failures: Mutex::default(),
        swept: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
    });

    let namespaces = {
        let ctx = ctx.clone();
        let events = watcher(
            Api::<NamespaceMeta>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        // Only what the namespace rules read stays in memory (managedFields were the bulk).
        .modify(|ns| {
            ns.types = None;
            ns.metadata = ObjectMeta {
                name: ns.metadata.name.take(),
                labels: ns.metadata.labels.take(),
                annotations: ns.metadata.annotations.take(),
                deletion_timestamp: ns.metadata.deletion_timestamp.take(),
                resource_version: ns.metadata.resource_version.take(),
                ..Default::default()
            }
        })
        .reflect(ns_writer)
        .inspect(move |ev| match ev {
            Ok(watcher::Event::Delete(ns)) => {
                if let Some(name) = &ns.metadata.name {
                    ctx.shared.writer.forget_namespace(name);
                    ctx.forget_failures(name);
                    ctx.finish(ctx.passes.drop_namespace(name));
                }
            }
            Err(error) => warn!(%error, "namespace watch error; retrying"),
            _ => {}
        });
        after_first_list(events)
    };

    let (all_tx, all_rx) = futures::channel::mpsc::unbounded::<()>();
    let mut controller = Controller::for_stream(namespaces, ns_reader.clone())
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(u16::try_from(shared.config.concurrency).unwrap_or(u16::MAX)),
        )
        .reconcile_all_on(all_rx)
        .graceful_shutdown_on({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
    let instance_labels = managed_selector(&shared.config.instance);
    for (name, writer) in held_writers {
        let cfg = watcher::Config::default()
            .fields(&format!("metadata.name={name}"))
            .labels(&instance_labels);
        let stream = watcher(Api::<SecretMeta>::all(client.clone()), cfg)
            .default_backoff()
            // Only what pruning needs stays in memory.
            .modify(|s| {
                s.types = None;
                s.metadata = identity(&s.metadata);
            });
        let stream = match writer {
            Some(writer) => Either::Left(stream.reflect(writer)),
            None => Either::Right(stream),
        };
        controller = controller.watches_stream(
            changes(stream, "secret", shared.clone(), relisted.clone()),
            to_namespace::<SecretMeta>,
        );
    }
    for (name, writer) in account_writers {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(Api::<ServiceAccount>::all(client.clone()), cfg)
            .default_backoff()
            .modify(|sa| {
                *sa = ServiceAccount {
                    metadata: identity(&sa.metadata),
                    image_pull_secrets: sa.image_pull_secrets.take(),
                    ..Default::default()
                }
            })
            .reflect(writer);
        controller = controller.watches_stream(
            changes(stream, "serviceaccount", shared.clone(), relisted.clone()),
            to_namespace::<ServiceAccount>,
        );
    }

    // Fresh credentials (or a re-listed watch) start a pass once the namespaces are known.
    let passes = {
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        async move {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = ctx.namespaces.wait_until_ready() => if r.is_err() { return },
            }
            // A leader again, with live credentials cached from its last term: they serve
            // the namespaces of the first list while the sources fetch anew.
            let (_, mut start_now) = ctx.shared.generation();
            // The generation the last pass started with: a signal for it brings nothing new
            // (the fetch stored its credentials before this loop read them).
            let mut covered = None;
            loop {
                let mut relisted = false;
                if !std::mem::take(&mut start_now) {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = wake.recv() => match r {
                            Some(w) => relisted = w == Wake::Relisted,
                            None => return,
                        },
                    }
                }
                while let Ok(w) = wake.try_recv() {
                    relisted |= w == Wake::Relisted;
                }
                let (generation, _) = ctx.shared.generation();
                if covered.replace(generation) == Some(generation) && !relisted {
                    continue;
                }
                let resolution = crate::namespaces::classify(
                    &ctx.shared.config.namespaces,
                    &ctx.namespaces.state(),
                );
                ctx.finish(ctx.passes.begin(&resolution));
                if all_tx.unbounded_send(()).is_err() {
                    return;
                }
            }
        }
    };

    let mut results = controller.run(reconcile, error_policy, ctx.clone()).boxed();
    let drive = async {
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => debug!(%error, "controller"),
            }
        }
    };
    tokio::select! {
        _ = drive => return,
        _ = async { passes.await; std::future::pending::<()>().await } => {}
        _ = cancel.cancelled() => {}
    }
    // Cancelled. The controller takes no new work now (graceful shutdown) but would wait for
    // its requeues; it is driven only until the reconciles under way have finished.
    while ctx.in_flight.load(Ordering::Acquire) > 0 {
        tokio::select! {
            r = results.next() => if r.is_none() { break },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// The namespaces to reconcile from their watch: each one added or changed, but none of the
/// first list, which the first pass (every namespace, once credentials are there) covers;
/// reconciled for both, a namespace was written twice at start. A later re-list is passed on:
/// a namespace relabelled while the watch was away is in no other event.
fn after_first_list(
    stream: impl futures::Stream<Item = Result<watcher::Event<NamespaceMeta>, watcher::Error>>
    + Send
    + 'static,
) -> impl futures::Stream<Item = Result<NamespaceMeta, watcher::Error>> + Send + 'static {
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

/// Only the identity of an object: what pruning and echo detection read.
fn identity(m: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

fn to_namespace<K: kube::Resource>(obj: K) -> Option<ObjectRef<NamespaceMeta>> {
    obj.meta().namespace.as_deref().map(ObjectRef::new)
}

/// The changes of a watched kind that call for a look at their namespace: not the initial
/// list (the start-up pass covers it), not the echo of our own write. A re-list after the
/// first (the watch lost track) calls for a pass: a deletion missed meanwhile is in no event.
fn changes<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    kind: &'static str,
    shared: Arc<DaemonState>,
    relisted: mpsc::UnboundedSender<Wake>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Send + 'static,
{
    let mut listed_once = false;
    stream.filter_map(move |ev| {
        let shared = shared.clone();
        let out = match ev {
            Ok(watcher::Event::Apply(obj)) => {
                return Either::Left(async move {
                    let m = obj.meta();
                    if shared.writer.is_echo(kind, m).await {
                        None
                    } else {
                        debug!(kind, namespace = ?m.namespace, name = ?m.name, "change seen");
                        Some(Ok(obj))
                    }
                });
            }
            Ok(watcher::Event::Delete(obj)) => {
                let m = obj.meta();
                if let (Some(ns), Some(name)) = (&m.namespace, &m.name) {
                    shared.writer.forget(kind, ns, name);
                }
                debug!(kind, namespace = ?m.namespace, name = ?m.name, "deletion seen");
                Some(Ok(obj))
            }
            Ok(watcher::Event::InitDone) => {
                if listed_once {
                    let _ = relisted.send(Wake::Relisted);
                }
                listed_once = true;
                None
            }
            Ok(_) => None,
            Err(error) => {
                warn!(kind, %error, "watch error; retrying");
                None
            }
        };
        Either::Right(std::future::ready(out))
    })
}

impl cycle::KnownServiceAccounts for Context {
    /// From the watch, once it has listed; before that, unknown (read from the server).
    fn references(&self, namespace: &str, service_account: &str) -> cycle::Known {
        let Some((_, store)) = self.accounts.iter().find(|(n, _)| n == service_account) else {
            return cycle::Known::Unknown;
        };
        let listed = futures::FutureExt::now_or_never(store.wait_until_ready());
        if !matches!(listed, Some(Ok(()))) {
            return cycle::Known::Unknown;
        }
        match store.get(&ObjectRef::new(service_account).within(namespace)) {
            None => cycle::Known::Absent,
            Some(sa) => cycle::Known::References(
                sa.image_pull_secrets
                    .iter()
                    .flatten()
                    .map(|r| r.name.clone())
                    .collect(),
            ),
        }
    }
}

impl Context {
    fn forget_failures(&self, namespace: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(namespace);
        }
    }

    /// A pass that ended: its figures, readiness, and (once) the sweep of leftovers.
    fn finish(self: &Arc<Self>, finished: Option<Finished>) {
        let Some(f) = finished else { return };
        let shared = &self.shared;
        shared.metrics.cycle_duration.observe(f.took.as_secs_f64());
        shared
            .metrics
            .target_namespaces
            .set(i64::try_from(f.namespaces).unwrap_or(i64::MAX));
        let creds = shared.snapshot();
        if shared
            .providers
            .iter()
            .all(|p| creds.contains_key(p.name()))
        {
            shared.cycle_done.store(true, Ordering::Relaxed);
        }
        if shared.config.daemon.prune && !self.swept.swap(true, Ordering::Relaxed) {
            let ctx = self.clone();
            tokio::spawn(async move { super::prune::sweep(&ctx).await });
        }
    }

    /// The plan for the cached credentials, rendered again only when they have changed.
    fn current_plan(&self) -> Arc<cycle::Plan> {
        let creds = self.shared.snapshot();
        let key: Vec<Arc<Credentials>> = creds.values().cloned().collect();
        let mut cached = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, plan)) = cached.as_ref()
            && k.len() == key.len()
            && k.iter().zip(&key).all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return plan.clone();
        }
        let plan = Arc::new(cycle::plan(
            &self.shared.config,
            |n| creds.get(n).map(|c| c.as_ref()),
            |_| true,
        ));
        *cached = Some((key, plan.clone()));
        plan
    }

    pub(super) fn decide_for(&self, ns: &NamespaceMeta) -> Decision {
        self.shared.config.namespaces.decide_namespace(ns)
    }
}

async fn reconcile(ns: Arc<NamespaceMeta>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    ctx.in_flight.fetch_add(1, Ordering::AcqRel);
    let _done = InFlight(&ctx.in_flight);
    let shared = &ctx.shared;
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if ctx.decide_for(&ns) != Decision::Target {
        ctx.forget_failures(&name);
        ctx.finish(ctx.passes.drop_namespace(&name));
        if shared.config.daemon.prune {
            super::prune::namespace(&ctx, &name).await;
        }
        return Ok(Action::await_change());
    }
    let plan = ctx.current_plan();
    if plan.desired.is_empty() {
        // Nothing fetched yet: the pass that follows the first fetch comes here again.
        ctx.finish(ctx.passes.drop_namespace(&name));
        return Ok(Action::await_change());
    }
    let report = cycle::write_namespace(
        &shared.writer,
        &shared.config,
        name.clone(),
        &plan,
        None,
        &*ctx,
    )
    .await;
    record(shared, &report).await;
    let failed = retryable_failures(&report);
    let due = report.due;
    let finished = ctx.passes.done(&report);
    CycleReport {
        namespaces: vec![report],
        ..Default::default()
    }
    .log_outcomes(shared.config.write_mode, false);
    ctx.finish(finished);
    if failed > 0 {
        return Err(ReconcileError::WritesFailed {
            namespace: name,
            failed,
        });
    }
    ctx.forget_failures(&name);
    Ok(due.map_or_else(Action::await_change, |at| Action::requeue(wait_until(at))))
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Backs off per namespace: a namespace that keeps failing does not hold up the others, and
/// an unrelated event does not reset its retry.
fn error_policy(ns: Arc<NamespaceMeta>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let attempt = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(name.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let wait = crate::schedule::backoff(&ctx.shared.config.daemon.policy, attempt, fastrand::f64());
    warn!(namespace = %name, %error, attempt, retry_in_ms = wait.as_millis() as u64, "some writes failed; retrying");
    Action::requeue(wait)
}

/// At least a second ahead: a renewal time that has passed is served by the next reconcile,
/// never by a hot loop.
fn wait_until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now())
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// Failures a later attempt may fix. Not a failed source (its own timer retries it and a
/// pass follows), nor what only a change fixes (forbidden, immutable, a foreign secret or
/// another type under our name): those are reported once and looked at again on a change
/// of the namespace or at the next pass.
pub(super) fn retryable_failures(report: &NamespaceReport) -> usize {
    let secrets = report
        .secrets
        .iter()
        .filter(|(_, o)| matches!(o, SecretOutcome::Failed(e) if e.retryable()))
        .count();
    let sas = report
        .service_accounts
        .iter()
        .filter(|(_, o)| matches!(o, SaOutcome::Failed(_)))
        .count();
    secrets + sas
}

/// Counts outcomes and raises Events for the failures a cluster user should see.
async fn record(shared: &DaemonState, ns: &NamespaceReport) {
    for (_, o) in &ns.secrets {
        shared.metrics.write(o.label());
    }
    shared.events.for_namespace(ns).await;
    for (_, o) in &ns.service_accounts {
        if let SaOutcome::Failed(_) = o {
            shared.metrics.write("serviceaccount_failed");
        }
    }
}
