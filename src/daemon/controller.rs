//! The daemon's controller: a kube-runtime `Controller` keyed by namespace, and the
//! [`Context`] its reconciles share.
//!
//! Namespaces are watched as metadata only; a change to a managed secret or a configured
//! ServiceAccount is mapped to its namespace; fresh credentials reconcile every namespace (a
//! [`pass`](super::pass)). The controller de-duplicates the work per namespace, backs off per
//! namespace on a failure a retry can fix, and finishes in-flight reconciles on shutdown. It
//! never fetches a token: the source timers do that.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::future::Either;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::DaemonState;
pub(super) use super::context::Context;
use super::pass::{self, Wake};
use super::reconcile::{error_policy, reconcile};
use super::watch::{self, NamespaceMeta, SecretMeta};
use crate::writer::managed_selector;

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
        watch::namespace_trim(&config.namespaces),
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
        let changes = watch::changes(
            events,
            "secret",
            state.writer.clone(),
            relisted.clone(),
            Some(ctx.ahead.clone()),
        );
        controller = controller.watches_stream(changes, watch::to_namespace::<SecretMeta>);
    }
    for events in account_events {
        let changes = watch::changes(
            events,
            "serviceaccount",
            state.writer.clone(),
            relisted.clone(),
            None,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::pass::Finished;
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
