//! What every reconcile of the daemon shares: the stores, the pass in progress, the plan of
//! that pass, the backoff counts. The controller builds it; reconciles and prune read it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::runtime::reflector::{ObjectRef, Store};

use super::DaemonState;
use super::ahead::Ahead;
use super::pass::{Finished, Passes};
use super::prune::Prune;
use super::watch::{NamespaceMeta, SecretMeta};
use crate::credentials::Credentials;
use crate::cycle::{self, CachedAccount};
use crate::namespaces::Decision;

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
    /// The live secrets of the pass under way, read ahead.
    pub ahead: Arc<Ahead>,
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
        let ahead = Arc::new(Ahead::new(state.config.secrets.len()));
        Self {
            state,
            ahead,
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
        self.ahead.end_pass();
        let state = &self.state;
        state.metrics.pass_done(f.namespaces, f.took);
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

    /// `namespace`'s live secrets from the pass's list, when the pass is waiting for it and
    /// the list can be used; `None`: its reconcile reads them.
    pub(super) async fn live_ahead(&self, namespace: &str) -> Option<crate::writer::LiveSecrets> {
        if !self.passes.is_pending(namespace) {
            return None;
        }
        let names: Vec<&str> = self
            .state
            .config
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        self.ahead.take(&self.state.writer, &names, namespace).await
    }

    pub(super) fn decide_for(&self, ns: &NamespaceMeta) -> Decision {
        self.state.config.namespaces.decide_namespace(ns)
    }
}
