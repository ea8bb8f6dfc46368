//! Prometheus metrics, all prefixed `regcred_`, rendered in the text format by the admin
//! server. Per-source gauges are derived from the credential cache at scrape time so that
//! "seconds until expiry" is always current.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceResult {
    pub source: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub refreshes: Family<SourceResult, Counter>,
    pub expires_in: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    pub last_success: Family<SourceLabel, Gauge<f64, AtomicU64>>,
    pub writes: Family<ResultLabel, Counter>,
    pub target_namespaces: Gauge,
    pub cycle_duration: Histogram,
    pub leader: Gauge,
    pub runtime_tasks: Gauge,
    pub remembered_objects: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("regcred");
        let refreshes = Family::<SourceResult, Counter>::default();
        registry.register(
            "refreshes",
            "Credential fetches by source and result",
            refreshes.clone(),
        );
        let expires_in = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "credential_expiry_seconds",
            "Seconds until the cached credential of each source expires (negative: expired)",
            expires_in.clone(),
        );
        let last_success = Family::<SourceLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful fetch per source",
            last_success.clone(),
        );
        let writes = Family::<ResultLabel, Counter>::default();
        registry.register(
            "secret_writes",
            "Secret reconciliations by result",
            writes.clone(),
        );
        let target_namespaces = Gauge::default();
        registry.register(
            "target_namespaces",
            "Namespaces currently targeted",
            target_namespaces.clone(),
        );
        let cycle_duration =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "cycle_duration_seconds",
            "Duration of a full refresh cycle",
            cycle_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this instance holds the lease (or runs without election)",
            leader.clone(),
        );
        // Sampled at scrape time: a leak of tasks (a watch or timer spawned per cycle and never
        // ended) shows as a climbing line long before memory does.
        let runtime_tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tokio tasks alive in the process",
            runtime_tasks.clone(),
        );
        // Our own writes are recognised on the watches by what we remember of them; this must
        // follow the live objects, not grow with every namespace ever seen.
        let remembered_objects = Gauge::default();
        registry.register(
            "remembered_objects",
            "Objects whose last written or verified version the daemon remembers",
            remembered_objects.clone(),
        );
        Self {
            registry,
            refreshes,
            expires_in,
            last_success,
            writes,
            target_namespaces,
            cycle_duration,
            leader,
            runtime_tasks,
            remembered_objects,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Samples the tokio task count; call before [`Metrics::encode`] inside the runtime.
    pub fn sample_runtime(&self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tasks = handle.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
    }

    /// A source's fetch succeeded at `unix_secs`.
    pub fn fetched(&self, source: &str, unix_secs: f64) {
        self.count_fetch(source, "success");
        self.last_success
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .set(unix_secs);
    }

    /// A source's fetch failed, labelled as its error says.
    pub fn fetch_failed(&self, source: &str, label: &str) {
        self.count_fetch(source, label);
    }

    fn count_fetch(&self, source: &str, result: &str) {
        self.refreshes
            .get_or_create(&SourceResult {
                source: source.into(),
                result: result.into(),
            })
            .inc();
    }

    /// A secret was written, found unchanged, left alone or failed (`outcome`'s label).
    pub fn secret_outcome(&self, outcome: &str) {
        self.count_write(outcome);
    }

    /// A ServiceAccount reference could not be added.
    pub fn service_account_failed(&self) {
        self.count_write("serviceaccount_failed");
    }

    /// A managed secret was pruned.
    pub fn pruned(&self) {
        self.count_write("pruned");
    }

    fn count_write(&self, result: &str) {
        self.writes
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// This replica leads (or stopped leading).
    pub fn leading(&self, yes: bool) {
        self.leader.set(i64::from(yes));
    }

    /// A pass over `targets` namespaces ended after `took`.
    pub fn pass_done(&self, targets: usize, took: std::time::Duration) {
        self.cycle_duration.observe(took.as_secs_f64());
        self.target_namespaces
            .set(i64::try_from(targets).unwrap_or(i64::MAX));
    }
}

/// Observes the cycle duration when dropped, however the cycle ends.
pub struct CycleTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl<'a> CycleTimer<'a> {
    pub fn start(histogram: &'a Histogram) -> Self {
        Self {
            histogram,
            start: Instant::now(),
        }
    }
}

impl Drop for CycleTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_text_format() {
        let m = Metrics::default();
        m.fetched("ecr", 1.0e9);
        m.fetch_failed("ecr", "timeout");
        m.secret_outcome("created");
        m.pruned();
        m.leading(true);
        m.expires_in
            .get_or_create(&SourceLabel {
                source: "ecr".into(),
            })
            .set(42.5);
        drop(CycleTimer::start(&m.cycle_duration));
        let text = m.encode();
        assert!(
            text.contains("regcred_refreshes_total{source=\"ecr\",result=\"success\"} 1"),
            "{text}"
        );
        for line in [
            "regcred_secret_writes_total{result=\"created\"} 1",
            "regcred_secret_writes_total{result=\"pruned\"} 1",
            "regcred_refreshes_total{source=\"ecr\",result=\"timeout\"} 1",
            "regcred_last_success_timestamp_seconds{source=\"ecr\"} 1000000000",
            "regcred_leader 1",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(
            text.contains("regcred_credential_expiry_seconds{source=\"ecr\"} 42.5"),
            "{text}"
        );
        assert!(
            text.contains("regcred_cycle_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn samples_the_live_task_count() {
        let m = Metrics::default();
        let parked = tokio::spawn(std::future::pending::<()>());
        m.sample_runtime();
        assert!(m.runtime_tasks.get() >= 1);
        assert!(m.encode().contains("regcred_runtime_tasks "));
        parked.abort();
    }
}
