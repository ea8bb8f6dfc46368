//! One refresh cycle: fetch every source once, render each secret, resolve the target
//! namespaces and write them with bounded concurrency. Partial failure is data: a failing
//! source or namespace is recorded in the [`CycleReport`] and never stops the others.
//!
//! The daemon reuses [`plan`], [`write_namespace`] and [`write_resolved`] with its cached
//! credentials, so a restored secret never costs a token call.

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::future::join_all;
use tracing::{debug, info, warn};

use crate::config::{Config, SecretConfig, WriteMode};
use crate::credentials::Credentials;
use crate::dockerconfig;
use crate::namespaces::{self, Decision};
use crate::providers::{Provider, ProviderError};
use crate::writer::{DesiredSecret, Live, Payload, SaOutcome, SecretOutcome, WriteError, Writer};

/// The secrets to write this time, and those held back because a source is unavailable.
#[derive(Debug, Default)]
pub struct Plan {
    pub desired: Vec<DesiredSecret>,
    /// (secret, why): not written; the last good secret stays in place.
    pub blocked: Vec<(String, String)>,
}

/// Renders every configured secret whose sources all have credentials. A secret missing a
/// source is not written at all: writing it without that registry would break pulls that the
/// last good secret still serves.
pub fn plan<'a>(secrets: &[SecretConfig], creds: impl Fn(&str) -> Option<&'a Credentials>) -> Plan {
    let mut p = Plan::default();
    for s in secrets {
        let found: Vec<Option<&Credentials>> = s.sources.iter().map(|n| creds(n)).collect();
        let failed: Vec<&str> = s
            .sources
            .iter()
            .zip(&found)
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !failed.is_empty() {
            p.blocked.push((s.name.clone(), failed.join(",")));
            continue;
        }
        let creds: Vec<&Credentials> = found.into_iter().flatten().collect();
        let rendered = dockerconfig::render(
            creds
                .iter()
                .flat_map(|c| c.entries.iter().map(move |e| (c.source.as_str(), e))),
        );
        match rendered {
            Ok(bytes) => p.desired.push(DesiredSecret {
                name: s.name.clone(),
                payload: Payload::new(bytes),
                sources: s.sources.clone(),
                expires_at: creds.iter().filter_map(|c| c.expires_at).min(),
                adopt: s.adopt,
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
}

/// Writes every planned secret into one namespace, then references them from the configured
/// ServiceAccounts.
pub async fn write_namespace(
    writer: &Writer,
    config: &Config,
    namespace: String,
    plan: &Plan,
    live: Option<&Live>,
) -> NamespaceReport {
    let mut r = NamespaceReport {
        namespace,
        secrets: Vec::new(),
        service_accounts: Vec::new(),
        manifests: Vec::new(),
        diffs: Vec::new(),
    };
    for d in &plan.desired {
        let (outcome, printed) = writer.write_secret(&r.namespace, d, live).await;
        r.manifests.extend(printed.manifest);
        r.diffs.extend(printed.diff);
        r.secrets.push((d.name.clone(), outcome));
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
            let o = writer
                .reference_from_service_account(&r.namespace, sa, &in_place)
                .await;
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

/// Writes the planned secrets into the resolved targets with the live secrets read ahead.
pub async fn write_resolved(
    writer: &Writer,
    config: &Config,
    plan: &Plan,
    resolution: Result<namespaces::Resolution, namespaces::NamespaceError>,
    live: Option<Live>,
    report: &mut CycleReport,
) {
    let resolution = match resolution {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "namespace resolution failed");
            report.resolve_error = Some(e.to_string());
            return;
        }
    };
    for m in &resolution.missing {
        warn!(namespace = %m, "configured namespace does not exist; not creating it");
    }
    report.missing = resolution.missing;
    report.skipped = resolution.skipped;
    report.secret_errors = plan
        .blocked
        .iter()
        .map(|(s, why)| format!("{s}: {why}"))
        .collect();
    let live = live.as_ref();
    let mut done: Vec<NamespaceReport> = futures::stream::iter(resolution.targets)
        .map(|ns| write_namespace(writer, config, ns, plan, live))
        .buffer_unordered(config.concurrency)
        .collect()
        .await;
    done.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    report.namespaces = done;
}

/// The `--once` job: every source fetched, every target written, once.
pub struct Refresher {
    config: Config,
    providers: Vec<Provider>,
    writer: Writer,
    client: kube::Client,
}

#[derive(Debug, Default)]
pub struct CycleReport {
    pub sources: Vec<(String, Result<Credentials, ProviderError>)>,
    pub namespaces: Vec<NamespaceReport>,
    pub missing: Vec<String>,
    pub skipped: Vec<(String, Decision)>,
    pub resolve_error: Option<String>,
    pub secret_errors: Vec<String>,
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

impl Refresher {
    pub async fn new(config: Config, client: kube::Client) -> Self {
        let providers = crate::providers::build_all(&config).await;
        let writer = Writer::for_config(client.clone(), &config);
        Self {
            config,
            providers,
            writer,
            client,
        }
    }

    pub async fn run_once(&self) -> CycleReport {
        let timeout = self.config.provider_timeout;
        // Tokens, targets and the live secrets do not depend on each other: fetch them at once.
        let names: Vec<&str> = self
            .config
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let (fetched, resolution, live) = tokio::join!(
            join_all(self.providers.iter().map(|p| p.fetch(timeout))),
            namespaces::resolve(&self.client, &self.config.namespaces),
            self.writer.list_live(&names),
        );
        let mut report = CycleReport::default();
        for (p, r) in self.providers.iter().zip(fetched) {
            if let Err(e) = &r {
                warn!(source = p.name(), error = %e, reason = e.metric_label(), "fetch failed");
            }
            report.sources.push((p.name().to_string(), r));
        }
        let plan = {
            let by_name: BTreeMap<&str, &Credentials> = report
                .sources
                .iter()
                .filter_map(|(n, r)| r.as_ref().ok().map(|c| (n.as_str(), c)))
                .collect();
            plan(&self.config.secrets, |n| by_name.get(n).copied())
        };
        write_resolved(
            &self.writer,
            &self.config,
            &plan,
            resolution,
            live,
            &mut report,
        )
        .await;
        report
    }
}

impl CycleReport {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            skipped: self.skipped.len(),
            missing: self.missing.len(),
            ..Default::default()
        };
        for ns in &self.namespaces {
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

    /// 0 when every target is written or unchanged, 1 when anything failed.
    pub fn success(&self) -> bool {
        let t = self.totals();
        self.resolve_error.is_none()
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

    pub fn log_totals(&self) {
        let t = self.totals();
        info!(
            created = t.created,
            updated = t.updated,
            unchanged = t.unchanged,
            skipped = t.skipped,
            failed = t.failed,
            conflict = t.conflict,
            missing = t.missing,
            namespaces = self.namespaces.len(),
            "cycle finished"
        );
    }
}
