//! One timer per source: fetch, cache, and sleep until the next refresh (cron or expiry,
//! whichever comes first), or back off after a failure. A 1 h Google token never drags a
//! 12 h ECR token along, and a failed fetch never touches the cached (last good) credential.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::credentials::Credentials;
use crate::schedule::{self, Policy, Reason};
use crate::sources::SourceError;

/// Runs until `cancel`. `now` and `jitter` are injected so tests can run it on a paused clock.
pub async fn refresh_loop<F, Fut>(
    name: &str,
    policy: &Policy,
    mut fetch: F,
    mut on_result: impl FnMut(Result<Credentials, &SourceError>),
    now: impl Fn() -> DateTime<Utc>,
    jitter: impl Fn() -> f64,
    cancel: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Credentials, SourceError>>,
{
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = fetch() => r,
        };
        let wait: Duration = match result {
            Ok(creds) => {
                failures = 0;
                let (wait, reason) =
                    schedule::next_refresh(policy, now(), creds.expires_at, jitter());
                match reason {
                    Reason::Floor => warn!(
                        source = name,
                        expires_at = ?creds.expires_at,
                        next_in_secs = wait.as_secs(),
                        "credential arrived expired or about to expire (clock skew?); refreshing at the minimum interval"
                    ),
                    _ => {
                        info!(source = name, expires_at = ?creds.expires_at, next_in_secs = wait.as_secs(), reason = ?reason, "refreshed")
                    }
                }
                on_result(Ok(creds));
                wait
            }
            Err(e) => {
                let wait = schedule::backoff(policy, failures, jitter());
                failures = failures.saturating_add(1);
                warn!(source = name, error = %e, retry_in_ms = wait.as_millis() as u64, attempt = failures, "fetch failed; the last good credential stays in use");
                on_result(Err(&e));
                wait
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::TimeZone;

    use super::*;
    use crate::credentials::RegistryCredential;
    use crate::schedule::parse_cron;

    /// Wall clock that follows tokio's paused clock.
    fn clock() -> impl Fn() -> DateTime<Utc> + Clone + Send + 'static {
        let start = tokio::time::Instant::now();
        let base = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 30).unwrap();
        move || base + (tokio::time::Instant::now() - start)
    }

    fn policy() -> Policy {
        Policy {
            cron: parse_cron("0 0 * * *").unwrap(),
            margin: 0.25,
            min_interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(300),
            base_backoff: Duration::from_secs(1),
        }
    }

    type Script = Arc<Mutex<Vec<Result<i64, ()>>>>;

    /// A fake source: each call pops the next scripted result (lifetime in seconds, or a
    /// failure) and records when it was called.
    fn fake(
        script: Script,
        calls: Arc<Mutex<Vec<Duration>>>,
        now: impl Fn() -> DateTime<Utc> + Clone,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<Credentials, SourceError>> + Send>>
    {
        let start = tokio::time::Instant::now();
        move || {
            calls
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now() - start);
            let next = script.lock().unwrap().remove(0);
            let now = now();
            Box::pin(async move {
                match next {
                    Ok(life) => Ok(Credentials {
                        source: "s".into(),
                        entries: vec![RegistryCredential::new("h", "u", "p")],
                        expires_at: Some(now + chrono::Duration::seconds(life)),
                        issued_at: now,
                    }),
                    Err(()) => Err(SourceError::Timeout {
                        source_name: "s".into(),
                        after: Duration::from_secs(1),
                    }),
                }
            })
        }
    }

    async fn run_for(script: Vec<Result<i64, ()>>, total: Duration) -> (Vec<Duration>, usize) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let oks = Arc::new(Mutex::new(0usize));
        let cancel = CancellationToken::new();
        let now = clock();
        let fetch = fake(Arc::new(Mutex::new(script)), calls.clone(), now.clone());
        let p = policy();
        let oks2 = oks.clone();
        let task = {
            let cancel = cancel.clone();
            async move {
                refresh_loop(
                    "s",
                    &p,
                    fetch,
                    move |r| {
                        if r.is_ok() {
                            *oks2.lock().unwrap() += 1
                        }
                    },
                    now,
                    || 0.0,
                    cancel,
                )
                .await
            }
        };
        let handle = tokio::spawn(task);
        tokio::time::sleep(total).await;
        cancel.cancel();
        handle.await.unwrap();
        let calls = calls.lock().unwrap().clone();
        let oks = *oks.lock().unwrap();
        (calls, oks)
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_drives_the_refresh_of_a_one_hour_token() {
        let (calls, oks) = run_for(
            vec![Ok(3600), Ok(3600), Ok(3600), Ok(3600)],
            Duration::from_secs(2 * 3600),
        )
        .await;
        let mins: Vec<u64> = calls.iter().map(|d| d.as_secs() / 60).collect();
        assert_eq!(mins, [0, 45, 90], "refresh with a quarter of the hour left");
        assert_eq!(oks, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cron_drives_the_refresh_of_a_long_lived_token() {
        // 48 h tokens, daily cron at midnight: the first run is 30 s after midnight.
        let (calls, _) = run_for(vec![Ok(48 * 3600); 4], Duration::from_secs(50 * 3600)).await;
        let at: Vec<u64> = calls.iter().map(|d| d.as_secs()).collect();
        assert_eq!(at, [0, 24 * 3600 - 30, 48 * 3600 - 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_then_recover() {
        let script = vec![Err(()), Err(()), Err(()), Err(()), Ok(3600), Ok(3600)];
        let (calls, oks) = run_for(script, Duration::from_secs(50 * 60)).await;
        let ms: Vec<u128> = calls.iter().map(|d| d.as_millis()).collect();
        // zero jitter halves each delay: 0.5 s, 1 s, 2 s, 4 s, then the success schedule.
        assert_eq!(&ms[..5], [0, 500, 1500, 3500, 7500]);
        assert_eq!(ms[5], 7500 + 45 * 60 * 1000);
        assert_eq!(oks, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_refetched_at_the_floor_not_in_a_hot_loop() {
        let (calls, _) = run_for(vec![Ok(-10); 20], Duration::from_secs(299)).await;
        assert_eq!(calls.len(), 5, "one call per minute: {calls:?}");
    }
}
