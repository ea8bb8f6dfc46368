//! The `--once` run: read what is live, fetch only the tokens some target needs, write the
//! targets that need it, report. Used by the CronJob, CI and a terminal.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use futures::future::join_all;
use tracing::warn;

use crate::config::{Config, WriteMode};
use crate::credentials::Credentials;
use crate::cycle::{CycleReport, NamespaceReport, NoCache, Plan, plan, write_namespace};
use crate::events::Events;
use crate::namespaces;
use crate::sources::Source;
use crate::writer::decide::Verdict;
use crate::writer::{LiveSecrets, Writer};

/// The `--once` job: every source fetched, every target written, once.
pub struct OnceRun {
    config: Config,
    sources: Vec<Source>,
    writer: Writer,
    client: kube::Client,
    events: Events,
    stop: tokio_util::sync::CancellationToken,
}

impl OnceRun {
    pub async fn new(config: Config, client: kube::Client) -> Self {
        let sources = crate::sources::build_all(&config.sources, config.provider_timeout).await;
        let writer = Writer::for_config(client.clone(), &config);
        // A dry run or diff changes nothing, so it reports nothing to the namespaces either.
        let events = Events::new(
            &client,
            config.daemon.events && config.write_mode == WriteMode::Apply,
        );
        Self {
            config,
            sources,
            writer,
            client,
            events,
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Once `stop` is cancelled no further namespace is started; writes under way finish.
    pub fn stopped_by(mut self, stop: tokio_util::sync::CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Reads what is live first, then fetches only the tokens some target needs: a run
    /// against fresh secrets costs no token call and no write. Static sources are always
    /// read (local files), since a changed value must land.
    pub async fn run_once(&self) -> CycleReport {
        let timeout = self.config.provider_timeout;
        let names: Vec<&str> = self
            .config
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let (statics, tokens): (Vec<&Source>, Vec<&Source>) =
            self.sources.iter().partition(|p| p.is_static());
        // Static values, targets and the live secrets do not depend on each other.
        let (read, resolution, live) = tokio::join!(
            join_all(statics.iter().map(|p| p.fetch(timeout))),
            namespaces::resolve(&self.client, &self.config.namespaces),
            self.writer.list_live(&names),
        );
        let mut report = CycleReport::default();
        report.record_fetches(&statics, read);
        let wanted = self.wanted(&report, &resolution, live.as_ref()).await;
        let (fetch, skip): (Vec<&Source>, Vec<&Source>) = tokens.into_iter().partition(|p| {
            self.config
                .secrets
                .iter()
                .any(|s| wanted.contains(&s.name) && s.sources.iter().any(|n| n == p.name()))
        });
        let fetched = join_all(fetch.iter().map(|p| p.fetch(timeout))).await;
        report.record_fetches(&fetch, fetched);
        report.not_needed = skip.iter().map(|p| p.name().to_string()).collect();
        let plan = {
            let by_name: BTreeMap<&str, &Credentials> = report
                .sources
                .iter()
                .filter_map(|(n, r)| r.as_ref().ok().map(|c| (n.as_str(), c)))
                .collect();
            plan(
                &self.config,
                |n| by_name.get(n).copied(),
                |s| wanted.contains(s),
            )
        };
        self.write_resolved(&plan, resolution, live, &mut report)
            .await;
        report
    }

    /// The secrets some target needs written, judged from the live secrets and the static
    /// values alone. Every secret when that cannot be judged: a forced or client-dry run, no
    /// list of live secrets (a namespaced install), or no targets resolved.
    async fn wanted(
        &self,
        report: &CycleReport,
        resolution: &Result<namespaces::Resolution, namespaces::NamespaceError>,
        live: Option<&LiveSecrets>,
    ) -> BTreeSet<String> {
        let all = || self.config.secrets.iter().map(|s| s.name.clone()).collect();
        let (Ok(resolution), Some(live)) = (resolution, live) else {
            return all();
        };
        if self.config.force || self.config.write_mode == WriteMode::DryRunClient {
            return all();
        }
        let by_name: BTreeMap<&str, &Credentials> = report
            .sources
            .iter()
            .filter_map(|(n, r)| r.as_ref().ok().map(|c| (n.as_str(), c)))
            .collect();
        let assess = plan(&self.config, |n| by_name.get(n).copied(), |_| false);
        let mut wanted = BTreeSet::new();
        for d in &assess.desired {
            let needed = resolution.targets.iter().any(|ns| {
                let cur = live.get(ns, &d.name);
                matches!(self.writer.verdict(cur.as_ref(), d), Verdict::Write(_))
            });
            if needed {
                wanted.insert(d.name.clone());
            }
        }
        wanted
    }

    /// Writes the planned secrets into the resolved targets with the live secrets read ahead,
    /// recording an Event on each secret that failed or that another owner holds.
    async fn write_resolved(
        &self,
        plan: &Plan,
        resolution: Result<namespaces::Resolution, namespaces::NamespaceError>,
        live: Option<LiveSecrets>,
        report: &mut CycleReport,
    ) {
        let (writer, config, events) = (&self.writer, &self.config, &self.events);
        let resolution = match resolution {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "namespace resolution failed");
                report.resolve_error = Some(e.to_string());
                return;
            }
        };
        // Reported once, with the summary (CycleReport::log_outcomes).
        report.missing = resolution.missing;
        report.skipped = resolution.skipped;
        report.secret_errors = plan
            .blocked
            .iter()
            .map(|(s, why)| format!("{s}: {why}"))
            .collect();
        let live = live.as_ref();
        let targets = resolution.targets.len();
        let mut done: Vec<NamespaceReport> = futures::stream::iter(resolution.targets)
            .take_until(self.stop.cancelled())
            .map(|ns| async move {
                let done = write_namespace(writer, config, ns, plan, live, &NoCache).await;
                events.for_namespace(&done).await;
                done
            })
            .buffer_unordered(config.concurrency)
            .collect()
            .await;
        done.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        if done.len() < targets {
            warn!(
                done = done.len(),
                not_started = targets - done.len(),
                "stopped before every namespace was written"
            );
            report.interrupted = true;
        }
        report.namespaces = done;
    }
}
