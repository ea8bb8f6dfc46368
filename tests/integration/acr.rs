//! Azure Container Registry end to end, against the world's Entra ID and ACR fixture
//! (tests/fixtures/azure_fixture.py) reached by their real names over TLS: Workload Identity
//! with a ServiceAccount token from the world's own kube-apiserver (TokenRequest for
//! api://AzureADTokenExchange, as the webhook projects one), a service principal's secret from
//! a file, refusals with the fix, renewal driven by the refresh token's own expiry, and the
//! kubelet's keyring picking the credential. Each test registers an app of its own, so
//! lifetimes are never changed world-wide.

use std::path::Path;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

use super::common::*;
use super::keyless::projected_token;
use super::pull_proof::{assert_none, assert_served, keyring};

const USER: &str = "00000000-0000-0000-0000-000000000000";
const AUDIENCE: &str = "api://AzureADTokenExchange";

fn registry() -> String {
    env("REGCRED_TEST_AZURE_REGISTRY")
}

/// A client ID of its own for each test (a random GUID).
pub(super) fn client_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(..0x1000),
        fastrand::u64(..1 << 48)
    )
}

/// Registers an app (managed identity or app registration) with the fixture's Entra ID.
pub(super) async fn register(app: Value) {
    let (status, doc) = fixture_request(
        &env("REGCRED_TEST_AZURE_CONTROL_URL"),
        "POST",
        "/apps",
        &app,
    )
    .await;
    assert_eq!(status, 200, "{doc}");
}

pub(super) async fn stats() -> Value {
    fixture_request(
        &env("REGCRED_TEST_AZURE_CONTROL_URL"),
        "GET",
        "/stats",
        &Value::Null,
    )
    .await
    .1
}

pub(super) async fn issued_by_fixture(token: &str) -> bool {
    stats().await["refresh_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == token)
}

/// One `acr` source for the world's registry (`extra` adds fields) → secret `regcred` in `ns`.
fn config(s: &Scratch, ns: &str, extra: &str) -> String {
    s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: acr\n    acr: {{ loginServer: {}{extra} }}\nsecrets:\n  - name: regcred\n    registries: [acr]\nnamespaces:\n  include: [{ns}]\n",
            registry()
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// What the Azure Workload Identity webhook injects, plus the world's CA for TLS.
fn webhook_env(client: &str, token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_TENANT_ID", env("REGCRED_TEST_AZURE_TENANT")),
        ("AZURE_CLIENT_ID", client.to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", token.to_string()),
        (
            "AZURE_AUTHORITY_HOST",
            "https://login.microsoftonline.com/".to_string(),
        ),
        ("SSL_CERT_FILE", env("REGCRED_TEST_CA_CERT")),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn password(secret: &Secret) -> String {
    auths(secret)[registry().as_str()]["password"]
        .as_str()
        .unwrap()
        .to_string()
}

fn expires_at(secret: &Secret) -> chrono::DateTime<chrono::Utc> {
    let ann = secret.metadata.annotations.clone().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(&ann["regcred-refresher.io/expires-at"])
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn jwt_exp(token: &str) -> i64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap()
}

/// What `docker pull` does with the written credential: the `auth` field as Basic auth at the
/// registry's token endpoint (curl, over the world's TLS). The HTTP status.
async fn registry_accepts(entry: &Value) -> u16 {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &env("REGCRED_TEST_CA_CERT"),
            "-H",
            &format!("Authorization: Basic {}", entry["auth"].as_str().unwrap()),
            &format!(
                "https://{0}/oauth2/token?service={0}&scope=repository:team/app:pull",
                registry()
            ),
        ])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

#[tokio::test]
async fn workload_identity_writes_a_refresh_token_the_registry_and_the_kubelet_accept() {
    let s = Scratch::new().await;
    let ns = s.namespace("acrwi", &[], &[]).await;
    let client = client_id();
    register(json!({
        "client_id": client,
        "subjects": [format!("system:serviceaccount:{ns}:regcred-refresher")],
        "acr_pull": [registry()],
    }))
    .await;
    let token = projected_token(&s, &ns, AUDIENCE).await;
    let envs = webhook_env(&client, &token);
    let r = run_bin(&["--once", "--config", &config(&s, &ns, "")], &pairs(&envs)).await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "regcred").await.expect("secret written");
    let a = auths(&secret);
    let entry = &a[registry().as_str()];
    assert_eq!(entry["username"], USER, "{a}");
    let pw = password(&secret);
    assert!(
        issued_by_fixture(&pw).await,
        "a refresh token of the registry"
    );
    // The refresh token's own expiry (3 h at the fixture's default) is the secret's.
    assert_eq!(expires_at(&secret).timestamp(), jwt_exp(&pw));
    let left = expires_at(&secret) - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(175) && left <= chrono::Duration::minutes(180),
        "{left}"
    );
    assert!(!r.stderr.contains(&pw), "the token never reaches the log");
    assert_eq!(registry_accepts(entry).await, 200, "the registry takes it");
    let by_client = &stats().await["by_client"][&client];
    assert_eq!(by_client["entra"], 1, "{by_client}");
    assert_eq!(by_client["exchange"], 1, "{by_client}");

    // The kubelet hands exactly this credential for the registry's images, none for another.
    let image = format!("{}/team/app:1", registry());
    let other = format!("{}/team/app:1", env("REGCRED_TEST_AZURE_OTHER_REGISTRY"));
    let results = keyring(&ns, &["regcred"], &[&image, &other]).await;
    assert_served(&results, &image, &ns, "regcred", &registry(), entry);
    assert_none(&results, &other);
}

#[tokio::test]
async fn a_service_principal_secret_works_and_a_wrong_one_keeps_the_last_good_secret() {
    let s = Scratch::new().await;
    let ns = s.namespace("acrsp", &[], &[]).await;
    let client = client_id();
    let secret_value = unique("sp~secret");
    register(json!({"client_id": client, "secret": secret_value, "acr_pull": [registry()]})).await;
    let secret_file = s.file(&unique("client-secret"), &format!("{secret_value}\n"));
    let extra = format!(
        ", tenantId: {}, clientId: {client}, clientSecretFile: {secret_file:?}",
        env("REGCRED_TEST_AZURE_TENANT")
    );
    let cfg = config(&s, &ns, &extra);
    let ca = [("SSL_CERT_FILE", env("REGCRED_TEST_CA_CERT"))];
    let r = run_bin(&["--once", "--config", &cfg], &pairs(&ca)).await;
    assert_eq!(r.code, 0, "{r:?}");
    let good = s.secret(&ns, "regcred").await.expect("secret written");
    assert!(issued_by_fixture(&password(&good)).await);
    assert!(
        !r.stderr.contains(&secret_value),
        "the client secret never reaches the log"
    );

    // The Secret behind the file now holds a stale value: Entra refuses, the run fails
    // naming the source and the fix, and the secret in the namespace is untouched.
    std::fs::write(&secret_file, "stale-secret\n").unwrap();
    let r = run_bin(&["--once", "--force", "--config", &cfg], &pairs(&ca)).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_says(
        &r.stderr,
        &[
            "source acr",
            "Entra token request",
            "AADSTS7000215",
            "fix: the client secret is wrong or expired",
        ],
    );
    assert!(
        !r.stderr.contains("Trace ID"),
        "one line of Entra's description"
    );
    let kept = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(rv(&kept), rv(&good), "the last good secret stays");
}

#[tokio::test]
async fn an_untrusted_service_account_is_refused_with_the_fix() {
    let s = Scratch::new().await;
    let ns = s.namespace("acrno", &[], &[]).await;
    let client = client_id();
    // The federated credential names another ServiceAccount.
    register(json!({
        "client_id": client,
        "subjects": [format!("system:serviceaccount:{ns}:someone-else")],
        "acr_pull": [registry()],
    }))
    .await;
    let token = projected_token(&s, &ns, AUDIENCE).await;
    let envs = webhook_env(&client, &token);
    let r = run_bin(&["--once", "--config", &config(&s, &ns, "")], &pairs(&envs)).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_says(
        &r.stderr,
        &[
            "AADSTS700213",
            &format!("system:serviceaccount:{ns}:regcred-refresher"),
            "fix: add a federated credential",
        ],
    );
    assert!(s.secret(&ns, "regcred").await.is_none());

    // A token for the wrong audience is refused for its audience.
    register(json!({
        "client_id": client,
        "subjects": [format!("system:serviceaccount:{ns}:regcred-refresher")],
    }))
    .await;
    let wrong = projected_token(&s, &ns, "sts.amazonaws.com").await;
    let envs = webhook_env(&client, &wrong);
    let r = run_bin(&["--once", "--config", &config(&s, &ns, "")], &pairs(&envs)).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("AADSTS700212"), "{}", r.stderr);
}

#[tokio::test]
async fn without_the_webhooks_variables_the_start_names_the_field() {
    let s = Scratch::new().await;
    let r = run_bin(&["--once", "--config", &config(&s, "default", "")], &[]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert_says(
        &r.stderr,
        &[
            "registries[0].acr.tenantId",
            "AZURE_TENANT_ID is not set",
            "fix:",
        ],
    );
}

/// The refresh token's `exp` drives renewal: with 20 s tokens the daemon writes a new one
/// before each expires, re-reading the projected token at each fetch.
#[tokio::test]
async fn the_daemon_renews_before_the_refresh_token_expires() {
    let s = Scratch::new().await;
    let ns = s.namespace("acrd", &[], &[]).await;
    let client = client_id();
    register(json!({
        "client_id": client,
        "subjects": [format!("system:serviceaccount:{ns}:regcred-refresher")],
        "refresh_lifetime": 20,
        "acr_pull": [registry()],
    }))
    .await;
    let token = projected_token(&s, &ns, AUDIENCE).await;
    let envs = webhook_env(&client, &token);
    let cfg = config(&s, &ns, "");
    let d = DaemonProc::start(
        &s,
        &[&["--config", &cfg][..], &FAST_RENEWAL].concat(),
        &pairs(&envs),
    )
    .await;
    let seen = d
        .renewals(&s, &ns, 25, |secret| {
            let pw = password(secret);
            assert_eq!(
                expires_at(secret).timestamp(),
                jwt_exp(&pw),
                "the refresh token's exp is the secret's expiry"
            );
            pw
        })
        .await;
    for pw in &seen {
        assert!(issued_by_fixture(pw).await);
    }
    let by_client = &stats().await["by_client"][&client];
    assert!(
        by_client["entra"].as_u64().unwrap() >= seen.len() as u64,
        "one Entra token per fetch: {by_client}"
    );
    assert!(
        Path::new(&token).exists(),
        "the token file is only read, never replaced"
    );
}
