//! The report of a run: what each source, namespace and secret came to, the totals that add
//! up from it, the exit decision, and the log lines and outputs that show it. Built once per
//! `--once` run, and per reconcile (one namespace) in the daemon.

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::NamespaceReport;
use crate::config::WriteMode;
use crate::credentials::Credentials;
use crate::namespaces::Decision;
use crate::sources::{Source, SourceError};
pub use crate::writer::decide::conflict_note;
use crate::writer::{SaOutcome, SecretOutcome, WriteError};

#[derive(Debug, Default)]
pub struct CycleReport {
    pub sources: Vec<(String, Result<Credentials, SourceError>)>,
    /// Token sources not fetched because every target of theirs is fresh.
    pub not_needed: Vec<String>,
    pub namespaces: Vec<NamespaceReport>,
    pub missing: Vec<String>,
    pub skipped: Vec<(String, Decision)>,
    pub resolve_error: Option<String>,
    pub secret_errors: Vec<String>,
    /// Stopped before every target was written (SIGTERM): the run fails.
    pub interrupted: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub conflict: usize,
    pub failed: usize,
    pub skipped: usize,
    pub missing: usize,
}

impl Totals {
    /// The outcomes of one namespace.
    pub fn of(ns: &NamespaceReport) -> Self {
        let mut t = Self::default();
        for (_, o) in &ns.secrets {
            match o {
                SecretOutcome::Created => t.created += 1,
                SecretOutcome::Updated(_) => t.updated += 1,
                SecretOutcome::Unchanged => t.unchanged += 1,
                SecretOutcome::Conflict => t.conflict += 1,
                SecretOutcome::Failed(_) => t.failed += 1,
            }
        }
        t.failed += ns
            .service_accounts
            .iter()
            .filter(|(_, o)| matches!(o, SaOutcome::Failed(_)))
            .count();
        t
    }
}

/// Totals add up field by field, so a daemon pass and a `--once` run count alike.
impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Self) {
        self.created += o.created;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.conflict += o.conflict;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.missing += o.missing;
    }
}

/// Outcomes of the given namespaces, added up.
pub fn totals_of(namespaces: &[NamespaceReport]) -> Totals {
    let mut t = Totals::default();
    for ns in namespaces {
        t += Totals::of(ns);
    }
    t
}

impl CycleReport {
    pub(crate) fn record_fetches(
        &mut self,
        sources: &[&Source],
        results: Vec<Result<Credentials, SourceError>>,
    ) {
        for (p, r) in sources.iter().zip(results) {
            if let Err(e) = &r {
                warn!(source = p.name(), error = %e, reason = e.metric_label(), "fetch failed");
            }
            self.sources.push((p.name().to_string(), r));
        }
    }

    /// The earliest renewal time among every secret this cycle kept.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.namespaces.iter().filter_map(|n| n.due).min()
    }

    pub fn totals(&self) -> Totals {
        Totals {
            skipped: self.skipped.len(),
            missing: self.missing.len(),
            ..totals_of(&self.namespaces)
        }
    }

    /// Whether every source was read and the targets resolved: what `--fail-on=sources`
    /// asks of a run. Target-side problems (conflicts, missing or forbidden namespaces) do
    /// not count.
    pub fn sources_ok(&self) -> bool {
        self.resolve_error.is_none()
            && !self.interrupted
            && self.sources.iter().all(|(_, r)| r.is_ok())
            && self.secret_errors.is_empty()
            && !self.namespaces.iter().any(|ns| {
                ns.secrets.iter().any(|(_, o)| {
                    matches!(o, SecretOutcome::Failed(WriteError::SourceFailed { .. }))
                })
            })
    }

    /// 0 when every target is written or unchanged, 1 when anything failed: what
    /// `sources_ok` asks, and no target-side problem either (a secret held back for a source
    /// also counts as failed in the totals).
    pub fn success(&self) -> bool {
        let t = self.totals();
        self.sources_ok() && t.failed == 0 && t.conflict == 0 && t.missing == 0
    }

    /// Logs the end-of-run summary: one line per namespace, then the totals.
    /// `per_namespace`: one line for every namespace (the `--once` summary); otherwise only
    /// changes and failures (the daemon, every cycle).
    pub fn log_summary(&self, mode: WriteMode, per_namespace: bool) {
        self.log_outcomes(mode, per_namespace);
        self.log_totals();
    }

    pub fn log_outcomes(&self, mode: WriteMode, per_namespace: bool) {
        let verb = if mode == WriteMode::Apply {
            ""
        } else {
            "would be "
        };
        for (source, r) in &self.sources {
            match r {
                Ok(c) => info!(
                    source = %source,
                    registries = c.entries.len(),
                    expires_at = %c.expires_at.map_or_else(|| "never".to_string(), |t| t.to_rfc3339()),
                    "source ok"
                ),
                Err(e) => warn!(source = %source, error = %e, "source failed"),
            }
        }
        for source in &self.not_needed {
            info!(source = %source, "not fetched: every target holds fresh credentials");
        }
        for ns in &self.namespaces {
            for (secret, o) in &ns.secrets {
                match o {
                    SecretOutcome::Failed(e) => {
                        warn!(namespace = %ns.namespace, secret = %secret, reason = e.metric_label(), error = %e, "failed")
                    }
                    SecretOutcome::Conflict => warn!(
                        namespace = %ns.namespace,
                        secret = %secret,
                        "{}",
                        conflict_note(secret)
                    ),
                    SecretOutcome::Updated(c) => {
                        info!(namespace = %ns.namespace, secret = %secret, changes = %c.join("; "), "{verb}updated")
                    }
                    SecretOutcome::Created => {
                        info!(namespace = %ns.namespace, secret = %secret, "{verb}created")
                    }
                    SecretOutcome::Unchanged if per_namespace => {
                        info!(namespace = %ns.namespace, secret = %secret, "unchanged")
                    }
                    SecretOutcome::Unchanged => {
                        debug!(namespace = %ns.namespace, secret = %secret, "unchanged")
                    }
                }
            }
            for (sa, o) in &ns.service_accounts {
                match o {
                    SaOutcome::Patched(added) => {
                        info!(namespace = %ns.namespace, service_account = %sa, added = %added.join(","), "serviceaccount {verb}patched")
                    }
                    SaOutcome::Unchanged => {
                        debug!(namespace = %ns.namespace, service_account = %sa, "serviceaccount unchanged")
                    }
                    SaOutcome::Missing => {
                        warn!(namespace = %ns.namespace, service_account = %sa, "serviceaccount not found; not creating it")
                    }
                    SaOutcome::Failed(e) => {
                        warn!(namespace = %ns.namespace, service_account = %sa, error = %e, "serviceaccount patch failed")
                    }
                }
            }
        }
        for (ns, why) in self.skipped.iter().filter(|_| per_namespace) {
            info!(namespace = %ns, reason = ?why, "skipped");
        }
        for ns in &self.missing {
            warn!(namespace = %ns, "missing: named in namespaces.include but does not exist");
        }
        if let Some(e) = &self.resolve_error {
            warn!(error = %e, "no namespace was written");
        }
    }

    /// `--dry-run=client`: the manifests; `--diff`: the changes, on stdout.
    pub fn print_outputs(&self, mode: WriteMode) {
        for ns in &self.namespaces {
            match mode {
                WriteMode::DryRunClient => ns.manifests.iter().for_each(|m| print!("---\n{m}")),
                WriteMode::Diff => ns.diffs.iter().for_each(|d| println!("{d}")),
                _ => {}
            }
        }
    }

    pub fn log_totals(&self) {
        log_totals(&self.totals(), self.namespaces.len());
    }
}

/// The `cycle finished` line, for a `--once` run and for each daemon pass.
pub fn log_totals(t: &Totals, namespaces: usize) {
    info!(
        created = t.created,
        updated = t.updated,
        unchanged = t.unchanged,
        skipped = t.skipped,
        failed = t.failed,
        conflict = t.conflict,
        missing = t.missing,
        namespaces,
        "cycle finished"
    );
}
