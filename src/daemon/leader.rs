//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): only the holder
//! fetches and writes. Losing the lease stops the work at once; shutdown releases it so a
//! follower takes over without waiting for it to expire.
//!
//! kube-lease-manager reports a loss only when it sees another holder: while its renewals
//! fail (the API server away, this process starved of CPU) it keeps saying "leader". So the
//! work also runs behind a fence of our own: it starts only once the Lease itself shows our
//! renewal, and stops when the last renewal we saw is older than the lease duration less a
//! fifth, before a follower may take the Lease over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::DaemonError;
use super::readiness::Readiness;
use crate::config::LeaderConfig;

/// Runs `term(token)` for each term this process holds the Lease (and the fence confirms
/// it), until `cancel`; the token is cancelled when a term ends in order, and the work is
/// aborted when the lease is lost. Then releases the Lease.
pub(super) async fn run<F>(
    client: &kube::Client,
    lease: &LeaderConfig,
    field_manager: &str,
    readiness: &Readiness,
    term: impl Fn(CancellationToken) -> F,
    cancel: CancellationToken,
) -> Result<(), DaemonError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let duration = lease.lease_duration.as_secs();
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.lease_name)
        .with_namespace(&lease.lease_namespace)
        .with_identity(&lease.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(field_manager.to_string())
        .build()
        .await
        .map_err(|e| DaemonError::Lease(e.to_string()))?;
    let (mut rx, handle) = manager.watch().await;
    let fence = Fence::new(
        Api::namespaced(client.clone(), &lease.lease_namespace),
        lease,
        Utc::now,
    );
    info!(lease = %lease.lease_name, namespace = %lease.lease_namespace, identity = %lease.identity, "waiting for the lease");
    let result = loop {
        if !wait_for(&mut rx, true, &cancel).await {
            break Ok(());
        }
        info!(identity = %lease.identity, "acquired the lease; refreshing");
        readiness.leading();
        let Some(valid_until) = confirmed(&fence, &mut rx, &cancel).await else {
            if cancel.is_cancelled() {
                break Ok(());
            }
            continue;
        };
        let token = cancel.child_token();
        let mut task = tokio::spawn(term(token.clone()));
        let lost = tokio::select! {
            _ = &mut task => None,
            still = wait_for(&mut rx, false, &cancel) => Some(still),
            _ = fence.hold(valid_until) => {
                warn!(identity = %lease.identity, "lease renewal not confirmed in time; stopping writes before another replica may take over");
                Some(true)
            }
        };
        match lost {
            // Never write without the lease: stop mid-batch.
            Some(true) => {
                warn!(identity = %lease.identity, "lost the lease; stopping work");
                task.abort();
                let _ = task.await;
            }
            Some(false) => {
                token.cancel();
                let _ = task.await;
            }
            None => {}
        }
        readiness.standing_by();
        if cancel.is_cancelled() {
            break Ok(());
        }
    };
    // Closing the channel makes the manager release the lease.
    drop(rx);
    match handle.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(e)) => warn!(error = %e, "could not release the lease"),
        Err(e) => warn!(error = %e, "lease task failed"),
    }
    result
}

/// Our own reading of the Lease: whether it shows this process as the holder, renewed
/// recently enough to write.
struct Fence {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The wall clock the Lease's renewTime is compared with; injected so tests can move it.
    now: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl Fence {
    fn new(
        api: Api<Lease>,
        lease: &LeaderConfig,
        now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Self {
        Self {
            api,
            name: lease.lease_name.clone(),
            identity: lease.identity.clone(),
            duration: lease.lease_duration,
            now: Box::new(now),
        }
    }

    /// How far ahead of a lease's expiry writing stops: a fifth of its duration.
    fn margin(&self) -> Duration {
        self.duration / 5
    }

    /// Until when writing is safe, from the Lease as stored; `None` when it does not show us
    /// as the holder with a renewal that has not yet run out.
    fn valid_until(&self, lease: Lease) -> Option<tokio::time::Instant> {
        let spec = lease.spec?;
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        let renewed_ms = spec.renew_time?.0.as_millisecond();
        let now_ms = (self.now)().timestamp_millis();
        let until_ms = renewed_ms + (self.duration - self.margin()).as_millis() as i64;
        let left = Duration::from_millis(u64::try_from(until_ms - now_ms).ok()?);
        Some(tokio::time::Instant::now() + left)
    }

    async fn check(&self) -> Option<tokio::time::Instant> {
        self.valid_until(self.api.get(&self.name).await.ok()?)
    }

    /// Resolves once no renewal has been confirmed in time (`valid_until` moves forward with
    /// each one seen), or the Lease shows another holder.
    async fn hold(&self, mut valid_until: tokio::time::Instant) {
        let poll = self.margin().max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(valid_until) => return,
                _ = tokio::time::sleep(poll) => {}
            }
            // Unreachable: keep the last confirmed time; the deadline decides, also while a
            // read hangs (a server that accepts and never answers).
            let read = tokio::select! {
                _ = tokio::time::sleep_until(valid_until) => return,
                r = self.api.get(&self.name) => r,
            };
            if let Ok(lease) = read {
                match self.valid_until(lease) {
                    Some(until) => valid_until = until,
                    None => return,
                }
            }
        }
    }
}

/// Waits until the Lease confirms what the manager says; `None` when leadership went away or
/// the daemon is stopping first.
async fn confirmed(
    fence: &Fence,
    rx: &mut watch::Receiver<bool>,
    cancel: &CancellationToken,
) -> Option<tokio::time::Instant> {
    loop {
        if !*rx.borrow() || cancel.is_cancelled() {
            return None;
        }
        if let Some(until) = fence.check().await {
            return Some(until);
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Waits until leadership equals `want`; false when cancelled (or the lease task is gone).
async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool, cancel: &CancellationToken) -> bool {
    loop {
        if *rx.borrow_and_update() == want {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            changed = rx.changed() => if changed.is_err() {
                warn!("lease manager stopped");
                return false;
            },
        }
    }
}
