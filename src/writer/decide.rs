//! Whether a live secret must be written, and why. Pure: the live object, the desired one and
//! the clock in, a verdict out.
//!
//! A secret we manage is rewritten only when something a pull depends on would change: its
//! recipe (the fingerprint annotation), a host or username, a value the user handed us (static
//! sources), or its credentials reaching the renewal margin. A token that is merely newer is no
//! reason to write: real registries hand out a new one on every call, and writing it each time
//! would rewrite every namespace on every run. Never replaces a secret holding credentials
//! that outlive ours (two processes of one instance overlapping).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;

use crate::dockerconfig;

use super::{
    DesiredSecret, EXPIRES_ANNOTATION, FINGERPRINT_ANNOTATION, INSTANCE_LABEL,
    LAST_APPLIED_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, OUR_PREFIX, REFRESH_AFTER_ANNOTATION,
    SOURCES_ANNOTATION,
};

/// Why a reason is "due": the credentials reached the renewal margin.
pub const DUE: &str = "credentials due for renewal";

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours and not to be adopted.
    Foreign,
    WrongType(String),
    Immutable,
    /// Nothing to write. `due`: when this secret's credentials reach the renewal margin, for
    /// the daemon's next look (`None`: they do not expire, or newer ones are in place).
    Keep {
        due: Option<DateTime<Utc>>,
    },
    Write(Vec<String>),
}

pub fn verdict(
    cur: &Secret,
    desired: &DesiredSecret,
    instance: &str,
    now: DateTime<Utc>,
    force: bool,
) -> Verdict {
    let meta = &cur.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let managed = labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        && labels.get(INSTANCE_LABEL).map(String::as_str) == Some(instance);
    if !managed && !desired.adopt {
        return Verdict::Foreign;
    }
    let found = cur.type_.clone().unwrap_or_else(|| "Opaque".into());
    if found != desired.format.secret_type() {
        return Verdict::WrongType(found);
    }
    if cur.immutable == Some(true) {
        return Verdict::Immutable;
    }
    let mut why = Vec::new();
    if !managed {
        why.push("adopted".to_string());
    }
    if force {
        why.push("forced".to_string());
    }
    if annotations.get(FINGERPRINT_ANNOTATION) != Some(&desired.fingerprint) {
        why.push("configuration changed".to_string());
    }
    let refresh_after = annotation_time(annotations, REFRESH_AFTER_ANNOTATION);
    let due = desired.expires && refresh_after.is_none_or(|t| t <= now);
    if due {
        why.push(DUE.to_string());
    }
    let live_auths = cur
        .data
        .as_ref()
        .map(|d| desired.format.view(d))
        .unwrap_or_default();
    // Values the user handed us are compared as they are: a rotated password must land.
    for (host, entry) in &desired.pinned {
        match live_auths.get(host) {
            None => why.push(format!("credentials added for {host}")),
            Some(v) if dockerconfig::entry_digest(v) != dockerconfig::entry_digest(entry) => {
                why.push(format!("credentials changed for {host}"))
            }
            _ => {}
        }
    }
    if let Some(content) = &desired.content {
        let want = desired.format.desired_view(content.payload.bytes());
        for (host, entry) in &want {
            match live_auths.get(host) {
                None if !desired.pinned.contains_key(host) => {
                    why.push(format!("credentials added for {host}"))
                }
                Some(v) if v.get("username") != entry.get("username") => {
                    why.push(format!("username changed for {host}"))
                }
                _ => {}
            }
        }
        for host in live_auths.keys().filter(|h| !want.contains_key(*h)) {
            why.push(format!("credentials removed for {host}"));
        }
    }
    for (k, v) in desired.labels(instance) {
        if labels.get(&k) != Some(&v) {
            why.push(format!("label {k}"));
        }
    }
    if annotations.get(SOURCES_ANNOTATION) != Some(&desired.sources.join(",")) {
        why.push(format!("annotation {SOURCES_ANNOTATION}"));
    }
    if annotations.contains_key(LAST_APPLIED_ANNOTATION) {
        why.push(format!("annotation {LAST_APPLIED_ANNOTATION} removed"));
    }
    for k in stale_annotations(annotations.keys(), desired) {
        why.push(format!("annotation {k} removed"));
    }
    if why.is_empty() {
        return Verdict::Keep {
            due: refresh_after.filter(|_| desired.expires),
        };
    }
    // Only the clock asks for a write, and what is in place outlives what we hold: another
    // process of this instance wrote fresher credentials. Replacing them would start a fight.
    if why == [DUE] && outlives(annotations, desired) {
        return Verdict::Keep { due: None };
    }
    Verdict::Write(why)
}

/// What a conflict is and how to resolve it, in one wording for every place that reports one:
/// the log, the Event on the secret, the dry-run and diff output and the summary.
pub fn conflict_note(secret: &str) -> String {
    format!(
        "conflict: secret {secret} exists and is not managed by regcred-refresher; left untouched (set adopt: true on the secret to take it over)"
    )
}

/// Our annotations on a live secret that the desired one does not carry: left by an older
/// configuration or another field manager, and removed when we write.
pub fn stale_annotations<'a>(
    keys: impl Iterator<Item = &'a String>,
    desired: &DesiredSecret,
) -> BTreeSet<String> {
    let wanted = desired.annotation_keys();
    keys.filter(|k| k.starts_with(OUR_PREFIX) && !wanted.contains(k.as_str()))
        .cloned()
        .collect()
}

/// One of our time annotations (`expires-at`, `refresh-after`); `None` when absent or not a
/// time.
pub fn annotation_time(annotations: &BTreeMap<String, String>, key: &str) -> Option<DateTime<Utc>> {
    annotations
        .get(key)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn outlives(annotations: &BTreeMap<String, String>, desired: &DesiredSecret) -> bool {
    let live = annotation_time(annotations, EXPIRES_ANNOTATION);
    let ours = desired.content.as_ref().and_then(|c| c.expires_at);
    matches!((live, ours), (Some(l), Some(o)) if l > o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{Content, Payload};
    use chrono::Duration;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + h * 3600, 0).unwrap()
    }

    fn desired(payload: &str, expires_at: Option<DateTime<Utc>>) -> DesiredSecret {
        DesiredSecret {
            format: Default::default(),
            name: "regcred".into(),
            sources: vec!["ecr".into()],
            adopt: false,
            fingerprint: "fp1".into(),
            expires: expires_at.is_some(),
            pinned: BTreeMap::new(),
            content: Some(Content {
                payload: Payload::new(payload.as_bytes().to_vec()),
                expires_at,
                refresh_after: expires_at.map(|e| e - Duration::hours(3)),
            }),
        }
    }

    const OLD: &str = r#"{"auths":{"h":{"username":"AWS","password":"old","auth":"x"}}}"#;
    const NEW: &str = r#"{"auths":{"h":{"username":"AWS","password":"NEW","auth":"y"}}}"#;

    /// What we would have written at hour 0 with a 12 h token.
    fn live() -> Secret {
        desired(OLD, Some(t(12))).to_secret("ns", "default")
    }

    #[test]
    fn a_fresh_secret_is_kept_though_the_token_is_new() {
        let v = verdict(&live(), &desired(NEW, Some(t(13))), "default", t(1), false);
        assert_eq!(v, Verdict::Keep { due: Some(t(9)) });
    }

    #[test]
    fn without_fetched_tokens_a_fresh_secret_is_kept() {
        let mut d = desired(NEW, Some(t(13)));
        d.content = None;
        assert_eq!(
            verdict(&live(), &d, "default", t(1), false),
            Verdict::Keep { due: Some(t(9)) }
        );
        assert!(matches!(
            verdict(&live(), &d, "default", t(10), false),
            Verdict::Write(w) if w == [DUE]
        ));
    }

    #[test]
    fn at_the_margin_it_is_written() {
        let v = verdict(&live(), &desired(NEW, Some(t(21))), "default", t(9), false);
        assert_eq!(v, Verdict::Write(vec![DUE.to_string()]));
    }

    #[test]
    fn credentials_that_outlive_ours_are_never_replaced() {
        // Another process wrote a token valid until hour 12; ours (fetched earlier) ends at 11.
        let v = verdict(&live(), &desired(NEW, Some(t(11))), "default", t(10), false);
        assert_eq!(v, Verdict::Keep { due: None });
    }

    #[test]
    fn a_changed_recipe_or_host_is_written_at_once() {
        let mut d = desired(NEW, Some(t(13)));
        d.fingerprint = "fp2".into();
        assert_eq!(
            verdict(&live(), &d, "default", t(1), false),
            Verdict::Write(vec!["configuration changed".into()])
        );
        let moved = r#"{"auths":{"h2":{"username":"AWS","password":"NEW","auth":"y"}}}"#;
        let v = verdict(
            &live(),
            &desired(moved, Some(t(13))),
            "default",
            t(1),
            false,
        );
        assert_eq!(
            v,
            Verdict::Write(vec![
                "credentials added for h2".into(),
                "credentials removed for h".into()
            ])
        );
        assert!(
            matches!(verdict(&live(), &desired(NEW, Some(t(13))), "default", t(1), true), Verdict::Write(w) if w == ["forced"])
        );
    }

    #[test]
    fn user_values_are_compared_by_value_and_never_shown() {
        let mut d = desired(NEW, None);
        d.expires = false;
        d.pinned.insert(
            "h".into(),
            serde_json::json!({"username":"AWS","password":"ROTATED","auth":"z"}),
        );
        let v = verdict(&live(), &d, "default", t(1), false);
        assert_eq!(
            v,
            Verdict::Write(vec![
                "credentials changed for h".into(),
                format!("annotation {EXPIRES_ANNOTATION} removed"),
                format!("annotation {REFRESH_AFTER_ANNOTATION} removed"),
            ])
        );
        assert!(!format!("{v:?}").contains("ROTATED"));
    }

    #[test]
    fn traces_of_another_writer_are_reasons_to_write() {
        let mut s = live();
        let ann = s.metadata.annotations.as_mut().unwrap();
        ann.insert(LAST_APPLIED_ANNOTATION.into(), "{…}".into());
        ann.insert(format!("{OUR_PREFIX}old-thing"), "x".into());
        let v = verdict(&s, &desired(NEW, Some(t(13))), "default", t(1), false);
        assert_eq!(
            v,
            Verdict::Write(vec![
                format!("annotation {LAST_APPLIED_ANNOTATION} removed"),
                format!("annotation {OUR_PREFIX}old-thing removed"),
            ])
        );
    }

    #[test]
    fn foreign_wrong_type_and_immutable() {
        let d = desired(NEW, Some(t(13)));
        let mut s = live();
        s.immutable = Some(true);
        assert_eq!(verdict(&s, &d, "default", t(1), false), Verdict::Immutable);
        assert_eq!(verdict(&live(), &d, "other", t(1), false), Verdict::Foreign);
        let mut s = live();
        s.type_ = Some("Opaque".into());
        assert_eq!(
            verdict(&s, &d, "default", t(1), false),
            Verdict::WrongType("Opaque".into())
        );
        let mut adopt = desired(NEW, Some(t(13)));
        adopt.adopt = true;
        assert!(
            matches!(verdict(&live(), &adopt, "other", t(1), false), Verdict::Write(w) if w[0] == "adopted")
        );
    }
}
