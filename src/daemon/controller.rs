//! The daemon's controller: a kube-runtime `Controller` keyed by namespace, and the
//! [`Context`] its reconciles share.
//!
//! Namespaces are watched as metadata only; a change to a managed secret or a configured
//! ServiceAccount is mapped to its namespace; fresh credentials reconcile every namespace (a
//! [`pass`](super::pass)). The controller de-duplicates the work per namespace, backs off per
//! namespace on a failure a retry can fix, and finishes in-flight reconciles on shutdown. It
//! never fetches a token: the source timers do that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::Either;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::DaemonState;
use super::pass::{self, Finished, Passes, Wake};
use super::prune::Prune;
use super::reconcile::{error_policy, reconcile};
use super::watch::{self, NamespaceMeta, SecretMeta};
use crate::credentials::Credentials;
use crate::cycle::{self, CachedAccount};
use crate::namespaces::Decision;
use crate::writer::managed_selector;

/// A plan and the credentials it was rendered from.
type RenderedPlan = (Vec<Arc<Credentials>>, Arc<cycle::Plan>);

/// What every reconcile shares.
pub(super) struct Context {
    pub state: Arc<DaemonState>,
    pub namespaces: Store<NamespaceMeta>,
    /// The managed secrets that exist, by configured name: what pruning deletes, without a
    /// list per namespace. Empty without `--prune`.
    managed: Vec<(String, Store<SecretMeta>)>,
    /// The configured ServiceAccounts that exist, reduced to their `imagePullSecrets`: a
    /// reconcile reads one only when it lacks a reference.
    accounts: Vec<(String, Store<ServiceAccount>)>,
    pub passes: Passes,
    /// The plan with the credentials it was rendered from (held, so compared by identity):
    /// every reconcile of a pass shares one render instead of making its own.
    plan: Mutex<Option<RenderedPlan>>,
    /// Consecutive failed reconciles by namespace, for the backoff; cleared on success.
    failures: Mutex<HashMap<String, u32>>,
    swept: AtomicBool,
    /// Reconciles under way: on shutdown the controller is driven until they are done, since
    /// dropping it would abort them mid-write.
    pub in_flight: AtomicUsize,
}

/// Runs the controller until `cancel`; `wake` says when a pass is due.
pub(super) async fn run(
    state: Arc<DaemonState>,
    wake: mpsc::UnboundedReceiver<Wake>,
    relisted: mpsc::UnboundedSender<Wake>,
    cancel: CancellationToken,
) {
    let client = state.watch_client.clone();
    let config = &state.config;
    let (ns_store, ns_events) = watch::cache(
        Api::<NamespaceMeta>::all(client.clone()),
        watcher::Config::default(),
        watch::trim_namespace,
    );
    let instance_labels = managed_selector(&config.instance);
    // Only pruning reads which managed secrets exist; without it their watch keeps nothing
    // (at 10,000 namespaces, some 6 MiB of heap).
    let mut managed = Vec::new();
    let mut secret_events = Vec::new();
    for s in &config.secrets {
        let api = Api::<SecretMeta>::all(client.clone());
        let cfg = watcher::Config::default()
            .fields(&format!("metadata.name={}", s.name))
            .labels(&instance_labels);
        secret_events.push(if config.daemon.prune {
            let (store, events) = watch::cache(api, cfg, watch::trim_secret);
            managed.push((s.name.clone(), store));
            Either::Left(events)
        } else {
            Either::Right(watch::trimmed(api, cfg, watch::trim_secret))
        });
    }
    let mut accounts = Vec::new();
    let mut account_events = Vec::new();
    for name in &config.service_accounts {
        let (store, events) = watch::cache(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            watch::trim_service_account,
        );
        accounts.push((name.clone(), store));
        account_events.push(events);
    }
    let ctx = Arc::new(Context::new(state.clone(), ns_store, managed, accounts));

    let namespaces = {
        let ctx = ctx.clone();
        watch::after_first_list(ns_events.inspect(move |ev| match ev {
            Ok(watcher::Event::Delete(ns)) => {
                if let Some(name) = &ns.metadata.name {
                    ctx.state.writer.forget_namespace(name);
                    ctx.forget_failures(name);
                    ctx.finish(ctx.passes.drop_namespace(name));
                }
            }
            Err(error) => warn!(%error, "namespace watch error; retrying"),
            _ => {}
        }))
    };
    let (all_tx, all_rx) = futures::channel::mpsc::unbounded::<()>();
    let mut controller = Controller::for_stream(namespaces, ctx.namespaces.clone())
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(u16::try_from(config.concurrency).unwrap_or(u16::MAX)),
        )
        .reconcile_all_on(all_rx)
        .graceful_shutdown_on({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
    for events in secret_events {
        let changes = watch::changes(events, "secret", state.writer.clone(), relisted.clone());
        controller = controller.watches_stream(changes, watch::to_namespace::<SecretMeta>);
    }
    for events in account_events {
        let changes = watch::changes(
            events,
            "serviceaccount",
            state.writer.clone(),
            relisted.clone(),
        );
        controller = controller.watches_stream(changes, watch::to_namespace::<ServiceAccount>);
    }

    // Fresh credentials (or a re-listed watch) start a pass once the namespaces are known.
    let passes = pass::trigger(
        &ctx.namespaces,
        &config.namespaces,
        wake,
        || ctx.state.creds.generation(chrono::Utc::now()),
        |resolution| ctx.finish(ctx.passes.begin(resolution)),
        all_tx,
        cancel.clone(),
    );

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

impl cycle::ServiceAccountCache for Context {
    /// From the watch, once it has listed; before that, not cached (read from the server).
    fn references(&self, namespace: &str, service_account: &str) -> CachedAccount {
        let Some((_, store)) = self.accounts.iter().find(|(n, _)| n == service_account) else {
            return CachedAccount::NotCached;
        };
        let listed = futures::FutureExt::now_or_never(store.wait_until_ready());
        if !matches!(listed, Some(Ok(()))) {
            return CachedAccount::NotCached;
        }
        match store.get(&ObjectRef::new(service_account).within(namespace)) {
            None => CachedAccount::Absent,
            Some(sa) => CachedAccount::References(
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
    pub(super) fn new(
        state: Arc<DaemonState>,
        namespaces: Store<NamespaceMeta>,
        managed: Vec<(String, Store<SecretMeta>)>,
        accounts: Vec<(String, Store<ServiceAccount>)>,
    ) -> Self {
        Self {
            state,
            namespaces,
            managed,
            accounts,
            passes: Passes::default(),
            plan: Mutex::default(),
            failures: Mutex::default(),
            swept: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Pruning, through the caches and clients it needs.
    pub(super) fn prune(&self) -> Prune<'_> {
        Prune {
            config: &self.state.config,
            client: &self.state.client,
            writer: &self.state.writer,
            metrics: &self.state.metrics,
            namespaces: &self.namespaces,
            managed: &self.managed,
        }
    }

    pub(super) fn forget_failures(&self, namespace: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(namespace);
        }
    }

    /// One more failure of `namespace` in a row: the attempt number, for the backoff.
    pub(super) fn count_failure(&self, namespace: &str) -> u32 {
        self.failures
            .lock()
            .map(|mut f| {
                let n = f.entry(namespace.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1)
    }

    /// A pass that ended: its figures, readiness, and (once) the sweep of leftovers.
    pub(super) fn finish(self: &Arc<Self>, finished: Option<Finished>) {
        let Some(f) = finished else { return };
        let state = &self.state;
        state.metrics.cycle_duration.observe(f.took.as_secs_f64());
        state
            .metrics
            .target_namespaces
            .set(i64::try_from(f.namespaces).unwrap_or(i64::MAX));
        let creds = state.creds.snapshot();
        if state.sources.iter().all(|p| creds.contains_key(p.name())) {
            state.readiness.pass_completed();
        }
        if state.config.daemon.prune && !self.swept.swap(true, Ordering::Relaxed) {
            let ctx = self.clone();
            tokio::spawn(async move { ctx.prune().sweep().await });
        }
    }

    /// The plan for the cached credentials, rendered again only when they have changed.
    pub(super) fn current_plan(&self) -> Arc<cycle::Plan> {
        let creds = self.state.creds.snapshot();
        let key: Vec<Arc<Credentials>> = creds.values().cloned().collect();
        let mut cached = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, plan)) = cached.as_ref()
            && k.len() == key.len()
            && k.iter().zip(&key).all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return plan.clone();
        }
        let plan = Arc::new(cycle::plan(
            &self.state.config,
            |n| creds.get(n).map(|c| c.as_ref()),
            |_| true,
        ));
        *cached = Some((key, plan.clone()));
        plan
    }

    pub(super) fn decide_for(&self, ns: &NamespaceMeta) -> Decision {
        self.state.config.namespaces.decide_namespace(ns)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{self, listed, namespace, secret_meta};
    use super::*;
    use crate::cycle::tests::{config, static_creds};

    const YAML: &str = "registries:\n  - name: quay\n    static: { server: quay.io, username: bot, passwordFile: {pw} }\n  - name: hub\n    static: { server: docker.io, username: bot, passwordFile: {pw} }\nsecrets:\n  - name: regcred\n    registries: [quay, hub]\nnamespaces: { include: [\"team-*\"] }\n";

    fn finished() -> Option<Finished> {
        Some(Finished {
            totals: Default::default(),
            namespaces: 1,
            took: Duration::from_millis(5),
        })
    }

    #[tokio::test]
    async fn a_pass_makes_the_replica_ready_only_with_credentials_of_every_source() {
        let config = config(YAML, &[]);
        let sources = crate::sources::build_all(&config.sources, config.provider_timeout).await;
        let (client, log) = testing::no_server();
        let state = Arc::new(DaemonState::with_sources(
            config,
            client.clone(),
            client,
            sources,
        ));
        let ctx = Arc::new(Context::new(state.clone(), listed(vec![]), vec![], vec![]));
        state.creds.store("quay", static_creds("quay", "quay.io"));
        ctx.finish(finished());
        assert_eq!(
            state.ready(),
            Err("no complete refresh cycle yet".into()),
            "hub missing"
        );
        ctx.finish(None);
        state.creds.store("hub", static_creds("hub", "docker.io"));
        ctx.finish(finished());
        assert_eq!(state.ready(), Ok(()));
        assert_eq!(state.metrics.target_namespaces.get(), 1);
        assert!(testing::requests(&log).is_empty());
    }

    #[tokio::test]
    async fn the_first_pass_sweeps_once() {
        let (client, log) = testing::server(|_| {
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
        });
        let state = testing::state(config(YAML, &["--prune"]), client);
        let managed = vec![(
            "regcred".to_string(),
            listed(vec![secret_meta("other", "regcred", "u-1")]),
        )];
        let namespaces = listed(vec![namespace("other", &[])]);
        let ctx = Arc::new(Context::new(state, namespaces, managed, vec![]));
        ctx.finish(finished());
        ctx.finish(finished());
        // The sweep runs on its own task: let it.
        for _ in 0..100 {
            if !testing::requests(&log).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let lines: Vec<String> = testing::requests(&log).iter().map(|s| s.line()).collect();
        assert_eq!(lines, ["DELETE /api/v1/namespaces/other/secrets/regcred"]);
    }
}
