//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): only the holder
//! fetches and writes. Losing the lease stops the work at once; shutdown releases it so a
//! follower takes over without waiting for it to expire.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{DaemonError, Shared, work};
use crate::config::LeaderConfig;

pub async fn run_as_leader(
    shared: Arc<Shared>,
    lease: LeaderConfig,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    let duration = lease.lease_duration.as_secs();
    let manager = LeaseManagerBuilder::new(shared.client.clone(), &lease.lease_name)
        .with_namespace(&lease.lease_namespace)
        .with_identity(&lease.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager(shared.config.field_manager.clone())
        .build()
        .await
        .map_err(|e| DaemonError::Lease(e.to_string()))?;
    let (mut rx, handle) = manager.watch().await;
    info!(lease = %lease.lease_name, namespace = %lease.lease_namespace, identity = %lease.identity, "waiting for the lease");
    let result = loop {
        if !wait_for(&mut rx, true, &cancel).await {
            break Ok(());
        }
        info!(identity = %lease.identity, "acquired the lease; refreshing");
        shared.standby.store(false, Ordering::Relaxed);
        shared.metrics.leader.set(1);
        let term = cancel.child_token();
        let mut task = tokio::spawn(work(shared.clone(), term.clone()));
        let lost = tokio::select! {
            _ = &mut task => None,
            still = wait_for(&mut rx, false, &cancel) => Some(still),
        };
        match lost {
            // Never write without the lease: stop mid-batch.
            Some(true) => {
                warn!(identity = %lease.identity, "lost the lease; stopping work");
                task.abort();
                let _ = task.await;
            }
            Some(false) => {
                term.cancel();
                let _ = task.await;
            }
            None => {}
        }
        shared.metrics.leader.set(0);
        shared.standby.store(true, Ordering::Relaxed);
        shared.cycle_done.store(false, Ordering::Relaxed);
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
