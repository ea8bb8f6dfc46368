//! Google workload identity federation end to end: a ServiceAccount token from the world's own
//! kube-apiserver (TokenRequest with the pool provider's audience, as the kubelet projects
//! one), written to a file that an `external_account` credential configuration points at;
//! the binary exchanges it at the fixture's STS and, when configured, impersonates the
//! world's service account. Expiries are shortened by a per-test proxy, never world-wide.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::common::*;
use super::faults_proxy::FaultProxy;
use super::keyless::projected_token;

/// The audience a pod's projected token carries: the provider's default allowed audience.
fn token_audience() -> String {
    env("REGCRED_TEST_GOOGLE_WIF_AUDIENCE").replacen("//", "https://", 1)
}

/// An `external_account` configuration for the world's pool, its endpoints at `base` (the
/// fixture or a proxy in front of it); `extra` is merged in (impersonation, a JSON format).
fn credential_config(s: &Scratch, base: &str, token_file: &Path, extra: Value) -> PathBuf {
    let mut doc = json!({
        "type": "external_account",
        "audience": env("REGCRED_TEST_GOOGLE_WIF_AUDIENCE"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("{base}/v1/token"),
        "credential_source": {"file": token_file},
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    s.file(&unique("wif.json"), &doc.to_string())
}

fn impersonation(base: &str) -> Value {
    json!({"service_account_impersonation_url": format!(
        "{base}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        env("REGCRED_TEST_GOOGLE_CLIENT_EMAIL")
    )})
}

/// A config file for one Google source `gar` (with `key` as keyFile, if any) → `regcred`.
fn config(s: &Scratch, ns: &str, key: Option<&Path>) -> String {
    let key = key.map_or(String::new(), |k| format!(", keyFile: {k:?}"));
    s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev, gcr.io]{key} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [{ns}]\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// The federation statistics of the Google fixture (tokens issued are kept across resets).
async fn federation_stats() -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = super::link::Link::parse(&env("REGCRED_TEST_GOOGLE_FIXTURE_URL"));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str::<Value>(body).unwrap()["federation"].clone()
}

pub(super) async fn issued_by_fixture(token: &str) -> bool {
    federation_stats().await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == token)
}

fn password(secret: &k8s_openapi::api::core::v1::Secret) -> String {
    auths(secret)["gcr.io"]["password"]
        .as_str()
        .unwrap()
        .to_string()
}

fn expires_in(secret: &k8s_openapi::api::core::v1::Secret) -> chrono::Duration {
    let ann = secret.metadata.annotations.clone().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(&ann["regcred-refresher.io/expires-at"])
        .unwrap()
        .with_timezone(&chrono::Utc)
        - chrono::Utc::now()
}

/// Replaces `path` the way the kubelet rotates a projected token: a new file renamed over it.
fn rotate(s: &Scratch, path: &Path, token: &str) {
    let tmp = s.file(&unique("token.new"), token);
    std::fs::rename(tmp, path).unwrap();
}

#[tokio::test]
async fn the_sts_token_is_written_for_a_config_in_google_application_credentials() {
    let s = Scratch::new().await;
    let ns = s.namespace("wif", &[], &[]).await;
    let token = projected_token(&s, &ns, &token_audience()).await;
    let fixture = env("REGCRED_TEST_GOOGLE_FIXTURE_URL");
    let wif = credential_config(&s, &fixture, Path::new(&token), json!({}));
    let r = run_bin(
        &["--once", "--config", &config(&s, &ns, None)],
        &[("GOOGLE_APPLICATION_CREDENTIALS", wif.to_str().unwrap())],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "regcred").await.expect("secret written");
    let a = auths(&secret);
    assert_eq!(a["gcr.io"]["username"], "oauth2accesstoken");
    assert_eq!(a["gcr.io"]["password"], a["us-docker.pkg.dev"]["password"]);
    let pw = password(&secret);
    assert!(pw.starts_with("ya29.d.fixture-sts-"), "the federated token");
    assert!(issued_by_fixture(&pw).await);
    let left = expires_in(&secret);
    assert!(
        left > chrono::Duration::minutes(55) && left <= chrono::Duration::minutes(60),
        "{left}"
    );
    assert!(!r.stderr.contains(&pw), "the token never reaches the log");
}

#[tokio::test]
async fn the_impersonated_token_is_written_from_a_json_subject_token() {
    let s = Scratch::new().await;
    let ns = s.namespace("wifi", &[], &[]).await;
    let jwt = std::fs::read_to_string(projected_token(&s, &ns, &token_audience()).await).unwrap();
    let token = s.file(&unique("token.json"), &json!({"id_token": jwt}).to_string());
    let fixture = env("REGCRED_TEST_GOOGLE_FIXTURE_URL");
    let mut extra = impersonation(&fixture);
    extra["credential_source"] =
        json!({"file": token, "format": {"type": "json", "subject_token_field_name": "id_token"}});
    let wif = credential_config(&s, &fixture, &token, extra);
    let r = run_bin(&["--once", "--config", &config(&s, &ns, Some(&wif))], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "regcred").await.expect("secret written");
    assert_eq!(auths(&secret)["gcr.io"]["username"], "oauth2accesstoken");
    let pw = password(&secret);
    assert!(
        pw.starts_with("ya29.c.fixture-impersonated-"),
        "the service account's token"
    );
    assert!(issued_by_fixture(&pw).await);
    // expireTime (whole seconds) is the expiry, not the STS token's expires_in.
    let left = expires_in(&secret);
    assert!(
        left > chrono::Duration::minutes(55) && left <= chrono::Duration::minutes(60),
        "{left}"
    );
}

/// A token for another audience: Google's STS refuses it; the run fails naming the source,
/// Google's answer and the fix, and the secret written before stays as it was.
#[tokio::test]
async fn a_token_for_another_audience_is_a_clear_error_and_the_last_good_secret_stays() {
    let s = Scratch::new().await;
    let ns = s.namespace("wifa", &[], &[]).await;
    let token = PathBuf::from(projected_token(&s, &ns, &token_audience()).await);
    let fixture = env("REGCRED_TEST_GOOGLE_FIXTURE_URL");
    let wif = credential_config(&s, &fixture, &token, impersonation(&fixture));
    let cfg = config(&s, &ns, Some(&wif));
    let r = run_bin(&["--once", "--config", &cfg], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let good = s.secret(&ns, "regcred").await.unwrap();
    let wrong = projected_token(&s, &ns, "sts.amazonaws.com").await;
    rotate(&s, &token, &std::fs::read_to_string(wrong).unwrap());
    let r = run_bin(&["--once", "--force", "--config", &cfg], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("fetch failed"))
        .unwrap_or_else(|| panic!("no `fetch failed` line: {}", r.stderr));
    for phrase in [
        "source gar",
        "workload identity federation",
        "STS token exchange",
        "invalid_grant",
        "does not match the expected audience",
        "fix:",
        "audience",
    ] {
        assert!(line.contains(phrase), "{phrase:?} missing from: {line}");
    }
    let kept = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(rv(&kept), rv(&good), "the last good secret is untouched");
}

/// A bad configuration stops the start (exit 2) with the field and the fix, before any call.
#[tokio::test]
async fn a_bad_federation_config_exits_2_naming_the_field() {
    let s = Scratch::new().await;
    let token = s.file(&unique("token"), "x.y.z");
    let cases: [(Value, &str); 5] = [
        (
            json!({"token_url": "http://sts.example.com/v1/token"}),
            "token_url",
        ),
        (json!({"audience": ""}), "audience"),
        (
            json!({"credential_source": {"url": "http://169.254.169.254/token"}}),
            "credential_source.url",
        ),
        (
            json!({"credential_source": {"file": "/nonexistent/token"}}),
            "credential_source.file",
        ),
        (
            json!({"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x"}),
            "service_account_impersonation_url",
        ),
    ];
    for (extra, field) in cases {
        let wif = credential_config(&s, "https://sts.googleapis.com", &token, extra.clone());
        let r = run_bin(
            &["--once", "--config", &config(&s, "default", Some(&wif))],
            &[],
        )
        .await;
        assert_eq!(r.code, 2, "{extra}: {r:?}");
        for phrase in [
            "registries[0].google.keyFile",
            "external_account",
            field,
            "fix:",
        ] {
            assert!(
                r.stderr.contains(phrase),
                "{extra}: {phrase:?} missing: {}",
                r.stderr
            );
        }
    }
}

/// The daemon renews a short-lived impersonated token before it expires, re-reading the
/// projected token at each fetch: a rotated token is used, a refused one leaves the last
/// good secret in place, and the next good one is written without a restart.
#[tokio::test]
async fn the_daemon_refreshes_before_expiry_and_rereads_a_rotated_token() {
    let s = Scratch::new().await;
    let ns = s.namespace("wifd", &[], &[]).await;
    let token = PathBuf::from(projected_token(&s, &ns, &token_audience()).await);
    let proxy = FaultProxy::http(
        &env("REGCRED_TEST_GOOGLE_FIXTURE_URL"),
        json!([
            {"method": "POST", "path": "^/v1/token", "json_set": [[["expires_in"], 20]]},
            {"method": "POST", "path": ":generateAccessToken$", "json_set": [[["expireTime"], {"now_plus_rfc3339": 20}]]},
        ]),
    )
    .await;
    let wif = credential_config(&s, &proxy.url(), &token, impersonation(&proxy.url()));
    let cfg = config(&s, &ns, Some(&wif));
    let d = DaemonProc::start(&s, &[&["--config", &cfg][..], &FAST_RENEWAL].concat(), &[]).await;
    // 20 s tokens renewed with 10 s left: three passwords within 25 s, none ever expired.
    let seen = d.renewals(&s, &ns, 25, password).await;
    for pw in &seen {
        assert!(
            issued_by_fixture(pw).await,
            "each is an impersonated token of the fixture"
        );
    }
    let subject_reads = proxy.seen("POST", "/v1/token").await.len();
    assert!(subject_reads >= seen.len(), "one exchange per fetch");

    // A token the pool does not trust: refused at the next fetch, the last good secret stays.
    let failed = r#"regcred_refreshes_total{source="gar",result="google_federation"}"#;
    let wrong = projected_token(&s, &ns, "sts.amazonaws.com").await;
    rotate(&s, &token, &std::fs::read_to_string(wrong).unwrap());
    assert!(
        d.metric_reaches(failed, 1.0, 20).await,
        "the rotated token is read at the next fetch: {}",
        d.logs()
    );
    let kept = password(&s.secret(&ns, "regcred").await.unwrap());
    assert!(
        d.logs().contains("does not match the expected audience"),
        "{}",
        d.logs()
    );

    // A good token again: written without a restart.
    let good = projected_token(&s, &ns, &token_audience()).await;
    rotate(&s, &token, &std::fs::read_to_string(good).unwrap());
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.secret(&ns, "regcred")
                .await
                .is_some_and(|sec| password(&sec) != kept)
        })
        .await,
        "a new token after the good subject token came back: {}",
        d.logs()
    );
}
