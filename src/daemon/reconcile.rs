//! One reconcile: what a namespace needs from the cached credentials, decided and written.
//! A namespace that is no target is forgotten (and, with `--prune`, cleared of our secrets);
//! a target gets every planned secret and ServiceAccount reference. A failure a retry can fix
//! backs off per namespace; anything else waits for a change or the next pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use tracing::warn;

use super::DaemonState;
use super::context::Context;
use super::watch::NamespaceMeta;
use crate::cycle::{self, CycleReport, NamespaceReport};
use crate::namespaces::Decision;
use crate::writer::{SaOutcome, SecretOutcome};

#[derive(Debug, thiserror::Error)]
pub(super) enum ReconcileError {
    #[error("namespace {namespace}: {failed} write(s) failed; a retry may fix them")]
    WritesFailed { namespace: String, failed: usize },
}

pub(super) async fn reconcile(
    ns: Arc<NamespaceMeta>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    ctx.in_flight.fetch_add(1, Ordering::AcqRel);
    let _done = InFlight(&ctx.in_flight);
    let state = &ctx.state;
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if ctx.decide_for(&ns) != Decision::Target {
        ctx.forget_failures(&name);
        ctx.finish(ctx.passes.drop_namespace(&name));
        if state.config.daemon.prune {
            ctx.prune().namespace(&name).await;
        }
        return Ok(Action::await_change());
    }
    let plan = ctx.current_plan();
    if plan.desired.is_empty() {
        // Nothing fetched yet: the pass that follows the first fetch comes here again.
        ctx.finish(ctx.passes.drop_namespace(&name));
        return Ok(Action::await_change());
    }
    let live = ctx.live_ahead(&name).await;
    let report = cycle::write_namespace(
        &state.writer,
        &state.config,
        name.clone(),
        &plan,
        live.as_ref(),
        &*ctx,
    )
    .await;
    record(state, &report).await;
    let failed = retryable_failures(&report);
    let due = report.due;
    let finished = ctx.passes.done(&report);
    CycleReport {
        namespaces: vec![report],
        ..Default::default()
    }
    .log_outcomes(state.config.write_mode, false);
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
pub(super) fn error_policy(
    ns: Arc<NamespaceMeta>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let attempt = ctx.count_failure(&name);
    let wait = crate::schedule::backoff(&ctx.state.config.daemon.policy, attempt, fastrand::f64());
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
fn retryable_failures(report: &NamespaceReport) -> usize {
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
async fn record(state: &DaemonState, ns: &NamespaceReport) {
    for (_, o) in &ns.secrets {
        state.metrics.secret_outcome(o.label());
    }
    state.events.for_namespace(ns).await;
    for (_, o) in &ns.service_accounts {
        if let SaOutcome::Failed(_) = o {
            state.metrics.service_account_failed();
        }
    }
}

/// `reconcile`'s decisions against a fake API server: what it asks, in what order, and what
/// it returns to the controller.
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{self, Log, listed, namespace, secret_meta, status};
    use super::super::watch::SecretMeta;
    use super::*;
    use crate::cycle::tests::{config, static_creds};

    const YAML: &str = "registries:\n  - name: quay\n    static: { server: quay.io, username: bot, passwordFile: {pw} }\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: { include: [\"team-*\"] }\n";

    /// A context over `client` with the static credentials cached, and the managed secrets
    /// in `managed` known from their watch.
    fn context(flags: &[&str], client: kube::Client, managed: Vec<SecretMeta>) -> Arc<Context> {
        let state = testing::state(config(YAML, flags), client);
        state.creds.store("quay", static_creds("quay", "quay.io"));
        let managed = vec![("regcred".to_string(), listed(managed))];
        Arc::new(Context::new(state, listed(vec![]), managed, vec![]))
    }

    async fn run(ctx: &Arc<Context>, ns: &str) -> Result<Action, ReconcileError> {
        reconcile(Arc::new(namespace(ns, &[])), ctx.clone()).await
    }

    fn lines(log: &Log) -> Vec<String> {
        testing::requests(log).iter().map(|s| s.line()).collect()
    }

    fn writes(ctx: &Context, result: &str) -> u64 {
        let label = crate::metrics::ResultLabel {
            result: result.into(),
        };
        ctx.state.metrics.writes.get_or_create(&label).get()
    }

    /// The API server's answer to an apply: the object as sent, stored.
    fn applied(s: &testing::Seen) -> (u16, serde_json::Value) {
        let mut obj = s.body.clone();
        obj["metadata"]["uid"] = json!("u-1");
        obj["metadata"]["resourceVersion"] = json!("7");
        (201, obj)
    }

    #[tokio::test]
    async fn a_new_target_is_read_then_applied_under_our_field_manager_and_waits_for_a_change() {
        let (client, log) = testing::server(|s| match s.method.as_str() {
            "GET" => status(404, "NotFound"),
            _ => applied(s),
        });
        let ctx = context(&["--events=false"], client, vec![]);
        assert_eq!(run(&ctx, "team-a").await.unwrap(), Action::await_change());
        let seen = testing::requests(&log);
        assert_eq!(
            lines(&log),
            [
                "GET /api/v1/namespaces/team-a/secrets/regcred",
                "PATCH /api/v1/namespaces/team-a/secrets/regcred"
            ]
        );
        let apply = &seen[1];
        assert_eq!(apply.param("fieldManager"), Some("regcred-refresher"));
        // A create is never forced: a foreign secret made meanwhile makes it conflict.
        assert_eq!(apply.param("force"), None);
        assert_eq!(apply.param("dryRun"), None);
        assert_eq!(apply.body["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(
            apply.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "regcred-refresher"
        );
        assert!(apply.body["data"][".dockerconfigjson"].is_string());
        assert_eq!(writes(&ctx, "created"), 1);
    }

    #[tokio::test]
    async fn a_stale_secret_of_ours_is_applied_with_force_and_its_instance_label() {
        let (client, log) = testing::server(|s| match s.method.as_str() {
            "GET" => (
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                       "metadata": {"name": "regcred", "namespace": "team-a", "uid": "u-1",
                                    "resourceVersion": "3",
                                    "labels": {"app.kubernetes.io/managed-by": "regcred-refresher",
                                               "regcred-refresher.io/instance": "blue"}},
                       "data": {".dockerconfigjson": "e30="}}),
            ),
            _ => applied(s),
        });
        let ctx = context(&["--events=false", "--instance=blue"], client, vec![]);
        assert_eq!(run(&ctx, "team-a").await.unwrap(), Action::await_change());
        let seen = testing::requests(&log);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].method, "PATCH");
        assert_eq!(seen[1].param("force"), Some("true"), "over our own secret");
        assert_eq!(
            seen[1].body["metadata"]["labels"]["regcred-refresher.io/instance"],
            "blue"
        );
        assert_eq!(writes(&ctx, "updated"), 1);
    }

    #[tokio::test]
    async fn a_failure_a_retry_can_fix_is_an_error_and_backs_off_until_a_success() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = fail.clone();
        let (client, _log) = testing::server(move |s| {
            if failing.load(Ordering::Relaxed) {
                status(500, "InternalError")
            } else if s.method == "GET" {
                status(404, "NotFound")
            } else {
                applied(s)
            }
        });
        let ctx = context(&["--events=false"], client, vec![]);
        let ns = Arc::new(namespace("team-a", &[]));
        for attempt in 1..=2 {
            let e = run(&ctx, "team-a").await.unwrap_err();
            assert!(
                matches!(&e, ReconcileError::WritesFailed { namespace, failed: 1 } if namespace == "team-a"),
                "{e}"
            );
            let wait = error_policy(ns.clone(), &e, ctx.clone());
            assert_ne!(wait, Action::await_change(), "attempt {attempt}");
        }
        // Two failures in a row: the next would be the third attempt.
        assert_eq!(ctx.count_failure("team-a"), 3);
        fail.store(false, Ordering::Relaxed);
        assert!(run(&ctx, "team-a").await.is_ok());
        assert_eq!(
            ctx.count_failure("team-a"),
            1,
            "a success resets the backoff"
        );
        assert_eq!(writes(&ctx, "failed"), 2);
    }

    #[tokio::test]
    async fn what_only_a_change_fixes_is_reported_and_not_retried() {
        // Forbidden to read, and a secret of that name that is not ours.
        let (client, log) = testing::server(|s| match s.path.as_str() {
            "/api/v1/namespaces/team-a/secrets/regcred" => status(403, "Forbidden"),
            _ => (
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": "regcred", "namespace": "team-b", "uid": "theirs"}}),
            ),
        });
        let ctx = context(&["--events=false"], client, vec![]);
        for ns in ["team-a", "team-b"] {
            assert_eq!(run(&ctx, ns).await.unwrap(), Action::await_change(), "{ns}");
        }
        // Neither is written over.
        assert!(
            lines(&log).iter().all(|l| l.starts_with("GET ")),
            "{:?}",
            lines(&log)
        );
        assert_eq!((writes(&ctx, "failed"), writes(&ctx, "conflict")), (1, 1));
    }

    #[tokio::test]
    async fn with_nothing_fetched_a_target_costs_no_request() {
        let (client, log) = testing::no_server();
        let state = testing::state(config(YAML, &[]), client);
        let ctx = Arc::new(Context::new(state, listed(vec![]), vec![], vec![]));
        assert_eq!(run(&ctx, "team-a").await.unwrap(), Action::await_change());
        assert_eq!(lines(&log), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_namespace_that_is_no_target_loses_our_secret_by_uid_with_prune_only() {
        let ours = || vec![secret_meta("other", "regcred", "u-ours")];
        let (client, log) = testing::no_server();
        let ctx = context(&[], client, ours());
        assert_eq!(run(&ctx, "other").await.unwrap(), Action::await_change());
        assert_eq!(
            lines(&log),
            Vec::<String>::new(),
            "without --prune, left alone"
        );

        let (client, log) = testing::server(|_| {
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
        });
        let ctx = context(&["--prune"], client, ours());
        assert_eq!(run(&ctx, "other").await.unwrap(), Action::await_change());
        let seen = testing::requests(&log);
        assert_eq!(
            lines(&log),
            ["DELETE /api/v1/namespaces/other/secrets/regcred"]
        );
        assert_eq!(seen[0].body["preconditions"]["uid"], "u-ours");
        assert_eq!(writes(&ctx, "pruned"), 1);
    }
}
