//! Google through the token fixture: one token for every configured host, real expiry,
//! and a clear error when the credentials file is not a service-account key.

use super::common::*;

#[tokio::test]
async fn one_token_serves_every_host_with_its_real_expiry() {
    let s = Scratch::new().await;
    let ns = s.namespace("gar", &[], &[]).await;
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev, gcr.io] }}\nsecrets:\n  - name: gcp\n    registries: [gar]\nnamespaces: {{ include: [{ns}] }}\n"
        ),
    );
    // The default chain picks the key up from GOOGLE_APPLICATION_CREDENTIALS.
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &env("REGCRED_TEST_GOOGLE_KEY_FILE"),
        )],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "gcp").await.unwrap();
    let a = auths(&secret);
    assert_eq!(a["gcr.io"]["username"], "oauth2accesstoken");
    assert_eq!(a["gcr.io"]["password"], a["us-docker.pkg.dev"]["password"]);
    assert!(
        a["gcr.io"]["password"]
            .as_str()
            .unwrap()
            .starts_with("ya29.")
    );
    let exp = &secret.metadata.annotations.unwrap()["regcred-refresher.io/expires-at"];
    let left = chrono::DateTime::parse_from_rfc3339(exp)
        .unwrap()
        .with_timezone(&chrono::Utc)
        - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(50) && left < chrono::Duration::minutes(61),
        "{left}"
    );
}

#[tokio::test]
async fn a_non_service_account_credentials_file_exits_2_before_any_call() {
    let s = Scratch::new().await;
    let adc = s.file(
        "adc.json",
        r#"{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}"#,
    );
    let cfg = s.file(
        "c.yaml",
        "registries:\n  - name: gar\n    google: { hosts: [gcr.io] }\nsecrets:\n  - name: gcp\n    registries: [gar]\n",
    );
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[("GOOGLE_APPLICATION_CREDENTIALS", adc.to_str().unwrap())],
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("not a service-account key"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn a_rejected_assertion_is_a_source_failure() {
    let s = Scratch::new().await;
    let ns = s.namespace("gbad", &[], &[]).await;
    // Same key file, but the fixture only trusts the world's key: swap in a fresh RSA key.
    let mut key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env("REGCRED_TEST_GOOGLE_KEY_FILE")).unwrap(),
    )
    .unwrap();
    let pem = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .unwrap();
    key["private_key"] = String::from_utf8(pem.stdout).unwrap().into();
    let keyfile = s.file("other-key.json", &key.to_string());
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: gcp\n    registries: [gar]\nnamespaces: {{ include: [{ns}] }}\n",
            keyfile.display()
        ),
    );
    let r = run_bin(
        &[
            "--once",
            "--provider-timeout",
            "20",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("source gar"), "{}", r.stderr);
    assert!(s.secret(&ns, "gcp").await.is_none());
}
