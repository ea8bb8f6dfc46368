//! The daemon's flags (schedule, backoff, leader election), checked even in `--once` runs so
//! a bad value fails at deploy time rather than when the Deployment first runs as a daemon.

use std::time::Duration;

use super::{DaemonConfig, LeaderConfig};
use crate::config_error::{Checked, ConfigError};
use crate::input as environment;
use crate::names::{dns_label, dns_subdomain};

/// `margin`: the renewal margin, checked with the flags both modes read.
pub(super) fn settings(d: &crate::cli::Daemon, margin: f64) -> Checked<DaemonConfig> {
    let cron = crate::schedule::parse_cron(&d.schedule).map_err(|e| {
        ConfigError::invalid(
            "--schedule",
            &e.to_string(),
            "use minute hour day-of-month month day-of-week in UTC, e.g. \"0 * * * *\"",
        )
    })?;
    if d.min_refresh_interval == 0
        || d.max_backoff == 0
        || d.max_backoff < d.min_refresh_interval.min(5)
    {
        return Err(ConfigError::invalid(
            "--min-refresh-interval/--max-backoff",
            &format!("{} / {} seconds", d.min_refresh_interval, d.max_backoff),
            "use positive numbers of seconds (defaults: 60 and 300)",
        ));
    }
    if !(1..=3600).contains(&d.shutdown_timeout) {
        return Err(ConfigError::invalid(
            "--shutdown-timeout",
            &format!("{} is out of range", d.shutdown_timeout),
            "use 1 to 3600 seconds",
        ));
    }
    let leader = if d.leader_election {
        dns_subdomain("--lease-name", &d.lease_name, "Lease name")?;
        if !(5..=3600).contains(&d.lease_duration) {
            return Err(ConfigError::invalid(
                "--lease-duration",
                &format!("{} is out of range", d.lease_duration),
                "use 5 to 3600 seconds (default 15)",
            ));
        }
        let namespace = d
            .lease_namespace
            .clone()
            .or_else(environment::pod_namespace)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "--lease-namespace",
                    "not set, no POD_NAMESPACE and not running in a pod",
                    "pass --lease-namespace (the chart sets POD_NAMESPACE)",
                )
            })?;
        dns_label("--lease-namespace", &namespace, "namespace")?;
        let identity = environment::pod_identity();
        Some(LeaderConfig {
            lease_name: d.lease_name.clone(),
            lease_namespace: namespace,
            identity,
            lease_duration: Duration::from_secs(d.lease_duration),
        })
    } else {
        None
    };
    if !d.prune && d.prune_secret_names.iter().any(|n| !n.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "--prune-secret-names",
            "given without --prune, so nothing would be pruned",
            "add --prune (REGCRED_PRUNE=true), or drop --prune-secret-names",
        ));
    }
    let mut prune_also = Vec::new();
    for name in d
        .prune_secret_names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
    {
        dns_subdomain("--prune-secret-names", name, "secret name")?;
        prune_also.push(name.to_string());
    }
    Ok(DaemonConfig {
        policy: crate::schedule::Policy {
            cron,
            margin,
            min_interval: Duration::from_secs(d.min_refresh_interval),
            max_backoff: Duration::from_secs(d.max_backoff),
            base_backoff: Duration::from_secs(1),
        },
        admin_addr: d.admin_addr,
        leader,
        prune: d.prune,
        prune_also,
        events: d.events,
        shutdown_timeout: Duration::from_secs(d.shutdown_timeout),
    })
}
