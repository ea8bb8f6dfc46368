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
    // A second source of the secret fails at its fetch (its token endpoint does not answer):
    // the secret, which cannot be completed, keeps its last good content.
    let dead = google_key_via(&s, &format!("http://{}", free_port())).await;
    let cfg2 = s.file(
        "c2.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ dockerConfigJsonFile: {} }}\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay, gar]\nnamespaces: {{ include: [{ns}] }}\n",
            file.display(),
            dead.display()
        ),
    );
    let r = run_bin(&["--once", "--config", cfg2.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("source gar"), "{}", r.stderr);
    let after = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(rv(&after), rv(&before));
    assert_eq!(auths(&after)["quay.io"]["password"], "first-password");
    // The mounted document replaced by something that is not one is refused at start (exit
    // 2, naming the field): nothing is written either.
    std::fs::write(&file, "{ not json").unwrap();
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("registries[0].static.dockerConfigJsonFile"),
        "{}",
        r.stderr
    );
    let after = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(rv(&after), rv(&before));
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
    // A source that fails at its fetch (a token endpoint that does not answer) fails the run
    // whatever --fail-on says.
    let dead = google_key_via(&s, &format!("http://{}", free_port())).await;
    let broken_cfg = s.file(
        "broken.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ dockerConfigJsonFile: {} }}\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay, gar]\nnamespaces: {{ include: [{ok}, {tenant}, {missing}] }}\n",
            file.display(),
            dead.display()
        ),
    );
    let broken = run_bin(
        &["--once", "--config", broken_cfg.to_str().unwrap()],
        &[("REGCRED_FAIL_ON", "sources")],
    )
    .await;
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(broken.stderr.contains("source gar"), "{}", broken.stderr);
}

/// `status`: per target and secret, read from the cluster, without a token or a write.
#[tokio::test]
async fn status_shows_each_target_and_fails_when_one_is_unusable() {
    let s = Scratch::new().await;
    let written = s.namespace("st", &[], &[]).await;
    let empty = s.namespace("st", &[], &[]).await;
    let pw = s.file("pw", "pw-1");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [{written}] }}")),
    );
    let cfg = cfg.to_str().unwrap();
    assert_eq!(run_bin(&["--once", "--config", cfg], &[]).await.code, 0);
    let ok = run_bin(&["status", "--config", cfg], &[]).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    let line = ok
        .stdout
        .lines()
        .find(|l| l.starts_with(&written))
        .unwrap_or_else(|| panic!("{}", ok.stdout));
    assert!(
        line.contains("regcred") && line.contains("valid") && line.contains("quay"),
        "{line}"
    );
    assert!(!ok.stdout.contains("pw-1"), "a password in the status");
    let both = s.file(
        "both.yaml",
        &static_cfg(&pw, &format!("{{ include: [{written}, {empty}] }}")),
    );
    let r = run_bin(&["--config", both.to_str().unwrap(), "status"], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&empty) && l.contains("MISSING")),
        "{}",
        r.stdout
    );
    assert!(
        s.secret(&empty, "regcred").await.is_none(),
        "status writes nothing"
    );
}

/// Issue 26 items 3 and 4, as the kubelet's keyring reads what we write: a server typed
/// `HTTPS://Quay.IO` is written lowercase (the keyring compares hosts as written), and a
/// user's document whose entry has both `auth` and a disagreeing `username`/`password` is
/// written with what `auth` says (the kubelet decodes `auth` over the other two).
#[tokio::test]
async fn hosts_are_written_as_the_kubelet_matches_them_and_auth_wins_as_in_the_kubelet() {
    let s = Scratch::new().await;
    let ns = s.namespace("keyring", &[], &[]).await;
    let pass = s.file("p", "typed-password\n");
    let doc = format!(
        r#"{{"auths":{{"Ghcr.IO":{{"username":"old-bot","password":"stale","auth":"{}"}}}}}}"#,
        b64("new-bot:fresh")
    );
    let file = s.file("dcj", &doc);
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: \"HTTPS://Quay.IO\", username: bot, passwordFile: {} }}\n  - name: gh\n    static: {{ dockerConfigJsonFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay, gh]\nnamespaces: {{ include: [{ns}] }}\n",
            pass.display(),
            file.display()
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let a = auths(&s.secret(&ns, "regcred").await.unwrap());
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ghcr.io", "https://quay.io"], "{a}");
    let gh = &a["ghcr.io"];
    assert_eq!(
        (gh["username"].as_str(), gh["password"].as_str()),
        (Some("new-bot"), Some("fresh"))
    );
    assert_eq!(gh["auth"], b64("new-bot:fresh"));
}
