//! `--once` with ECR through moto: create, unchanged, assume-role, quick flags, dry runs, diff.

use super::common::*;

fn ecr_config(namespaces: &[&str], extra_ecr: &str, extra: &str) -> String {
    format!(
        "registries:\n  - name: ecr-main\n    ecr: {{ region: us-east-1{extra_ecr} }}\nsecrets:\n  - name: regcred\n    registries: [ecr-main]\nnamespaces:\n  include: [{}]\n{extra}",
        namespaces.join(", ")
    )
}

#[tokio::test]
async fn creates_secrets_then_leaves_them_unchanged() {
    let s = Scratch::new().await;
    let (a, b) = (
        s.namespace("ecr", &[], &[]).await,
        s.namespace("ecr", &[], &[]).await,
    );
    let cfg = s.file("c.yaml", &ecr_config(&[&a, &b], "", ""));
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");

    let acct = env("REGCRED_TEST_AWS_ACCOUNT_ID");
    let host = format!("{acct}.dkr.ecr.us-east-1.amazonaws.com");
    let mut versions = Vec::new();
    for ns in [&a, &b] {
        let secret = s.secret(ns, "regcred").await.expect("secret written");
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let labels = secret.metadata.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "regcred-refresher");
        let ann = secret.metadata.annotations.clone().unwrap();
        assert_eq!(ann["regcred-refresher.io/sources"], "ecr-main");
        assert!(ann.contains_key("regcred-refresher.io/expires-at"));
        let entry = &auths(&secret)[&host];
        assert_eq!(entry["username"], "AWS");
        let password = entry["password"].as_str().unwrap();
        assert_eq!(entry["auth"], b64(&format!("AWS:{password}")));
        let managers: Vec<_> = secret
            .metadata
            .managed_fields
            .clone()
            .unwrap()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert_eq!(
            managers,
            ["regcred-refresher"],
            "written by server-side apply under our manager"
        );
        versions.push(rv(&secret));
    }

    let again = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("unchanged=2"), "{}", again.stderr);
    for (ns, v) in [&a, &b].into_iter().zip(versions) {
        assert_eq!(
            rv(&s.secret(ns, "regcred").await.unwrap()),
            v,
            "no write when unchanged"
        );
    }
}

#[tokio::test]
async fn assumes_the_configured_role_through_sts() {
    let s = Scratch::new().await;
    let ns = s.namespace("role", &[], &[]).await;
    // moto scopes assumed-role credentials to the role's account, so the token (and with it
    // the registry host) proves STS was called with our role.
    let cfg = s.file(
        "c.yaml",
        &ecr_config(
            &[&ns],
            ", roleArn: \"arn:aws:iam::111122223333:role/pull\", externalId: ext-1",
            "",
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let secret = s.secret(&ns, "regcred").await.unwrap();
    let auths = auths(&secret);
    let (host, entry) = auths.as_object().unwrap().iter().next().unwrap();
    assert_eq!(host, "111122223333.dkr.ecr.us-east-1.amazonaws.com");
    assert_eq!(entry["username"], "AWS");
    // The token call was signed with the keys STS handed out for AssumeRole (the world checks
    // every signature against the keys it has seen issued).
    let stats = cloud_fixture("GET", "stats", &serde_json::Value::Null).await;
    assert!(
        stats["ecr"]["by_source"]["sts:AssumeRole"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{stats}"
    );
}

#[tokio::test]
async fn quick_flags_need_no_config_file() {
    let s = Scratch::new().await;
    let ns = s.namespace("quick", &[], &[]).await;
    let r = run_bin(
        &[
            "--once",
            "--ecr-region",
            "us-east-1",
            "--namespaces",
            &ns,
            "--secret-name",
            "ecr-pull",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&ns, "ecr-pull").await.is_some());
}

#[tokio::test]
async fn server_dry_run_validates_and_persists_nothing() {
    let s = Scratch::new().await;
    let ns = s.namespace("dry", &[], &[]).await;
    let cfg = s.file("c.yaml", &ecr_config(&[&ns], "", ""));
    let r = run_bin(
        &[
            "--once",
            "--dry-run=server",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("would be created"), "{}", r.stderr);
    assert!(
        s.secret(&ns, "regcred").await.is_none(),
        "dry run persisted a secret"
    );
}

#[tokio::test]
async fn client_dry_run_prints_manifests_and_persists_nothing() {
    let s = Scratch::new().await;
    let ns = s.namespace("dry", &[], &[]).await;
    let cfg = s.file("c.yaml", &ecr_config(&[&ns], "", ""));
    let r = run_bin(
        &[
            "--once",
            "--dry-run=client",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&ns, "regcred").await.is_none());
    // kubectl reads it back as a valid Secret manifest.
    let manifest = s.file("m.yaml", &r.stdout);
    let out = std::process::Command::new("kubectl")
        .args([
            "create",
            "--dry-run=client",
            "-o",
            "jsonpath={.metadata.namespace}/{.type}",
            "-f",
        ])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{ns}/kubernetes.io/dockerconfigjson")
    );
}

#[tokio::test]
async fn diff_reports_changes_without_writing() {
    let s = Scratch::new().await;
    let ns = s.namespace("diff", &[], &[]).await;
    let cfg = s.file("c.yaml", &ecr_config(&[&ns], "", ""));
    let r = run_bin(
        &["--once", "--diff", "--config", cfg.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), format!("{ns}/regcred: would create"));
    assert!(s.secret(&ns, "regcred").await.is_none());

    assert_eq!(
        run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[])
            .await
            .code,
        0
    );
    let r = run_bin(
        &["--once", "--diff", "--config", cfg.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(r.stdout.trim(), format!("{ns}/regcred: unchanged"));

    // A second registry in the same secret shows up by host, never by value.
    let pass = s.file("p", "diff-secret-pw");
    let two = format!(
        "registries:\n  - name: ecr-main\n    ecr: {{ region: us-east-1 }}\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [ecr-main, quay]\nnamespaces:\n  include: [{ns}]\n",
        pass.display()
    );
    let cfg2 = s.file("c2.yaml", &two);
    let r = run_bin(
        &["--once", "--diff", "--config", cfg2.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(
        r.stdout.contains(
            "would update: configuration changed; credentials added for quay.io; annotation regcred-refresher.io/sources"
        ),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("diff-secret-pw") && !r.stderr.contains("diff-secret-pw"));
}
