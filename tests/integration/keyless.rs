//! Keyless credentials, through the SDKs' own default chains and nothing else: EC2 IMDSv2,
//! the EKS Pod Identity agent, IRSA (web identity → STS) and the GKE metadata server. The world
//! runs in a network namespace where 169.254.169.254 (also `metadata.google.internal`) and
//! 169.254.170.23 exist (tests/fixtures/cloud_fixture.py); the only override left is
//! `AWS_ENDPOINT_URL` for the ECR/STS API calls. Each path: the secret is written, and when the
//! endpoint is absent or refuses, the run fails (exit 1) with a line naming the source and what
//! went wrong.
//!
//! The endpoints' modes are world-wide state: the tests here take one lock and only ever set
//! the keyless endpoints' modes (never ECR's settings or the shared stats, which other tests
//! read); they compare counters before and after.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};

use super::common::*;

pub(super) static KEYLESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every credential variable of the world's environment: what is left is the default chain.
pub(super) const AWS_CREDENTIAL_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];
const ROLE: &str = "arn:aws:iam::123456789012:role/regcred-irsa";

/// Sets every keyless endpoint to "ok", then applies `modes`.
pub(super) async fn endpoints(modes: Value) {
    let all_ok =
        json!({"imds": {"mode": "ok"}, "gke": {"mode": "ok"}, "pod_identity": {"mode": "ok"}});
    cloud_fixture("POST", "control", &all_ok).await;
    cloud_fixture("POST", "control", &modes).await;
}

pub(super) async fn stats() -> Value {
    cloud_fixture("GET", "stats", &Value::Null).await
}

fn count(v: &Value, path: &[&str]) -> i64 {
    path.iter().fold(v, |v, k| &v[*k]).as_i64().unwrap_or(0)
}

fn ecr_host() -> String {
    format!(
        "{}.dkr.ecr.us-east-1.amazonaws.com",
        env("REGCRED_TEST_AWS_ACCOUNT_ID")
    )
}

fn ecr_config(s: &Scratch, ns: &str) -> String {
    s.file(
        &unique("ecr.yaml"),
        &format!(
            "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces:\n  include: [{ns}]\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// A token of the API server for a ServiceAccount of the test namespace, written to a file
/// (what the kubelet projects into a Pod for IRSA and Pod Identity).
pub(super) async fn projected_token(s: &Scratch, ns: &str, audience: &str) -> String {
    let api = Api::<ServiceAccount>::namespaced(s.client.clone(), ns);
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("regcred-refresher".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    if api.get_opt("regcred-refresher").await.unwrap().is_none() {
        api.create(&PostParams::default(), &sa).await.unwrap();
    }
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = api
        .create_token_request("regcred-refresher", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .and_then(|st| st.token)
        .expect("a token");
    s.file(&unique("token"), &token)
        .to_str()
        .unwrap()
        .to_string()
}

/// `--once` for one namespace with only the keyless source described by `envs` (IMDS stays
/// disabled unless `imds`).
async fn run_ecr(s: &Scratch, ns: &str, imds: bool, envs: &[(&str, &str)]) -> Run {
    let cfg = ecr_config(s, ns);
    let mut unset = AWS_CREDENTIAL_ENV.to_vec();
    if imds {
        unset.push("AWS_EC2_METADATA_DISABLED");
    }
    run_bin_without(&["--once", "--config", &cfg], &unset, envs).await
}

/// The run wrote an ECR secret whose `auth` is a token the fixture issued to a caller signing
/// with credentials from `source`.
async fn assert_ecr_written(s: &Scratch, ns: &str, r: &Run, before: &Value, source: &str) {
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(ns, "regcred").await.expect("secret written");
    let auths = auths(&secret);
    let hosts: Vec<_> = auths.as_object().unwrap().keys().cloned().collect();
    assert_eq!(hosts, [ecr_host()]);
    let entry = &auths[&ecr_host()];
    assert_eq!(entry["username"], "AWS");
    let after = stats().await;
    assert_eq!(
        count(&after, &["ecr", "by_source", source]) - count(before, &["ecr", "by_source", source]),
        1,
        "one token call signed with {source} credentials: {after}"
    );
    let issued: Vec<&str> = after["ecr"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        issued.contains(&entry["auth"].as_str().unwrap()),
        "the secret holds a token the fixture issued"
    );
}

/// A failed run: exit 1, no secret, and one `fetch failed` line naming the source and each of
/// `phrases`.
async fn assert_clear_failure(s: &Scratch, ns: &str, r: &Run, phrases: &[&str]) {
    assert_eq!(r.code, 1, "{r:?}");
    assert!(s.secret(ns, "regcred").await.is_none());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("fetch failed"))
        .unwrap_or_else(|| panic!("no `fetch failed` line: {}", r.stderr));
    for p in phrases {
        assert!(line.contains(p), "{p:?} missing from: {line}");
    }
    assert!(
        !line.contains("DispatchFailure {"),
        "no Debug dump in the message: {line}"
    );
}

// ---------------------------------------------------------------- EC2 IMDSv2

#[tokio::test]
async fn imds_v2_role_credentials_write_the_secret() {
    let _g = KEYLESS.lock().await;
    endpoints(json!({})).await;
    let s = Scratch::new().await;
    let ns = s.namespace("kl-imds", &[], &[]).await;
    let before = stats().await;
    let r = run_ecr(&s, &ns, true, &[]).await;
    assert_ecr_written(&s, &ns, &r, &before, "imds").await;
    let after = stats().await;
    let delta = |p: &[&str]| count(&after, p) - count(&before, p);
    assert!(
        delta(&["imds", "token_puts"]) >= 1,
        "an IMDSv2 session token: {after}"
    );
    assert_eq!(delta(&["imds", "unauthorized"]), 0, "every GET carried it");
    let creds = "GET /latest/meta-data/iam/security-credentials/regcred-node";
    assert!(
        delta(&[
            "imds",
            "paths",
            "GET /latest/meta-data/iam/security-credentials/"
        ]) >= 1
            && delta(&["imds", "paths", creds]) >= 1,
        "role name, then its credentials: {}",
        after["imds"]["paths"]
    );
}

#[tokio::test]
async fn imds_absent_refusing_or_silent_is_a_clear_error() {
    let _g = KEYLESS.lock().await;
    let s = Scratch::new().await;
    // Nothing listens (off EC2); no role attached (404); IMDS answers nothing (a hop limit of
    // 1 seen from a Pod).
    for (modes, phrases) in [
        (
            json!({"imds": {"mode": "absent"}, "gke": {"mode": "absent"}}),
            &[
                "source ecr",
                "Ec2InstanceMetadata",
                "Connection refused",
                "fix:",
            ][..],
        ),
        (
            json!({"imds": {"mode": "refuse"}}),
            &["source ecr", "Ec2InstanceMetadata", "404 from IMDS", "fix:"][..],
        ),
        (
            json!({"imds": {"mode": "hang"}}),
            &["source ecr", "Ec2InstanceMetadata", "timeout", "fix:"][..],
        ),
    ] {
        endpoints(modes.clone()).await;
        let ns = s.namespace("kl-imds-err", &[], &[]).await;
        let r = run_ecr(&s, &ns, true, &[]).await;
        assert_clear_failure(&s, &ns, &r, phrases).await;
    }
    endpoints(json!({})).await;
}

// ---------------------------------------------------------------- EKS Pod Identity

#[tokio::test]
async fn pod_identity_agent_credentials_write_the_secret() {
    let _g = KEYLESS.lock().await;
    endpoints(json!({})).await;
    let s = Scratch::new().await;
    let ns = s.namespace("kl-pod", &[], &[]).await;
    let token = projected_token(&s, &ns, "pods.eks.amazonaws.com").await;
    let before = stats().await;
    let r = run_ecr(
        &s,
        &ns,
        false,
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &env("REGCRED_TEST_POD_IDENTITY_URI"),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token),
        ],
    )
    .await;
    assert_ecr_written(&s, &ns, &r, &before, "pod-identity").await;
    let after = stats().await;
    assert_eq!(
        count(&after, &["pod_identity", "credentials"])
            - count(&before, &["pod_identity", "credentials"]),
        1
    );
}

#[tokio::test]
async fn pod_identity_absent_or_refusing_is_a_clear_error() {
    let _g = KEYLESS.lock().await;
    let s = Scratch::new().await;
    let uri = env("REGCRED_TEST_POD_IDENTITY_URI");
    let pod_token = projected_token(
        &s,
        &s.namespace("kl-pod-sa", &[], &[]).await,
        "pods.eks.amazonaws.com",
    )
    .await;
    let sts_token = projected_token(
        &s,
        &s.namespace("kl-pod-sa", &[], &[]).await,
        "sts.amazonaws.com",
    )
    .await;
    let named = "container credentials endpoint http://169.254.170.23/v1/credentials";
    for (modes, token, phrases) in [
        // No agent on the node.
        (
            json!({"pod_identity": {"mode": "absent"}}),
            &pod_token,
            &["source ecr", named, "Connection refused"][..],
        ),
        // No association for this ServiceAccount.
        (
            json!({"pod_identity": {"mode": "refuse"}}),
            &pod_token,
            &["source ecr", named, "StatusCode(400)"][..],
        ),
        // A token for another audience.
        (
            json!({}),
            &sts_token,
            &["source ecr", named, "StatusCode(401)"][..],
        ),
    ] {
        endpoints(modes.clone()).await;
        let ns = s.namespace("kl-pod-err", &[], &[]).await;
        let r = run_ecr(
            &s,
            &ns,
            false,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token),
            ],
        )
        .await;
        assert_clear_failure(&s, &ns, &r, phrases).await;
    }
    endpoints(json!({})).await;
}

// ---------------------------------------------------------------- IRSA

#[tokio::test]
async fn irsa_web_identity_writes_the_secret() {
    let _g = KEYLESS.lock().await;
    let s = Scratch::new().await;
    let ns = s.namespace("kl-irsa", &[], &[]).await;
    let token = projected_token(&s, &ns, "sts.amazonaws.com").await;
    let before = stats().await;
    let r = run_ecr(
        &s,
        &ns,
        false,
        &[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token),
        ],
    )
    .await;
    assert_ecr_written(&s, &ns, &r, &before, "sts:AssumeRoleWithWebIdentity").await;
    let after = stats().await;
    assert_eq!(
        count(&after, &["sts", "web_identity_ok"]) - count(&before, &["sts", "web_identity_ok"]),
        1
    );
}

#[tokio::test]
async fn irsa_with_a_token_sts_refuses_is_a_clear_error() {
    let _g = KEYLESS.lock().await;
    let s = Scratch::new().await;
    let sa_ns = s.namespace("kl-irsa-sa", &[], &[]).await;
    let wrong_audience = projected_token(&s, &sa_ns, "pods.eks.amazonaws.com").await;
    let not_a_jwt = s
        .file("not-a-jwt", "this is not a token")
        .to_str()
        .unwrap()
        .to_string();
    let missing = s.dir.join("no-such-token").to_str().unwrap().to_string();
    for (token, phrases) in [
        (
            &wrong_audience,
            &[
                "source ecr",
                "web identity (IRSA)",
                "Incorrect token audience",
            ][..],
        ),
        (
            &not_a_jwt,
            &["source ecr", "web identity (IRSA)", "InvalidIdentityToken"][..],
        ),
        (
            &missing,
            &["source ecr", "web identity (IRSA)", "no-such-token"][..],
        ),
    ] {
        let ns = s.namespace("kl-irsa-err", &[], &[]).await;
        let r = run_ecr(
            &s,
            &ns,
            false,
            &[
                ("AWS_ROLE_ARN", ROLE),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token),
            ],
        )
        .await;
        assert_clear_failure(&s, &ns, &r, phrases).await;
    }
}

// ---------------------------------------------------------------- GKE metadata server

fn google_config(s: &Scratch, ns: &str) -> String {
    s.file(
        &unique("gar.yaml"),
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev, gcr.io] }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [{ns}]\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// No key file, no GOOGLE_APPLICATION_CREDENTIALS, a HOME without gcloud's ADC file: what is
/// left of gcp_auth's chain is the metadata server (and the gcloud CLI, which has no account).
async fn run_google(s: &Scratch, ns: &str) -> Run {
    let home = s.dir.join(unique("home"));
    std::fs::create_dir_all(&home).unwrap();
    run_bin_without(
        &["--once", "--config", &google_config(s, ns)],
        &["GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"],
        &[("HOME", home.to_str().unwrap())],
    )
    .await
}

#[tokio::test]
async fn gke_metadata_server_token_writes_the_secret() {
    let _g = KEYLESS.lock().await;
    endpoints(json!({})).await;
    let s = Scratch::new().await;
    let ns = s.namespace("kl-gke", &[], &[]).await;
    let before = stats().await;
    let r = run_google(&s, &ns).await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "regcred").await.expect("secret written");
    let auths = auths(&secret);
    let after = stats().await;
    let token = after["gke"]["tokens"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    for host in ["us-docker.pkg.dev", "gcr.io"] {
        assert_eq!(auths[host]["username"], "oauth2accesstoken");
        assert_eq!(
            auths[host]["password"], token,
            "the metadata server's token"
        );
    }
    let delta = |p: &[&str]| count(&after, p) - count(&before, p);
    assert!(delta(&["gke", "token_requests"]) >= 1);
    assert_eq!(
        delta(&["gke", "missing_flavor"]),
        0,
        "every request said Metadata-Flavor: Google"
    );
    // GKE hands out cached tokens with minutes left: the secret carries that real expiry.
    let expires = secret.metadata.annotations.unwrap()["regcred-refresher.io/expires-at"].clone();
    let left = chrono::DateTime::parse_from_rfc3339(&expires)
        .unwrap()
        .timestamp()
        - chrono::Utc::now().timestamp();
    assert!(
        (0..=3600).contains(&left),
        "expires-at {expires}: {left} s left"
    );
}

#[tokio::test]
async fn gke_metadata_absent_or_refusing_is_a_clear_error() {
    let _g = KEYLESS.lock().await;
    let s = Scratch::new().await;
    let named = "GKE metadata server (metadata.google.internal)";
    for (modes, phrases) in [
        // Off GCP (nothing at 169.254.169.254).
        (
            json!({"gke": {"mode": "absent"}, "imds": {"mode": "absent"}}),
            &["source gar", named, "Connection refused", "fix:"][..],
        ),
        // Workload Identity without a binding: IAM refuses the token.
        (
            json!({"gke": {"mode": "refuse"}}),
            &["source gar", named, "token request failed", "fix:"][..],
        ),
    ] {
        endpoints(modes.clone()).await;
        let ns = s.namespace("kl-gke-err", &[], &[]).await;
        let r = run_google(&s, &ns).await;
        assert_clear_failure(&s, &ns, &r, phrases).await;
        if modes["gke"]["mode"] == "refuse" {
            assert!(
                r.stderr.contains("status=403"),
                "the status is logged: {}",
                r.stderr
            );
        }
    }
    endpoints(json!({})).await;
}

/// GKE hands out its cached token until shortly before it expires, so a token may arrive with
/// little life left. The daemon renews it before it expires, even when that is sooner than
/// the `--min-refresh-interval` floor (default 60 s), and the secret never holds an expired
/// token. Compressed: 20 s left at hand-out, a new 40 s token once 10 s remain.
#[tokio::test]
async fn a_gke_token_with_little_life_left_is_renewed_before_it_expires() {
    let _g = KEYLESS.lock().await;
    endpoints(json!({"gke": {"lifetime": 40, "margin": 10, "remaining": 20}})).await;
    let s = Scratch::new().await;
    let ns = s.namespace("kl-gkd", &[], &[]).await;
    let home = s.dir.join(unique("home"));
    std::fs::create_dir_all(&home).unwrap();
    let cfg = google_config(&s, &ns);
    let d = DaemonProc::start(&s, &["--config", &cfg], &[("HOME", home.to_str().unwrap())]).await;
    let mut tokens = std::collections::BTreeSet::new();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(26);
    while tokio::time::Instant::now() < until {
        if let Some(secret) = s.secret(&ns, "regcred").await {
            let ann = secret.metadata.annotations.clone().unwrap_or_default();
            let expires =
                chrono::DateTime::parse_from_rfc3339(&ann["regcred-refresher.io/expires-at"])
                    .unwrap();
            // One second of slack for the annotation's whole-second precision.
            assert!(
                expires.timestamp() + 1 >= chrono::Utc::now().timestamp(),
                "the secret holds a token that expired at {expires}: {}",
                d.logs()
            );
            tokens.insert(
                auths(&secret)["gcr.io"]["password"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(
        tokens.len() >= 2,
        "renewed within the first token's 20 s: {} token(s)\n{}",
        tokens.len(),
        d.logs()
    );
    endpoints(json!({"gke": {"lifetime": 3600, "margin": 300, "remaining": 360}})).await;
}
