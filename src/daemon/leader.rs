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
        .with_grace(grace_secs(lease.lease_duration))
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

/// How long before the Lease's expiry the manager renews it: half its duration, so that a
/// renewal lands well before the fence's deadline (four fifths) and a read sees it in between.
fn grace_secs(duration: Duration) -> u64 {
    (duration.as_secs() / 2).max(1)
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
    ///
    /// Reads every margin, and once more between the manager's renewal and the deadline: with
    /// reads every margin alone, one that fell just before the renewal left the next one past
    /// the deadline, and a holder renewing on time stopped its writes and took the Lease again
    /// (every 30 s under the chart's defaults in the chaos test).
    async fn hold(&self, mut valid_until: tokio::time::Instant) {
        let poll = self.margin().max(Duration::from_secs(1));
        // The deadline is 4/5 of the duration after a renewal, the next renewal comes
        // `duration - grace` after it: read halfway between the two.
        let renew_after = self.duration - Duration::from_secs(grace_secs(self.duration));
        let before_deadline = (self.duration - self.margin()).saturating_sub(renew_after) / 2;
        loop {
            let now = tokio::time::Instant::now();
            let last_look = valid_until
                .checked_sub(before_deadline)
                .filter(|t| *t > now);
            let next = last_look.map_or(now + poll, |t| t.min(now + poll));
            tokio::select! {
                _ = tokio::time::sleep_until(valid_until) => return,
                _ = tokio::time::sleep_until(next) => {}
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

/// The fence on a paused clock, with the wall clock injected to follow it and the Lease read
/// from a fake API server.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;
    use serde_json::json;

    use super::super::testing;
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn base() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    /// Wall clock that follows tokio's paused clock from `base()`.
    fn clock() -> impl Fn() -> DateTime<Utc> + Clone + Send + Sync + 'static {
        let start = tokio::time::Instant::now();
        move || base() + (tokio::time::Instant::now() - start)
    }

    fn lease(holder: &str, renewed: DateTime<Utc>) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "regcred-refresher", "namespace": "ops"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": renewed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}
        }))
        .unwrap()
    }

    fn fence(
        client: kube::Client,
        now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Fence {
        let config = LeaderConfig {
            lease_name: "regcred-refresher".into(),
            lease_namespace: "ops".into(),
            identity: "me".into(),
            lease_duration: DURATION,
        };
        Fence::new(Api::namespaced(client, "ops"), &config, now)
    }

    /// How long `hold` holds, started with a renewal just confirmed (a hold that never ends
    /// fails the test after a virtual minute instead of hanging it).
    async fn held(fence: &Fence) -> Duration {
        let start = tokio::time::Instant::now();
        let hold = fence.hold(start + DURATION - fence.margin());
        tokio::time::timeout(Duration::from_secs(60), hold)
            .await
            .expect("the hold never ended");
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn writing_is_safe_until_four_fifths_of_the_duration_after_the_renewal() {
        let (client, _) = testing::no_server();
        let f = fence(client, base);
        let now = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let renewed = |ago_ms: i64| lease("me", base() - chrono::Duration::milliseconds(ago_ms));
        assert_eq!(f.valid_until(renewed(2_000)), Some(now + s(10)));
        assert_eq!(
            f.valid_until(renewed(12_000)),
            Some(now),
            "the last safe instant"
        );
        assert_eq!(f.valid_until(renewed(12_001)), None, "run out");
        // A renewal stamped ahead of our clock (skew) counts from its stamp.
        assert_eq!(f.valid_until(renewed(-1_000)), Some(now + s(13)));
        assert_eq!(f.valid_until(lease("other", base())), None, "not ours");
        assert_eq!(f.valid_until(Lease::default()), None, "no spec");
    }

    #[tokio::test(start_paused = true)]
    async fn hold_follows_confirmed_renewals_and_ends_a_margin_before_the_last_expires() {
        let now = clock();
        let renewals_stop = base() + chrono::Duration::seconds(30);
        let (client, log) = {
            let now = now.clone();
            testing::server(move |_| {
                (
                    200,
                    serde_json::to_value(lease("me", now().min(renewals_stop))).unwrap(),
                )
            })
        };
        assert_eq!(held(&fence(client, now)).await, Duration::from_secs(42));
        // One read per margin (3 s), and the last look between the renewal due and the deadline.
        let seen = testing::requests(&log);
        assert_eq!(seen.len(), 14, "{seen:?}");
        assert!(seen.iter().all(|s| s.line()
            == "GET /apis/coordination.k8s.io/v1/namespaces/ops/leases/regcred-refresher"));
    }

    /// The manager renews `duration - grace` after each renewal, not continuously: a holder
    /// whose renewals all land on time keeps writing.
    #[tokio::test(start_paused = true)]
    async fn renewals_on_the_managers_schedule_are_seen_before_each_deadline() {
        let now = clock();
        let every = DURATION - Duration::from_secs(grace_secs(DURATION));
        let (client, _) = {
            let now = now.clone();
            testing::server(move |_| {
                let elapsed = (now() - base()).to_std().unwrap();
                let renewals = elapsed.as_millis() / every.as_millis();
                let last = base() + chrono::Duration::from_std(every * renewals as u32).unwrap();
                (200, serde_json::to_value(lease("me", last)).unwrap())
            })
        };
        let f = fence(client, now);
        let start = tokio::time::Instant::now();
        let hold = f.hold(start + DURATION - f.margin());
        assert!(
            tokio::time::timeout(Duration::from_secs(600), hold)
                .await
                .is_err(),
            "the hold ended after {:?} although every renewal came on time",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_ends_the_hold_at_the_next_read() {
        let now = clock();
        let (client, _) = {
            let now = now.clone();
            testing::server(move |_| (200, serde_json::to_value(lease("other", now())).unwrap()))
        };
        assert_eq!(held(&fence(client, now)).await, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_fails_or_never_answers_leaves_the_deadline_to_decide() {
        let (client, _) = testing::server(|_| testing::status(503, "ServiceUnavailable"));
        assert_eq!(held(&fence(client, clock())).await, Duration::from_secs(12));

        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let unanswered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = unanswered.clone();
        tokio::spawn(async move {
            while let Some(pending) = handle.next_request().await {
                keep.lock().unwrap().push(pending);
            }
        });
        let client = kube::Client::new(service, "default");
        assert_eq!(held(&fence(client, clock())).await, Duration::from_secs(12));
        assert_eq!(
            unanswered.lock().unwrap().len(),
            1,
            "one read, left hanging"
        );
    }
}
