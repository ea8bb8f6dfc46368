//! Daemon mode: keep every target valid without anyone watching.
//!
//! Each source has its own timer ([`timers`]); fresh credentials go into a cache (`cache`)
//! and trigger a pass over every namespace (`pass`). Watches (`watch`) trigger
//! per-namespace reconciles (`reconcile`, run by the `controller`) from that cache, so a
//! new namespace or a deleted secret is served within seconds and without a token call;
//! `prune` deletes what no target needs. With leader election (`leader`) only the Lease
//! holder fetches and writes; `readiness` owns what `/readyz` reports. Each part owns its
//! state and is handed what it reads: none sets another's fields. Shutdown is a future passed
//! in, so tests can drive it.

use std::sync::Arc;

use chrono::Utc;
use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::events::Events;
use crate::metrics::{Metrics, SourceLabel};
use crate::sources::Source;
use crate::writer::Writer;

mod ahead;
mod cache;
mod context;
mod controller;
mod leader;
mod pass;
mod prune;
mod readiness;
mod reconcile;
#[cfg(test)]
mod testing;
pub mod timers;
mod wake;
mod watch;

use cache::CredentialCache;
use readiness::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("leader election: {0}")]
    Lease(String),
}

/// What the daemon holds while it runs: configuration, clients, the cached credentials,
/// metrics and readiness. Shared by the source timers, the controller and the admin server.
pub struct DaemonState {
    config: Config,
    /// For requests, each with a deadline.
    client: kube::Client,
    /// For watches, which stay open by design.
    watch_client: kube::Client,
    /// Shared with the watches, which skip the echo of its writes.
    writer: Arc<Writer>,
    sources: Vec<Source>,
    creds: CredentialCache,
    pub metrics: Metrics,
    readiness: Readiness,
    events: Events,
}

impl DaemonState {
    pub async fn new(
        config: Config,
        client: kube::Client,
        watch_client: kube::Client,
    ) -> Arc<Self> {
        let sources = crate::sources::build_all(&config.sources, config.provider_timeout).await;
        Arc::new(Self::with_sources(config, client, watch_client, sources))
    }

    fn with_sources(
        config: Config,
        client: kube::Client,
        watch_client: kube::Client,
        sources: Vec<Source>,
    ) -> Self {
        let writer = Arc::new(Writer::for_config(client.clone(), &config));
        let events = Events::new(&client, config.daemon.events);
        Self {
            readiness: Readiness::new(config.daemon.leader.is_some()),
            config,
            client,
            watch_client,
            writer,
            sources,
            creds: CredentialCache::default(),
            metrics: Metrics::default(),
            events,
        }
    }

    /// Ready once a complete cycle has run and while no cached credential has expired. A
    /// standby replica is ready: it serves nothing and is healthy.
    fn ready(&self) -> Result<(), String> {
        self.readiness.check(|| self.creds.expired(Utc::now()))
    }

    fn update_gauges(&self) {
        let now = Utc::now();
        for (name, c) in self.creds.snapshot() {
            if let Some(exp) = c.expires_at {
                let left = (exp - now).num_milliseconds() as f64 / 1000.0;
                self.metrics
                    .expires_in
                    .get_or_create(&SourceLabel { source: name })
                    .set(left);
            }
        }
        self.metrics
            .remembered_objects
            .set(i64::try_from(self.writer.remembered()).unwrap_or(i64::MAX));
    }

    fn own_pod(&self) -> Option<ObjectReference> {
        Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(crate::input::pod_name()?),
            namespace: Some(crate::input::pod_namespace_given()?),
            ..Default::default()
        })
    }
}

impl crate::admin::Health for DaemonState {
    fn readiness(&self) -> Result<(), String> {
        self.ready()
    }

    fn metrics_text(&self) -> String {
        self.update_gauges();
        self.metrics.sample_runtime();
        self.metrics.encode()
    }
}

/// Runs the daemon until `shutdown` resolves, then stops taking work, lets in-flight writes
/// finish within the configured bound, releases the lease, and returns.
pub async fn run(
    state: Arc<DaemonState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let cancel = CancellationToken::new();
    let admin = crate::admin::serve(
        state.config.daemon.admin_addr,
        state.clone(),
        cancel.clone(),
    )
    .await?;
    let main = {
        let (state, cancel) = (state.clone(), cancel.clone());
        tokio::spawn(async move {
            match &state.config.daemon.leader {
                None => {
                    state.metrics.leading(true);
                    work(state.clone(), cancel).await;
                    Ok(())
                }
                Some(lease) => {
                    let term = |term| lead(state.clone(), term);
                    leader::run(
                        &state.client,
                        lease,
                        &state.config.field_manager,
                        &state.readiness,
                        term,
                        cancel,
                    )
                    .await
                }
            }
        })
    };
    tokio::pin!(shutdown);
    let mut main = main;
    let result = tokio::select! {
        _ = &mut shutdown => {
            info!("shutting down");
            cancel.cancel();
            match tokio::time::timeout(state.config.daemon.shutdown_timeout, &mut main).await {
                Ok(joined) => joined.unwrap_or(Ok(())),
                Err(_) => {
                    warn!("in-flight work did not finish in time; stopping anyway");
                    main.abort();
                    Ok(())
                }
            }
        }
        joined = &mut main => joined.unwrap_or(Ok(())),
    };
    cancel.cancel();
    let _ = admin.await;
    result
}

/// A term as leader: the work, with the leader gauge at 1 for as long as it runs (also when
/// it is aborted on a lost lease: the gauge drops with the task).
async fn lead(state: Arc<DaemonState>, term: CancellationToken) {
    struct Leading(Arc<DaemonState>);
    impl Drop for Leading {
        fn drop(&mut self) {
            self.0.metrics.leading(false);
        }
    }
    state.metrics.leading(true);
    let _leading = Leading(state.clone());
    work(state, term).await;
}

/// The leader's work: a timer per source and the controller, until `cancel`.
async fn work(state: Arc<DaemonState>, cancel: CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for idx in 0..state.sources.len() {
        let (state, tx, cancel) = (state.clone(), tx.clone(), cancel.clone());
        tasks.spawn(async move {
            let p = &state.sources[idx];
            let timeout = state.config.provider_timeout;
            timers::refresh_loop(
                p.name(),
                &state.config.daemon.policy,
                || p.fetch(timeout),
                |r| match r {
                    Ok(creds) => {
                        state
                            .metrics
                            .fetched(p.name(), Utc::now().timestamp() as f64);
                        state.creds.store(p.name(), creds);
                        let _ = tx.send(pass::Wake::Refreshed);
                    }
                    Err(e) => {
                        state.metrics.fetch_failed(p.name(), e.metric_label());
                        if let Some(pod) = state.own_pod() {
                            let (state, note) = (state.clone(), e.to_string());
                            tokio::spawn(async move {
                                state.events.warn("RefreshFailed", note, pod).await;
                            });
                        }
                    }
                },
                Utc::now,
                fastrand::f64,
                cancel,
            )
            .await
        });
    }
    controller::run(state.clone(), rx, tx, cancel.clone()).await;
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
}
