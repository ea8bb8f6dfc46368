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
use super::controller::Context;
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
    let report = cycle::write_namespace(
        &state.writer,
        &state.config,
        name.clone(),
        &plan,
        None,
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
        state.metrics.write(o.label());
    }
    state.events.for_namespace(ns).await;
    for (_, o) in &ns.service_accounts {
        if let SaOutcome::Failed(_) = o {
            state.metrics.write("serviceaccount_failed");
        }
    }
}
