//! Static credentials, merging sources into one secret, kubectl as the oracle for the
//! document, and no secret material in any log line.

use super::common::*;

const TRICKY: &str = "p:a@s\"s w'o<r>d&é✓";

#[tokio::test]
async fn static_secret_is_byte_identical_to_kubectls() {
    let s = Scratch::new().await;
    let ns = s.namespace("static", &[], &[]).await;
    let user = s.file("u", "robot+ci\n");
    let pass = s.file("p", &format!("{TRICKY}\n"));
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: hub\n    static: {{ server: \"https://index.docker.io/v1/\", usernameFile: {}, passwordFile: {}, email: ci@example.com }}\nsecrets:\n  - name: hub-pull\n    registries: [hub]\nnamespaces: {{ include: [{ns}] }}\n",
            user.display(),
            pass.display()
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let ours = s.secret(&ns, "hub-pull").await.unwrap().data.unwrap()[".dockerconfigjson"]
        .0
        .clone();

    let oracle = std::process::Command::new("kubectl")
        .args([
            "create",
            "secret",
            "docker-registry",
            "x",
            "--docker-server=https://index.docker.io/v1/",
            "--docker-username=robot+ci",
            &format!("--docker-password={TRICKY}"),
            "--docker-email=ci@example.com",
            "--dry-run=client",
            "-o",
            "jsonpath={.data.\\.dockerconfigjson}",
        ])
        .output()
        .unwrap();
    assert!(
        oracle.status.success(),
        "{}",
        String::from_utf8_lossy(&oracle.stderr)
    );
    let theirs =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &oracle.stdout).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
}

#[tokio::test]
async fn sources_merge_into_one_secret_and_nothing_leaks_at_trace_level() {
    let s = Scratch::new().await;
    let ns = s.namespace("merge", &[], &[]).await;
    let pass = s.file("p", TRICKY);
    let dcj = s.file(
        "dcj.json",
        &format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}}}}}}"#,
            b64("gh-user:gh-leak-check-pw")
        ),
    );
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordEnv: QUAY_PW }}\n  - name: gh\n    static: {{ dockerConfigJsonFile: {} }}\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: all\n    registries: [ecr, quay, gh, gar]\nnamespaces: {{ include: [{ns}] }}\n",
            dcj.display(),
            env("REGCRED_TEST_GOOGLE_KEY_FILE"),
        ),
    );
    let _ = pass;
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[
            ("QUAY_PW", TRICKY),
            (
                "REGCRED_LOG",
                "trace,aws_smithy_runtime::client::orchestrator=trace,gcp_auth=trace",
            ),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let secret = s.secret(&ns, "all").await.unwrap();
    let auths = auths(&secret);
    let hosts: Vec<&String> = auths.as_object().unwrap().keys().collect();
    let acct = env("REGCRED_TEST_AWS_ACCOUNT_ID");
    let ecr_host = format!("{acct}.dkr.ecr.us-east-1.amazonaws.com");
    assert_eq!(
        hosts,
        [
            &ecr_host,
            &"gcr.io".to_string(),
            &"ghcr.io".to_string(),
            &"quay.io".to_string()
        ]
    );
    assert_eq!(auths["quay.io"]["password"], TRICKY);
    assert_eq!(auths["ghcr.io"]["password"], "gh-leak-check-pw");

    // Every secret value, and its base64 `auth` form, is absent from all log output.
    let mut needles = Vec::new();
    for (_, e) in auths.as_object().unwrap() {
        needles.push(e["password"].as_str().unwrap().to_string());
        needles.push(e["auth"].as_str().unwrap().to_string());
    }
    let payload = &secret.data.as_ref().unwrap()[".dockerconfigjson"].0;
    needles.push(b64(std::str::from_utf8(payload).unwrap()));
    assert!(
        r.stderr.lines().count() > 20,
        "trace logging produced output"
    );
    for n in &needles {
        assert!(
            !r.stderr.contains(n.as_str()),
            "secret material in logs: {n}"
        );
        assert!(
            !r.stdout.contains(n.as_str()),
            "secret material on stdout: {n}"
        );
    }
}

#[tokio::test]
async fn a_failed_source_leaves_the_last_good_secret() {
    let s = Scratch::new().await;
    let ns = s.namespace("keep", &[], &[]).await;
    let doc = format!(
        r#"{{"auths":{{"quay.io":{{"username":"bot","password":"first-password","auth":"{}"}}}}}}"#,
        b64("bot:first-password")
    );
    let file = s.file("dcj", &doc);
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ dockerConfigJsonFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {{ include: [{ns}] }}\n",
            file.display()
        ),
    );
    assert_eq!(
        run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[])
            .await
            .code,
        0
    );
    let before = s.secret(&ns, "regcred").await.unwrap();
    // The mounted document is replaced by something that is not one: a failure only a fetch
    // can see (an empty or blank password is refused at start, exit 2).
    std::fs::write(&file, "{ not json").unwrap();
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("source quay"), "{}", r.stderr);
    let after = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(rv(&after), rv(&before));
    assert_eq!(auths(&after)["quay.io"]["password"], "first-password");
}

/// `--fail-on=sources` (the chart's install hook and CronJob): a secret of ours' name that a
/// tenant made, or a namespace named but missing, is reported and the run exits 0; a source
/// that fails still fails the run. The default, `any`, fails on both.
#[tokio::test]
async fn fail_on_sources_passes_tenant_problems_and_fails_a_source() {
    let s = Scratch::new().await;
    let ok = s.namespace("fo", &[], &[]).await;
    let tenant = s.namespace("fo", &[], &[]).await;
    let foreign = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("regcred".into()),
            ..Default::default()
        },
        string_data: Some([("x".to_string(), "hand-made".to_string())].into()),
        ..Default::default()
    };
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.client.clone(), &tenant)
        .create(&Default::default(), &foreign)
        .await
        .unwrap();
    let missing = unique("fo-missing");
    let doc = format!(
        r#"{{"auths":{{"quay.io":{{"username":"bot","password":"pw-1","auth":"{}"}}}}}}"#,
        b64("bot:pw-1")
    );
    let file = s.file("dcj", &doc);
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ dockerConfigJsonFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {{ include: [{ok}, {tenant}, {missing}] }}\n",
            file.display()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let any = run_bin(&["--once", "--config", cfg], &[]).await;
    assert_eq!(any.code, 1, "{any:?}");
    let sources = run_bin(&["--once", "--config", cfg, "--fail-on", "sources"], &[]).await;
    assert_eq!(sources.code, 0, "{sources:?}");
    assert!(
        sources.stderr.contains("conflict") && sources.stderr.contains(&missing),
        "still reported: {}",
        sources.stderr
    );
    assert!(s.secret(&ok, "regcred").await.is_some());
    // The mounted document breaks (a failure only a fetch sees): a failing source fails the
    // run whatever --fail-on says.
    std::fs::write(&file, "{ not json").unwrap();
    let broken = run_bin(
        &["--once", "--config", cfg],
        &[("REGCRED_FAIL_ON", "sources")],
    )
    .await;
    assert_eq!(broken.code, 1, "{broken:?}");
}
