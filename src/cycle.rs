//! The pipeline both modes share: [`plan`] renders each secret from the credentials at hand,
//! [`write_namespace`] writes what one namespace needs. `--once` ([`crate::once`]) runs it over
//! every target after fetching; the daemon's controller runs it per namespace from cached
//! credentials, so a restored secret never costs a token call. Partial failure is data: a
//! failing source or namespace is recorded in the [`CycleReport`] and never stops the others.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use tracing::{debug, info, warn};

use crate::config::{Config, SourceKind, WriteMode};
use crate::credentials::Credentials;
use crate::namespaces::Decision;
use crate::sources::{Source, SourceError};
use crate::writer::{
    Content, DesiredSecret, LiveSecrets, Payload, SaOutcome, SecretOutcome, WriteError, Writer,
};
use crate::{dockerconfig, fingerprint};

/// What the API server takes as a Secret's data, in bytes.
const SECRET_DATA_LIMIT: usize = 1 << 20;

/// The secrets to write this time, and those held back because a source is unavailable.
#[derive(Debug, Default)]
pub struct Plan {
    pub desired: Vec<DesiredSecret>,
    /// (secret, why): not written; the last good secret stays in place.
    pub blocked: Vec<(String, String)>,
}

/// Renders every configured secret whose sources all have credentials. A secret missing a
/// source is not written at all: writing it without that registry would break pulls that the
/// last good secret still serves. `wanted(secret)` says whether some target needs the secret
/// written; an unwanted secret whose tokens were not fetched is planned without content (it
/// is only assessed, never written). Static values are needed either way: they decide.
pub fn plan<'a>(
    config: &Config,
    creds: impl Fn(&str) -> Option<&'a Credentials>,
    wanted: impl Fn(&str) -> bool,
) -> Plan {
    let margin = config.daemon.policy.margin;
    let is_static = |n: &str| {
        config
            .sources
            .iter()
            .any(|c| c.name == n && matches!(c.kind, SourceKind::Static(_)))
    };
    let mut p = Plan::default();
    for s in &config.secrets {
        let found: Vec<(&str, Option<&Credentials>)> =
            s.sources.iter().map(|n| (n.as_str(), creds(n))).collect();
        let missing: Vec<&str> = found
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| *n)
            .collect();
        if missing.iter().any(|n| is_static(n)) || (!missing.is_empty() && wanted(&s.name)) {
            p.blocked.push((s.name.clone(), missing.join(",")));
            continue;
        }
        let have: Vec<&Credentials> = found.iter().filter_map(|(_, c)| *c).collect();
        let rendered = (|| -> Result<_, dockerconfig::DockerConfigError> {
            let mut pinned = BTreeMap::new();
            for c in have.iter().filter(|c| is_static(&c.source)) {
                // Reduced (username and digest): compared in every namespace, and never
                // holding a password longer than the render.
                pinned.extend(dockerconfig::auths_of(&dockerconfig::reduce(
                    &dockerconfig::render(c.entries.iter().map(|e| (c.source.as_str(), e)))?,
                )));
            }
            let content = if missing.is_empty() {
                let bytes = dockerconfig::render(
                    have.iter()
                        .flat_map(|c| c.entries.iter().map(move |e| (c.source.as_str(), e))),
                )?;
                Some(Content {
                    payload: Payload::new(bytes),
                    expires_at: have.iter().filter_map(|c| c.expires_at).min(),
                    refresh_after: have.iter().filter_map(|c| c.refresh_after(margin)).min(),
                })
            } else {
                None
            };
            Ok((pinned, content))
        })();
        let too_big = rendered.as_ref().ok().and_then(|(_, c)| {
            let len = c.as_ref()?.payload.bytes().len();
            (len > SECRET_DATA_LIMIT).then_some(len)
        });
        if let Some(len) = too_big {
            warn!(secret = %s.name, bytes = len, "rendered secret too large");
            p.blocked.push((
                s.name.clone(),
                format!(
                    "{} (the .dockerconfigjson is {len} bytes, more than the 1 MiB a Secret holds; fix: split the registries over several secrets)",
                    s.sources.join(",")
                ),
            ));
            continue;
        }
        match rendered {
            Ok((pinned, content)) => p.desired.push(DesiredSecret {
                name: s.name.clone(),
                sources: s.sources.clone(),
                adopt: s.adopt,
                fingerprint: fingerprint::of_secret(s, &config.sources),
                expires: fingerprint::expires(s, &config.sources),
                pinned,
                content,
            }),
            Err(e) => {
                warn!(secret = %s.name, error = %e, "cannot render secret");
                p.blocked
                    .push((s.name.clone(), format!("{} ({e})", s.sources.join(","))));
            }
        }
    }
    p
}

#[derive(Debug)]
pub struct NamespaceReport {
    pub namespace: String,
    pub secrets: Vec<(String, SecretOutcome)>,
    pub service_accounts: Vec<(String, SaOutcome)>,
    pub manifests: Vec<String>,
    pub diffs: Vec<String>,
    /// The earliest renewal time among the secrets kept here.
    pub due: Option<DateTime<Utc>>,
}

/// Writes every planned secret into one namespace, then references them from the configured
/// ServiceAccounts.
pub async fn write_namespace(
    writer: &Writer,
    config: &Config,
    namespace: String,
    plan: &Plan,
    live: Option<&LiveSecrets>,
    accounts: &dyn KnownServiceAccounts,
) -> NamespaceReport {
    let mut r = NamespaceReport {
        namespace,
        secrets: Vec::new(),
        service_accounts: Vec::new(),
        manifests: Vec::new(),
        diffs: Vec::new(),
        due: None,
    };
    for d in &plan.desired {
        let w = writer.write_secret(&r.namespace, d, live).await;
        r.manifests.extend(w.manifest);
        r.diffs.extend(w.diff);
        r.due = r.due.into_iter().chain(w.due).min();
        r.secrets.push((d.name.clone(), w.outcome));
    }
    for (secret, sources) in &plan.blocked {
        let e = WriteError::SourceFailed {
            secret: secret.clone(),
            sources: sources.clone(),
        };
        r.secrets.push((secret.clone(), SecretOutcome::Failed(e)));
    }
    let in_place: Vec<&str> = r
        .secrets
        .iter()
        .filter(|(_, o)| o.in_place())
        .map(|(n, _)| n.as_str())
        .collect();
    if !in_place.is_empty() && config.write_mode != WriteMode::DryRunClient {
        for sa in &config.service_accounts {
            let o = match accounts.references(&r.namespace, sa) {
                Known::Absent => SaOutcome::Missing,
                Known::References(refs) if in_place.iter().all(|s| refs.iter().any(|r| r == s)) => {
                    SaOutcome::Unchanged
                }
                _ => {
                    writer
                        .reference_from_service_account(&r.namespace, sa, &in_place)
                        .await
                }
            };
            if config.write_mode == WriteMode::Diff
                && let SaOutcome::Patched(added) = &o
            {
                r.diffs.push(format!(
                    "{}/serviceaccount {sa}: would add imagePullSecrets {}",
                    r.namespace,
                    added.join(",")
                ));
            }
            r.service_accounts.push((sa.clone(), o));
        }
    }
    r
}

/// What is already known of a ServiceAccount without asking the API server (the daemon's
/// watch holds it), so an unchanged one costs no request.
pub enum Known {
    Unknown,
    Absent,
    References(Vec<String>),
}

pub trait KnownServiceAccounts: Sync {
    fn references(&self, namespace: &str, service_account: &str) -> Known;
}

/// Nothing is known: every ServiceAccount is read (`--once`).
pub struct AskTheServer;

impl KnownServiceAccounts for AskTheServer {
    fn references(&self, _: &str, _: &str) -> Known {
        Known::Unknown
    }
}

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

/// Outcomes of the given namespaces, added up.
pub fn totals_of(namespaces: &[NamespaceReport]) -> Totals {
    let mut t = Totals::default();
    for ns in namespaces {
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
    }
    t
}

impl CycleReport {
    pub(crate) fn record_fetches(
        &mut self,
        providers: &[&Source],
        results: Vec<Result<Credentials, SourceError>>,
    ) {
        for (p, r) in providers.iter().zip(results) {
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

    /// 0 when every target is written or unchanged, 1 when anything failed.
    pub fn success(&self) -> bool {
        let t = self.totals();
        self.resolve_error.is_none()
            && !self.interrupted
            && self.sources.iter().all(|(_, r)| r.is_ok())
            && self.secret_errors.is_empty()
            && t.failed == 0
            && t.conflict == 0
            && t.missing == 0
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
                        "conflict: a secret of that name exists and is not managed by regcred-refresher; left untouched (set adopt: true on the secret to take it over)"
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
