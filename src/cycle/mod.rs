//! The pipeline both modes share: [`plan`] renders each secret from the credentials at hand,
//! [`write_namespace`] writes what one namespace needs. `--once` ([`crate::once`]) runs it over
//! every target after fetching; the daemon's controller runs it per namespace from cached
//! credentials, so a restored secret never costs a token call. Partial failure is data: a
//! failing source or namespace is recorded in the [`CycleReport`] and never stops the others.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::config::{Config, SourceKind, WriteMode};
use crate::credentials::Credentials;
use crate::writer::{
    Content, DesiredSecret, LiveSecrets, Payload, SaOutcome, SecretOutcome, WriteError, Writer,
};
use crate::{dockerconfig, fingerprint};

mod report;
#[cfg(test)]
pub(crate) mod tests;

pub use report::{CycleReport, Totals, conflict_note, log_totals, totals_of};

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
    let margin = config.refresh_margin;
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
        // A one-credential shape of more than one host (an ECR source without accountId is
        // known only now): blocked like a render that failed.
        let unfit = rendered
            .as_ref()
            .ok()
            .and_then(|(_, c)| s.format.data(c.as_ref()?.payload.bytes()).err());
        if let Some(e) = unfit {
            warn!(secret = %s.name, error = %e, "cannot render secret");
            p.blocked
                .push((s.name.clone(), format!("{} ({e})", s.sources.join(","))));
            continue;
        }
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
                pinned: s.format.pinned(pinned),
                format: s.format.clone(),
                name: s.name.clone(),
                sources: s.sources.clone(),
                adopt: s.adopt,
                fingerprint: fingerprint::of_secret(s, &config.sources),
                expires: fingerprint::expires(s, &config.sources),
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
    accounts: &dyn ServiceAccountCache,
) -> NamespaceReport {
    let mut r = NamespaceReport {
        namespace,
        // Exactly sized: at 10,000 namespaces a growing Vec's spare room was 4 MiB.
        secrets: Vec::with_capacity(plan.desired.len() + plan.blocked.len()),
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
                CachedAccount::Absent => SaOutcome::Missing,
                CachedAccount::References(refs)
                    if in_place.iter().all(|s| refs.iter().any(|r| r == s)) =>
                {
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

/// What a cache (the daemon's watch) holds of a ServiceAccount, so an unchanged one costs no
/// request.
pub enum CachedAccount {
    /// Not in a cache that has listed: read it from the API server.
    NotCached,
    Absent,
    /// The names in its `imagePullSecrets`.
    References(Vec<String>),
}

pub trait ServiceAccountCache: Sync {
    fn references(&self, namespace: &str, service_account: &str) -> CachedAccount;
}

/// No cache: every ServiceAccount is read from the API server (`--once`).
pub struct NoCache;

impl ServiceAccountCache for NoCache {
    fn references(&self, _: &str, _: &str) -> CachedAccount {
        CachedAccount::NotCached
    }
}
