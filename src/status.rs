//! `regcred-refresher status`: what an operator runs first when pulls fail. For every target
//! namespace and configured secret, read from the cluster: whether the secret is there and
//! ours, its sources, when its credentials expire and when they are due for renewal. Reads
//! only; never fetches a token.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;

use crate::config::Config;
use crate::writer::{
    EXPIRES_ANNOTATION, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, REFRESH_AFTER_ANNOTATION,
    SOURCES_ANNOTATION, Writer,
};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Namespaces(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Read(#[from] crate::writer::WriteError),
}

/// One secret in one namespace, as found.
#[derive(Debug, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub secret: String,
    pub state: State,
    pub sources: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub refresh_after: Option<DateTime<Utc>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Ours, and its credentials have not expired.
    Valid,
    /// Ours, past its renewal time: the next run or the daemon rewrites it.
    Due,
    /// Ours, and its credentials have expired: pulls fail.
    Expired,
    Missing,
    /// Written by another instance of the refresher.
    OtherInstance(String),
    /// Not made by the refresher (left untouched unless adopted).
    Foreign,
    WrongType(String),
}

impl State {
    /// Whether pulls can use the secret as it is now.
    pub fn usable(&self) -> bool {
        matches!(self, Self::Valid | Self::Due)
    }

    fn word(&self) -> String {
        match self {
            Self::Valid => "valid".into(),
            Self::Due => "due for renewal".into(),
            Self::Expired => "EXPIRED".into(),
            Self::Missing => "MISSING".into(),
            Self::OtherInstance(i) => format!("other instance ({i})"),
            Self::Foreign => "not ours".into(),
            Self::WrongType(t) => format!("wrong type ({t})"),
        }
    }
}

/// Prints the table; true when every secret is usable by pulls.
pub async fn print(config: &Config, client: &kube::Client) -> Result<bool, StatusError> {
    let writer = Writer::for_config(client.clone(), config);
    let rows = read(config, client, &writer).await?;
    print!("{}", render(&rows, Utc::now()));
    Ok(rows.iter().all(|r| r.state.usable()))
}

/// What the cluster holds for every target and configured secret.
pub async fn read(
    config: &Config,
    client: &kube::Client,
    writer: &Writer,
) -> Result<Vec<Row>, StatusError> {
    let resolution = crate::namespaces::resolve(client, &config.namespaces).await?;
    let names: Vec<&str> = config.secrets.iter().map(|s| s.name.as_str()).collect();
    let live = writer.list_live(&names).await;
    let now = Utc::now();
    let mut rows = Vec::new();
    for ns in &resolution.targets {
        for secret in &config.secrets {
            let found = writer.live_secret(ns, &secret.name, live.as_ref()).await?;
            let want = secret.format.secret_type();
            rows.push(row(
                ns,
                &secret.name,
                want,
                found.as_ref(),
                &config.instance,
                now,
            ));
        }
    }
    Ok(rows)
}

/// The row for one secret, from its labels, type and annotations alone.
pub fn row(
    namespace: &str,
    secret: &str,
    secret_type: &str,
    found: Option<&Secret>,
    instance: &str,
    now: DateTime<Utc>,
) -> Row {
    let empty = BTreeMap::new();
    let meta = found.map(|s| &s.metadata);
    let labels = meta.and_then(|m| m.labels.as_ref()).unwrap_or(&empty);
    let annotations = meta.and_then(|m| m.annotations.as_ref()).unwrap_or(&empty);
    let time = |key: &str| crate::writer::decide::annotation_time(annotations, key);
    let (expires_at, refresh_after) = (time(EXPIRES_ANNOTATION), time(REFRESH_AFTER_ANNOTATION));
    let state = match found {
        None => State::Missing,
        Some(_) if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) => {
            State::Foreign
        }
        Some(_) if labels.get(INSTANCE_LABEL).map(String::as_str) != Some(instance) => {
            State::OtherInstance(labels.get(INSTANCE_LABEL).cloned().unwrap_or_default())
        }
        Some(s) if s.type_.as_deref() != Some(secret_type) => {
            State::WrongType(s.type_.clone().unwrap_or_else(|| "Opaque".into()))
        }
        Some(_) if expires_at.is_some_and(|e| e <= now) => State::Expired,
        Some(_) if refresh_after.is_some_and(|r| r <= now) => State::Due,
        Some(_) => State::Valid,
    };
    Row {
        namespace: namespace.into(),
        secret: secret.into(),
        state,
        sources: annotations
            .get(SOURCES_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        expires_at,
        refresh_after,
    }
}

/// An aligned table, one line per row, times in UTC with what is left of them.
pub fn render(rows: &[Row], now: DateTime<Utc>) -> String {
    let when = |t: Option<DateTime<Utc>>| match t {
        None => "-".to_string(),
        Some(t) => {
            let left = t - now;
            let rel = if left.num_seconds() >= 0 {
                format!("in {}", human(left))
            } else {
                format!("{} ago", human(-left))
            };
            format!("{} ({rel})", t.format("%Y-%m-%dT%H:%M:%SZ"))
        }
    };
    let mut table = vec![[
        "NAMESPACE".to_string(),
        "SECRET".into(),
        "STATE".into(),
        "SOURCES".into(),
        "EXPIRES".into(),
        "RENEWAL".into(),
    ]];
    for r in rows {
        table.push([
            r.namespace.clone(),
            r.secret.clone(),
            r.state.word(),
            if r.sources.is_empty() {
                "-".into()
            } else {
                r.sources.clone()
            },
            when(r.expires_at),
            when(r.refresh_after),
        ]);
    }
    // Labels, the type and the annotations are the tenant's to write: a newline would forge
    // a row, an escape sequence would drive the terminal. Shown escaped, never raw.
    for line in &mut table {
        for cell in line.iter_mut() {
            *cell = printable(cell);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in table {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Control and other non-printable characters as Rust escapes (`\n`, `\u{1b}`, `\u{202e}`).
fn printable(s: &str) -> String {
    s.chars()
        .fold(String::with_capacity(s.len()), |mut out, c| {
            if matches!(c, '\\' | '\'' | '"') {
                out.push(c);
            } else {
                out.extend(c.escape_debug());
            }
            out
        })
}

fn human(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds();
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::writer::SECRET_TYPE;

    fn secret(labels: &[(&str, &str)], annotations: &[(&str, &str)], type_: &str) -> Secret {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        Secret {
            metadata: ObjectMeta {
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            type_: Some(type_.into()),
            ..Default::default()
        }
    }

    const OURS: [(&str, &str); 2] = [(MANAGED_BY_LABEL, MANAGED_BY), (INSTANCE_LABEL, "default")];

    #[test]
    fn each_state_from_labels_type_and_annotations() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let times = |exp: &str, due: &str| {
            secret(
                &OURS,
                &[
                    (EXPIRES_ANNOTATION, exp),
                    (REFRESH_AFTER_ANNOTATION, due),
                    (SOURCES_ANNOTATION, "ecr"),
                ],
                SECRET_TYPE,
            )
        };
        let state = |s: Option<&Secret>| row("ns", "regcred", SECRET_TYPE, s, "default", now).state;
        assert_eq!(
            state(Some(&times("2026-12-01T20:00:00Z", "2026-12-01T17:00:00Z"))),
            State::Valid
        );
        assert_eq!(
            state(Some(&times("2026-12-01T13:00:00Z", "2026-12-01T11:00:00Z"))),
            State::Due
        );
        assert_eq!(
            state(Some(&times("2026-12-01T11:00:00Z", "2026-12-01T09:00:00Z"))),
            State::Expired
        );
        assert_eq!(state(None), State::Missing);
        assert_eq!(state(Some(&secret(&[], &[], SECRET_TYPE))), State::Foreign);
        assert_eq!(
            state(Some(&secret(
                &[(MANAGED_BY_LABEL, MANAGED_BY), (INSTANCE_LABEL, "blue")],
                &[],
                SECRET_TYPE
            ))),
            State::OtherInstance("blue".into())
        );
        assert_eq!(
            state(Some(&secret(&OURS, &[], "Opaque"))),
            State::WrongType("Opaque".into())
        );
        // A static source never expires.
        assert_eq!(state(Some(&secret(&OURS, &[], SECRET_TYPE))), State::Valid);
        let r = row(
            "ns",
            "regcred",
            SECRET_TYPE,
            Some(&times("2026-12-01T20:00:00Z", "2026-12-01T17:00:00Z")),
            "default",
            now,
        );
        let table = render(&[r], now);
        assert!(table.contains("valid"), "{table}");
        assert!(table.contains("2026-12-01T20:00:00Z (in 8h00m)"), "{table}");
        assert!(
            table
                .lines()
                .next()
                .unwrap()
                .starts_with("NAMESPACE  SECRET"),
            "{table}"
        );
    }

    #[test]
    fn tenant_controlled_values_cannot_forge_a_row_or_drive_the_terminal() {
        // A tenant who can edit the secret can write any annotation and type: a newline would
        // start a row of its own choosing, an escape sequence would rewrite the screen.
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let forged = "ecr\nteam-b  regcred  valid  ecr\u{1b}[2K\r\t\u{7f}\u{9b}\u{202e}";
        let ours = secret(&OURS, &[(SOURCES_ANNOTATION, forged)], SECRET_TYPE);
        let r = row("ns", "regcred", SECRET_TYPE, Some(&ours), "default", now);
        assert_eq!(r.sources, forged, "the row keeps the value as found");
        let wrong = secret(&OURS, &[], "x\u{1b}]0;t\u{7}");
        let table = render(
            &[
                r,
                row("ns", "other", SECRET_TYPE, Some(&wrong), "default", now),
            ],
            now,
        );
        assert_eq!(table.lines().count(), 3, "{table:?}");
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(
            table.contains(r"ecr\nteam-b  regcred  valid  ecr\u{1b}[2K\r\t\u{7f}\u{9b}\u{202e}"),
            "{table}"
        );
        assert!(table.contains(r"wrong type (x\u{1b}]0;t\u{7})"), "{table}");
    }
}
