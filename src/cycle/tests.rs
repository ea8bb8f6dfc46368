//! `plan` without a world: which secrets are rendered, held back or only assessed, from the
//! credentials at hand; and the 1 MiB a Secret holds.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use clap::Parser;

use super::*;
use crate::credentials::RegistryCredential;
use crate::writer::{SaOutcome, SecretOutcome, WriteError};

/// A validated configuration from a YAML file and extra flags, as `main` builds it. `{pw}` in
/// the YAML is replaced by the path of a password file (static sources read theirs at start).
pub(crate) fn config(yaml: &str, flags: &[&str]) -> Config {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir();
    let base = format!("regcred-unit-{}-{n}", std::process::id());
    let (pw, file) = (
        dir.join(format!("{base}.pw")),
        dir.join(format!("{base}.yaml")),
    );
    std::fs::write(&pw, "hunter2\n").unwrap();
    std::fs::write(&file, yaml.replace("{pw}", pw.to_str().unwrap())).unwrap();
    let mut argv = vec!["regcred-refresher", "--config", file.to_str().unwrap()];
    argv.extend(flags);
    let config = Config::from_cli(&crate::cli::Cli::try_parse_from(argv).unwrap());
    let _ = (std::fs::remove_file(&pw), std::fs::remove_file(&file));
    config.unwrap()
}

/// One secret `all` from a static source (`quay`) and a token source (`gar`).
pub(crate) const TWO_SOURCES: &str = "registries:\n  - name: quay\n    static: { server: quay.io, username: bot, passwordFile: {pw} }\n  - name: gar\n    google: { hosts: [gcr.io] }\nsecrets:\n  - name: all\n    registries: [quay, gar]\n";

pub(crate) fn static_creds(source: &str, server: &str) -> Credentials {
    Credentials {
        source: source.into(),
        entries: vec![RegistryCredential::new(server, "bot", "hunter2")],
        expires_at: None,
        issued_at: Utc::now(),
    }
}

pub(crate) fn token(source: &str, server: &str, password: &str, life: Duration) -> Credentials {
    let now = Utc::now();
    Credentials {
        source: source.into(),
        entries: vec![RegistryCredential::new(
            server,
            "oauth2accesstoken",
            password,
        )],
        expires_at: Some(now + life),
        issued_at: now,
    }
}

fn plan_with(config: &Config, creds: &[&Credentials], wanted: bool) -> Plan {
    plan(
        config,
        |n| creds.iter().find(|c| c.source == n).copied(),
        |_| wanted,
    )
}

#[test]
fn with_every_source_the_secret_holds_both_and_renews_with_the_earliest() {
    let config = config(TWO_SOURCES, &[]);
    let (quay, gar) = (
        static_creds("quay", "quay.io"),
        token("gar", "gcr.io", "ya29.x", Duration::hours(1)),
    );
    let p = plan_with(&config, &[&quay, &gar], true);
    assert!(p.blocked.is_empty(), "{:?}", p.blocked);
    let [d] = &p.desired[..] else {
        panic!("{:?}", p.desired)
    };
    assert_eq!(
        (d.name.as_str(), d.sources.join(",")),
        ("all", "quay,gar".into())
    );
    let c = d.content.as_ref().expect("rendered");
    let doc: serde_json::Value = serde_json::from_slice(c.payload.bytes()).unwrap();
    let mut hosts: Vec<&String> = doc["auths"].as_object().unwrap().keys().collect();
    hosts.sort();
    assert_eq!(hosts, ["gcr.io", "quay.io"]);
    // The static source never expires: the token decides both times.
    assert_eq!(c.expires_at, gar.expires_at);
    assert_eq!(c.refresh_after, gar.refresh_after(config.refresh_margin));
    // Only the static registry is pinned (compared in every namespace).
    assert_eq!(d.pinned.keys().collect::<Vec<_>>(), ["quay.io"]);
}

#[test]
fn a_secret_is_renewed_and_expires_with_its_first_token() {
    let yaml = TWO_SOURCES.replace("registries: [quay, gar]", "registries: [quay, gar, hub]");
    let yaml = yaml.replacen(
        "secrets:",
        "  - name: hub\n    google: { hosts: [us-docker.pkg.dev] }\nsecrets:",
        1,
    );
    let config = config(&yaml, &[]);
    let quay = static_creds("quay", "quay.io");
    let short = token("gar", "gcr.io", "ya29.a", Duration::minutes(30));
    let long = token("hub", "us-docker.pkg.dev", "ya29.b", Duration::hours(12));
    let p = plan_with(&config, &[&quay, &long, &short], true);
    let c = p.desired[0].content.as_ref().expect("rendered");
    assert_eq!(c.expires_at, short.expires_at);
    let margin = config.refresh_margin;
    assert_eq!(c.refresh_after, short.refresh_after(margin));
    assert!(short.refresh_after(margin) < long.refresh_after(margin));
}

#[test]
fn a_missing_token_holds_the_secret_back_when_wanted_and_is_only_assessed_when_not() {
    let config = config(TWO_SOURCES, &[]);
    let quay = static_creds("quay", "quay.io");
    // Written without gcr.io, the secret would break pulls the last good one still serves.
    let p = plan_with(&config, &[&quay], true);
    assert!(p.desired.is_empty());
    assert_eq!(p.blocked, [("all".to_string(), "gar".to_string())]);
    // Not wanted (every target fresh): planned without content, to be assessed only.
    let p = plan_with(&config, &[&quay], false);
    assert!(p.blocked.is_empty());
    let [d] = &p.desired[..] else {
        panic!("{:?}", p.desired)
    };
    assert!(d.content.is_none());
    assert_eq!(d.pinned.keys().collect::<Vec<_>>(), ["quay.io"]);
}

#[test]
fn a_missing_static_source_holds_the_secret_back_even_when_not_wanted() {
    let config = config(TWO_SOURCES, &[]);
    let gar = token("gar", "gcr.io", "ya29.x", Duration::hours(1));
    for wanted in [true, false] {
        let p = plan_with(&config, &[&gar], wanted);
        assert!(p.desired.is_empty(), "wanted={wanted}");
        assert_eq!(p.blocked, [("all".to_string(), "quay".to_string())]);
    }
}

#[test]
fn a_render_over_the_1_mib_a_secret_holds_is_held_back_with_the_fix() {
    let config = config(TWO_SOURCES, &[]);
    let quay = static_creds("quay", "quay.io");
    let size = |password_len: usize| {
        let gar = token(
            "gar",
            "gcr.io",
            &"a".repeat(password_len),
            Duration::hours(1),
        );
        let p = plan_with(&config, &[&quay, &gar], true);
        let len = p
            .desired
            .first()
            .and_then(|d| d.content.as_ref())
            .map(|c| c.payload.bytes().len());
        (len, p.blocked)
    };
    // Each 3 more characters of password add the same bytes (raw, and 4 in base64): the
    // largest password that still fits, then 3 characters more.
    let base = size(0).0.unwrap();
    let step = size(3).0.unwrap() - base;
    let fits = (SECRET_DATA_LIMIT - base) / step * 3;
    let (len, blocked) = size(fits);
    let len = len.expect("at the limit, still written");
    assert!(blocked.is_empty());
    assert!(
        len <= SECRET_DATA_LIMIT && len + step > SECRET_DATA_LIMIT,
        "{len}"
    );
    let (over, blocked) = size(fits + 3);
    assert_eq!(over, None, "over the limit, not written");
    let [(secret, why)] = &blocked[..] else {
        panic!("{blocked:?}")
    };
    assert_eq!(secret, "all");
    let expected = format!(
        "quay,gar (the .dockerconfigjson is {} bytes, more than the 1 MiB a Secret holds; fix: split the registries over several secrets)",
        len + step
    );
    assert_eq!(why, &expected);
}

fn ns(name: &str, secrets: Vec<SecretOutcome>, accounts: Vec<SaOutcome>) -> NamespaceReport {
    NamespaceReport {
        namespace: name.into(),
        secrets: secrets.into_iter().map(|o| ("regcred".into(), o)).collect(),
        service_accounts: accounts
            .into_iter()
            .map(|o| ("default".into(), o))
            .collect(),
        manifests: vec![],
        diffs: vec![],
        due: None,
    }
}

fn immutable() -> SecretOutcome {
    SecretOutcome::Failed(WriteError::Immutable {
        namespace: "b".into(),
        secret: "regcred".into(),
    })
}

#[test]
fn totals_add_up_every_outcome_and_each_failed_service_account() {
    let report = CycleReport {
        namespaces: vec![
            ns(
                "a",
                vec![SecretOutcome::Created, SecretOutcome::Unchanged],
                vec![SaOutcome::Unchanged],
            ),
            ns(
                "b",
                vec![SecretOutcome::Updated(vec!["expiry".into()]), immutable()],
                vec![SaOutcome::Failed("patch".into())],
            ),
            ns("c", vec![SecretOutcome::Conflict], vec![SaOutcome::Missing]),
        ],
        missing: vec!["d".into()],
        skipped: vec![("e".into(), crate::namespaces::Decision::OptedOut)],
        ..Default::default()
    };
    let want = Totals {
        created: 1,
        updated: 1,
        unchanged: 1,
        conflict: 1,
        failed: 2,
        skipped: 1,
        missing: 1,
    };
    assert_eq!(report.totals(), want);
    // Per namespace, added up: the same figures (a daemon pass counts this way).
    let mut summed = Totals {
        skipped: 1,
        missing: 1,
        ..Default::default()
    };
    for n in &report.namespaces {
        summed += Totals::of(n);
    }
    assert_eq!(summed, want);
}

#[test]
fn success_asks_what_sources_ok_asks_and_no_problem_at_a_target() {
    let ok = |namespaces, missing: Vec<String>| {
        let r = CycleReport {
            namespaces,
            missing,
            ..Default::default()
        };
        (r.sources_ok(), r.success())
    };
    assert_eq!(
        ok(vec![ns("a", vec![SecretOutcome::Created], vec![])], vec![]),
        (true, true)
    );
    // Target-side problems fail the run, not the sources.
    assert_eq!(
        ok(vec![ns("a", vec![SecretOutcome::Conflict], vec![])], vec![]),
        (true, false)
    );
    assert_eq!(
        ok(vec![ns("a", vec![immutable()], vec![])], vec![]),
        (true, false)
    );
    assert_eq!(ok(vec![], vec!["gone".into()]), (true, false));
    // A secret held back for its source fails both.
    let held_back = SecretOutcome::Failed(WriteError::SourceFailed {
        secret: "regcred".into(),
        sources: "gar".into(),
    });
    assert_eq!(
        ok(vec![ns("a", vec![held_back], vec![])], vec![]),
        (false, false)
    );
    let interrupted = CycleReport {
        interrupted: true,
        ..Default::default()
    };
    assert_eq!(
        (interrupted.sources_ok(), interrupted.success()),
        (false, false)
    );
}

#[test]
fn a_conflict_is_worded_once_with_its_fix() {
    let note = conflict_note("regcred");
    assert!(
        note.starts_with("conflict: secret regcred exists"),
        "{note}"
    );
    assert!(note.contains("set adopt: true"), "{note}");
}
