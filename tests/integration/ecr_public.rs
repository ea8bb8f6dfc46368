//! ECR Public (`ecrPublic`) against the cloud fixture, which answers ECR Public's
//! GetAuthorizationToken itself (SigV4 scoped to us-east-1 and `ecr-public`, a new token per
//! call): `--once` writes the token the fixture issued, a refused call keeps the last good
//! secret and exits 1 naming the source, and the daemon renews before the token expires.
//!
//! The fixture's counters are world-wide: tests here look for their token among those issued
//! and compare counters before and after; exact call counts come from a fault proxy of the
//! test's own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::common::*;
use super::faults_proxy::FaultProxy;

const HOST: &str = "public.ecr.aws";

fn config(namespaces: &str, source: &str) -> String {
    format!(
        "registries:\n  - name: pub\n    ecrPublic: {source}\nsecrets:\n  - name: regcred\n    registries: [pub]\nnamespaces:\n  include: [{namespaces}]\n"
    )
}

fn password_of(secret: &Secret) -> String {
    auths(secret)[HOST]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether the cloud fixture issued `password` as an ECR Public token (`AWS:<password>`).
async fn issued_by_the_fixture(password: &str) -> bool {
    let stats = cloud_fixture("GET", "stats", &serde_json::Value::Null).await;
    let token = b64(&format!("AWS:{password}"));
    stats["ecr_public"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == &token)
}

fn expires_at(secret: &Secret) -> DateTime<Utc> {
    let ann = secret.metadata.annotations.clone().unwrap();
    ann["regcred-refresher.io/expires-at"].parse().unwrap()
}

/// AWS_REGION is another region on purpose: the fixture refuses a signature that is not
/// scoped to us-east-1, so a written secret proves the client is pinned there.
#[tokio::test]
async fn once_writes_the_fixtures_token_for_public_ecr_aws() {
    let s = Scratch::new().await;
    let ns = s.namespace("ecrpub", &[], &[]).await;
    let cfg = s.file("c.yaml", &config(&ns, "{}"));
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("created=1"), "{}", r.stderr);

    let secret = s.secret(&ns, "regcred").await.expect("secret written");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let auths = auths(&secret);
    assert_eq!(
        auths.as_object().unwrap().keys().collect::<Vec<_>>(),
        [HOST],
        "{auths}"
    );
    let entry = &auths[HOST];
    assert_eq!(entry["username"], "AWS");
    let password = password_of(&secret);
    assert_eq!(entry["auth"], b64(&format!("AWS:{password}")));
    assert!(
        issued_by_the_fixture(&password).await,
        "the password is not a token the fixture issued"
    );
    let ann = secret.metadata.annotations.clone().unwrap();
    assert_eq!(ann["regcred-refresher.io/sources"], "pub");
    let left = expires_at(&secret) - Utc::now();
    assert!(
        left > chrono::Duration::hours(11) && left <= chrono::Duration::hours(12),
        "the fixture's 12 h expiry: {left}"
    );
    assert!(!r.stderr.contains(&password), "the token reached the log");
}

#[tokio::test]
async fn once_assumes_the_configured_role() {
    let s = Scratch::new().await;
    let ns = s.namespace("ecrpubrole", &[], &[]).await;
    let cfg = s.file(
        "c.yaml",
        &config(
            &ns,
            "{ roleArn: \"arn:aws:iam::111122223333:role/pull\", externalId: ext-1 }",
        ),
    );
    let signed_by_role = || async {
        cloud_fixture("GET", "stats", &serde_json::Value::Null).await["ecr_public"]["by_source"]
            ["sts:AssumeRole"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = signed_by_role().await;
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "regcred").await.expect("secret written");
    assert!(issued_by_the_fixture(&password_of(&secret)).await);
    // The fixture checks every signature against the keys it saw STS hand out, and counts
    // who signed each token call.
    assert!(
        signed_by_role().await > before,
        "not signed with the role's keys"
    );
}

/// `--once` with none of the world's AWS keys, only the keyless source `envs` describe: the
/// secret holds a token the fixture issued to a call signed with credentials from `signer`.
async fn assert_keyless_once(s: &Scratch, ns: &str, envs: &[(&str, &str)], signer: &str) {
    let cfg = s.file(&unique("c.yaml"), &config(ns, "{}"));
    let signed = || async {
        cloud_fixture("GET", "stats", &serde_json::Value::Null).await["ecr_public"]["by_source"]
            [signer]
            .as_u64()
            .unwrap_or(0)
    };
    let before = signed().await;
    let r = run_bin_without(
        &["--once", "--config", cfg.to_str().unwrap()],
        super::keyless::AWS_CREDENTIAL_ENV,
        envs,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(ns, "regcred").await.expect("secret written");
    assert!(issued_by_the_fixture(&password_of(&secret)).await);
    assert!(
        signed().await > before,
        "not signed with {signer} credentials"
    );
}

/// IRSA's web identity (a token of the world's API server for sts.amazonaws.com) through STS:
/// also the path of every cluster outside EKS (docs/install.md).
#[tokio::test]
async fn once_with_web_identity_and_no_keys() {
    let s = Scratch::new().await;
    let ns = s.namespace("ecrpubirsa", &[], &[]).await;
    let token = super::keyless::projected_token(&s, &ns, "sts.amazonaws.com").await;
    let envs = [
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::123456789012:role/regcred-irsa",
        ),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_str()),
    ];
    assert_keyless_once(&s, &ns, &envs, "sts:AssumeRoleWithWebIdentity").await;
}

/// The EKS Pod Identity agent (169.254.170.23 in the world). Its mode is world-wide state
/// that the keyless tests switch under their lock: taken here too, and the agent set to answer.
#[tokio::test]
async fn once_with_eks_pod_identity_and_no_keys() {
    let _g = super::keyless::KEYLESS.lock().await;
    cloud_fixture("POST", "control", &json!({"pod_identity": {"mode": "ok"}})).await;
    let s = Scratch::new().await;
    let ns = s.namespace("ecrpubpod", &[], &[]).await;
    let token = super::keyless::projected_token(&s, &ns, "pods.eks.amazonaws.com").await;
    let uri = env("REGCRED_TEST_POD_IDENTITY_URI");
    let envs = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token.as_str()),
    ];
    assert_keyless_once(&s, &ns, &envs, "pod-identity").await;
}

/// Credentials AWS refuses: exit 1 (README: Exit codes), one line naming the source and the
/// fix, the last good secret untouched; with the credentials back, the next run writes.
#[tokio::test]
async fn a_refused_call_exits_1_naming_the_source_and_keeps_the_last_good_secret() {
    let s = Scratch::new().await;
    let ns = s.namespace("ecrpubno", &[], &[]).await;
    let cfg = s.file("c.yaml", &config(&ns, "{}"));
    let args = ["--once", "--force", "--config", cfg.to_str().unwrap()];
    let good = run_bin(&args, &[]).await;
    assert_eq!(good.code, 0, "{good:?}");
    let before = s.secret(&ns, "regcred").await.unwrap();

    let r = run_bin(&args, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("source failed"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    for needle in [
        "source pub: ECR Public GetAuthorizationToken (us-east-1) failed",
        "InvalidSignatureException",
        "fix: AWS refused the credentials",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    assert!(
        r.stderr
            .contains("not written because source(s) pub failed"),
        "{}",
        r.stderr
    );
    let after = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(rv(&after), rv(&before), "the last good secret was touched");

    let again = run_bin(&args, &[]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("updated=1"), "{}", again.stderr);
}

/// Tokens of 16 s (a proxy of the test's own rewrites each `expiresAt`): the daemon fetches a
/// new one when a quarter of the life is left and rewrites the secret before the old one runs
/// out, with a token the fixture issued.
#[tokio::test]
async fn the_daemon_renews_the_secret_before_the_token_expires() {
    let s = Scratch::new().await;
    let p = unique("ecrpubd");
    let ns = s.namespace(&p, &[], &[]).await;
    let proxy = FaultProxy::http(
        &env("AWS_ENDPOINT_URL"),
        json!([{"method": "POST", "json_set": [[["authorizationData", "expiresAt"], {"now_plus": 16}]]}]),
    )
    .await;
    let cfg = s.file("c.yaml", &config(&format!("\"{p}-*\""), "{}"));
    let d = DaemonProc::start(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
        ],
        &[("AWS_ENDPOINT_URL", &proxy.url())],
    )
    .await;
    d.await_secret(&s, &ns, "regcred", true, 15).await;
    let first = s.secret(&ns, "regcred").await.unwrap();
    let first_expiry = expires_at(&first);
    assert!(first_expiry - Utc::now() <= chrono::Duration::seconds(16));

    // Polled every 100 ms: a renewal seen before the first expiry happened before it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let (second, seen_at) = loop {
        let now = s.secret(&ns, "regcred").await.unwrap();
        if password_of(&now) != password_of(&first) {
            break (now, Utc::now());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never renewed: {}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        seen_at < first_expiry,
        "renewed at {seen_at}, after the token expired at {first_expiry}"
    );
    assert!(expires_at(&second) > first_expiry);
    assert!(issued_by_the_fixture(&password_of(&second)).await);
    assert!(
        d.metric_reaches(
            "regcred_refreshes_total{source=\"pub\",result=\"success\"}",
            2.0,
            5
        )
        .await,
        "{}",
        d.logs()
    );
    assert!(
        proxy.seen("POST", "").await.len() >= 2,
        "two token calls through the proxy"
    );
}
