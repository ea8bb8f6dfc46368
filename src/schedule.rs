//! When to refresh a source: at the earlier of the user's cron schedule and the moment a
//! configured fraction of the credential's lifetime remains, never sooner than a floor, with
//! jitter; after a failure, exponential backoff with jitter, capped. Pure functions: the
//! daemon's timers feed them the clock.
//!
//! croner computes the cron times (5 fields, UTC, like a Kubernetes CronJob) inside our own
//! tokio loop: tokio-cron-scheduler wants a seconds field, lets runs overlap and returns from
//! `shutdown()` while a job still runs, none of which a refresher can accept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a usable 5-field cron expression ({1})")]
pub struct ScheduleError(String, String);

pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    if expr.split_whitespace().count() != 5 {
        return Err(ScheduleError(
            expr.into(),
            "it needs exactly 5 fields".into(),
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| ScheduleError(expr.into(), e.to_string()))?;
    // A valid expression can name a date that never comes (31 February); refreshes would then
    // run only on the expiry margin, or on a fallback no one asked for.
    if cron.find_next_occurrence(&Utc::now(), false).is_err() {
        return Err(ScheduleError(
            expr.into(),
            "it never fires: no date matches it".into(),
        ));
    }
    Ok(cron)
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub cron: Cron,
    /// Fraction of the lifetime left at which to refresh (0.25: with a quarter left).
    pub margin: f64,
    pub min_interval: Duration,
    pub max_backoff: Duration,
    /// First retry delay after a failure.
    pub base_backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Cron,
    Expiry,
    /// The floor won: the credential arrived expired or nearly so (clock skew, a provider
    /// handing out an old token). Worth a warning, never a hot loop.
    Floor,
}

/// How long to wait after a successful fetch at `now`, for a credential valid until
/// `expires_at` (`None`: it does not expire). `jitter` is uniform in [0, 1).
pub fn next_refresh(
    policy: &Policy,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    jitter: f64,
) -> (Duration, Reason) {
    let cron_wait = policy
        .cron
        .find_next_occurrence(&now, false)
        .ok()
        .and_then(|t| (t - now).to_std().ok())
        .unwrap_or(Duration::from_secs(24 * 3600));
    let expiry_wait = expires_at.map(|exp| {
        let lifetime = (exp - now).to_std().unwrap_or_default();
        lifetime.mul_f64((1.0 - policy.margin).clamp(0.0, 1.0))
    });
    let (mut wait, reason) = match expiry_wait {
        Some(e) if e < cron_wait => {
            // Up to 10% earlier, so replicas of many refreshers do not call at one instant.
            (
                e.mul_f64(1.0 - 0.1 * jitter.clamp(0.0, 1.0)),
                Reason::Expiry,
            )
        }
        _ => (cron_wait, Reason::Cron),
    };
    let mut reason = reason;
    if wait < policy.min_interval {
        // A short-lived credential (a GKE metadata token handed out with minutes left) is
        // still replaced before it expires: the floor never holds it past its expiry. An
        // expired one (a failed fetch in practice) waits the whole floor: no hot loop.
        let before_expiry = expiry_wait
            .filter(|e| !e.is_zero())
            .map(|e| e.max(Duration::from_secs(1)));
        wait = before_expiry.map_or(policy.min_interval, |e| e.min(policy.min_interval));
        reason = Reason::Floor;
    }
    (wait, reason)
}

/// Delay before retry number `attempt` (0 for the first retry): doubling from the base,
/// capped, then scaled by a jitter factor in [0.5, 1).
pub fn backoff(policy: &Policy, attempt: u32, jitter: f64) -> Duration {
    let raw = policy
        .base_backoff
        .saturating_mul(2u32.saturating_pow(attempt.min(20)));
    raw.min(policy.max_backoff)
        .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn policy(cron: &str) -> Policy {
        Policy {
            cron: parse_cron(cron).unwrap(),
            margin: 0.25,
            min_interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(300),
            base_backoff: Duration::from_secs(1),
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    #[test]
    fn a_google_token_is_refreshed_with_a_quarter_of_its_life_left() {
        let p = policy("0 */6 * * *");
        let (wait, why) = next_refresh(&p, at(10, 0), Some(at(11, 0)), 0.0);
        assert_eq!((wait, why), (Duration::from_secs(45 * 60), Reason::Expiry));
    }

    #[test]
    fn the_cron_wins_when_it_comes_first() {
        let p = policy("30 * * * *");
        let (wait, why) = next_refresh(&p, at(10, 0), Some(at(22, 0)), 0.0);
        assert_eq!((wait, why), (Duration::from_secs(30 * 60), Reason::Cron));
        let (wait, _) = next_refresh(&p, at(10, 0), None, 0.9);
        assert_eq!(
            wait,
            Duration::from_secs(30 * 60),
            "no jitter on the user's own schedule"
        );
    }

    #[test]
    fn a_token_with_seconds_left_is_replaced_before_it_expires() {
        let p = policy("0 0 * * *");
        let now = at(10, 0);
        let (wait, reason) = next_refresh(&p, now, Some(now + chrono::Duration::seconds(40)), 0.0);
        assert_eq!((wait, reason), (Duration::from_secs(30), Reason::Floor));
        let (wait, _) = next_refresh(&p, now, Some(now + chrono::Duration::seconds(300)), 0.0);
        assert_eq!(
            wait,
            Duration::from_secs(225),
            "a quarter of 5 minutes left"
        );
    }

    #[test]
    fn an_expired_token_hits_the_floor_not_a_hot_loop() {
        let p = policy("* * * * *");
        // moto's ECR tokens always say 2015-01-01.
        let long_ago = Utc.with_ymd_and_hms(2015, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            next_refresh(&p, at(10, 0), Some(long_ago), 0.5),
            (Duration::from_secs(60), Reason::Floor)
        );
        assert_eq!(
            next_refresh(&p, at(10, 0), Some(at(10, 0)), 0.5).1,
            Reason::Floor
        );
    }

    #[test]
    fn jitter_only_ever_brings_an_expiry_refresh_forward_by_up_to_ten_percent() {
        let p = policy("0 0 1 1 *");
        let exact = Duration::from_secs(9 * 3600);
        for j in [0.0, 0.3, 0.999] {
            let (wait, _) = next_refresh(&p, at(0, 0), Some(at(12, 0)), j);
            assert!(
                wait <= exact && wait >= exact.mul_f64(0.9),
                "{wait:?} for {j}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_caps_with_bounded_jitter() {
        let p = policy("0 * * * *");
        let growth: Vec<u64> = (0..11)
            .map(|a| backoff(&p, a, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(
            growth,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000, 150000
            ]
        );
        for a in 0..12 {
            let full = p.base_backoff.saturating_mul(1 << a).min(p.max_backoff);
            for j in [0.0, 0.5, 0.999] {
                let b = backoff(&p, a, j);
                assert!(
                    b >= full / 2 && b < full || full.is_zero(),
                    "attempt {a} jitter {j}: {b:?} vs {full:?}"
                );
            }
        }
        assert_eq!(
            backoff(&p, 30, 0.0),
            Duration::from_secs(150),
            "capped at max, halved by zero jitter"
        );
        assert_eq!(backoff(&p, 3, 0.0), Duration::from_secs(4));
    }

    #[test]
    fn cron_must_have_five_fields() {
        assert!(parse_cron("0 * * * *").is_ok());
        assert!(
            parse_cron("0 0 * * * *")
                .unwrap_err()
                .to_string()
                .contains("5 fields")
        );
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("@hourly").is_err());
    }

    /// Issue 26 item 7: a date that never comes is refused, not left to a silent fallback;
    /// rare but real dates (29 February) are kept.
    #[test]
    fn a_cron_that_never_fires_is_refused() {
        for never in ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            let err = parse_cron(never).unwrap_err().to_string();
            assert!(err.contains("never fires"), "{never}: {err}");
        }
        for rare in ["0 0 29 2 *", "0 0 31 12 *", "0 0 13 * 5"] {
            assert!(parse_cron(rare).is_ok(), "{rare}");
        }
    }
}
