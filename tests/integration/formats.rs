//! Secret formats for the other consumers of registry credentials (issue 24): Argo CD
//! repositories and credential templates, and `kubernetes.io/basic-auth`, with the lifecycle
//! of the default format: created, unchanged on a second run, renewed at the margin, a hand-
//! made Argo CD secret adopted only when asked, a misconfiguration refused at start.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::common::*;
use super::faults_proxy::FaultProxy;

fn text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .as_ref()
        .map(|d| {
            d.iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn label<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn ecr_host() -> String {
    format!(
        "{}.dkr.ecr.us-east-1.amazonaws.com",
        env("REGCRED_TEST_AWS_ACCOUNT_ID")
    )
}

#[tokio::test]
async fn a_basic_auth_secret_is_written_once_and_follows_a_rotated_password() {
    let s = Scratch::new().await;
    let ns = s.namespace("basic", &[], &[]).await;
    let (one, two) = (unique("pw-basic-one"), unique("pw-basic-two"));
    let pw = s.file("pw", &format!("{one}\n"));
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {pw:?} }}\nsecrets:\n  - name: quay-basic\n    registries: [quay]\n    format: basic-auth\nnamespaces: {{ include: [{ns}] }}\n"
        ),
    );
    let args = ["--once", "--config", cfg.to_str().unwrap()];
    let first = run_bin(&args, &[]).await;
    assert_eq!(first.code, 0, "{first:?}");
    let created = s.secret(&ns, "quay-basic").await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let d = text(&created);
    assert_eq!(
        d,
        [
            ("password".to_string(), one.clone()),
            ("username".to_string(), "bot".to_string())
        ]
        .into()
    );
    let again = run_bin(&args, &[]).await;
    assert!(again.stderr.contains("unchanged=1"), "{}", again.stderr);
    assert_eq!(
        rv(&s.secret(&ns, "quay-basic").await.unwrap()),
        rv(&created)
    );
    std::fs::write(&pw, format!("{two}\n")).unwrap();
    let rotated = run_bin(&args, &[]).await;
    assert!(rotated.stderr.contains("updated=1"), "{}", rotated.stderr);
    let after = s.secret(&ns, "quay-basic").await.unwrap();
    assert_eq!(text(&after)["password"], two);
    assert_eq!(
        after.metadata.uid, created.metadata.uid,
        "rewritten in place"
    );
    let all = format!("{first:?}{again:?}{rotated:?}");
    assert!(
        !all.contains(&one) && !all.contains(&two),
        "a password was logged"
    );
}

/// An Argo CD repository for Helm charts in ECR, as Argo CD's declarative setup documents it
/// (`type: helm`, `enableOCI: "true"`, the registry host as `url`, user `AWS`), renewed at the
/// margin with a new token, and never rewritten on a run that only sees a newer token.
#[tokio::test]
async fn an_argocd_repository_for_ecr_is_created_kept_and_renewed_at_the_margin() {
    let s = Scratch::new().await;
    let ns = s.namespace("argocd", &[], &[]).await;
    // 30 s tokens; half of the life left: due 15 s after the fetch.
    let ecr = FaultProxy::http(
        &env("AWS_ENDPOINT_URL"),
        json!([{"method": "POST", "json_set": [[["authorizationData", 0, "expiresAt"], {"now_plus": 30}]]}]),
    )
    .await;
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: ecr-charts\n    registries: [ecr]\n    format: argocd-repository\n    argocd: {{ name: ecr-charts, project: default }}\nnamespaces: {{ include: [{ns}] }}\n"
        ),
    );
    let url = ecr.url();
    let envs = [("AWS_ENDPOINT_URL", url.as_str())];
    let args = [
        "--once",
        "--config",
        cfg.to_str().unwrap(),
        "--refresh-margin",
        "0.5",
    ];
    let first = run_bin(&args, &envs).await;
    assert_eq!(first.code, 0, "{first:?}");
    let created = s.secret(&ns, "ecr-charts").await.unwrap();
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        label(&created, "argocd.argoproj.io/secret-type"),
        Some("repository")
    );
    assert_eq!(
        label(&created, "app.kubernetes.io/managed-by"),
        Some("regcred-refresher")
    );
    let d = text(&created);
    assert_eq!(d["url"], ecr_host());
    assert_eq!(
        (d["type"].as_str(), d["enableOCI"].as_str()),
        ("helm", "true")
    );
    assert_eq!(
        (d["name"].as_str(), d["project"].as_str()),
        ("ecr-charts", "default")
    );
    assert_eq!(d["username"], "AWS");
    assert!(!d["password"].is_empty());
    let annotations = created.metadata.annotations.clone().unwrap();
    assert!(annotations.contains_key("regcred-refresher.io/expires-at"));
    assert!(annotations.contains_key("regcred-refresher.io/refresh-after"));

    let early = run_bin(&args, &envs).await;
    assert!(early.stderr.contains("unchanged=1"), "{}", early.stderr);
    assert_eq!(
        rv(&s.secret(&ns, "ecr-charts").await.unwrap()),
        rv(&created)
    );
    tokio::time::sleep(Duration::from_secs(16)).await;
    let due = run_bin(&args, &envs).await;
    assert!(
        due.stderr.contains("updated=1") && due.stderr.contains("due for renewal"),
        "{}",
        due.stderr
    );
    let after = text(&s.secret(&ns, "ecr-charts").await.unwrap());
    assert_ne!(after["password"], d["password"], "a new token landed");
    assert!(!format!("{first:?}{early:?}{due:?}").contains(&d["password"]));
}

/// A repository secret made by hand (or by `argocd repo add`) is another owner's: a conflict,
/// untouched, until `adopt: true` takes it over whole, as a credential template here.
#[tokio::test]
async fn a_hand_made_argocd_secret_is_adopted_only_when_asked() {
    let s = Scratch::new().await;
    let ns = s.namespace("adopt-argo", &[], &[]).await;
    let hand_made = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("quay-creds".into()),
            labels: Some(
                [(
                    "argocd.argoproj.io/secret-type".to_string(),
                    "repo-creds".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        string_data: Some(
            [
                ("url", "quay.io"),
                ("type", "helm"),
                ("enableOCI", "true"),
                ("username", "someone"),
                ("password", "typed-by-hand"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(s.client.clone(), &ns)
        .create(&PostParams::default(), &hand_made)
        .await
        .unwrap();
    let pw = s.file("pw", "robot-pw\n");
    let cfg = |adopt: bool| {
        s.file(
            &format!("c-{adopt}.yaml"),
            &format!(
                "registries:\n  - name: quay\n    static: {{ server: quay.io, username: robot, passwordFile: {pw:?} }}\nsecrets:\n  - name: quay-creds\n    registries: [quay]\n    format: argocd-repo-creds\n    adopt: {adopt}\nnamespaces: {{ include: [{ns}] }}\n"
            ),
        )
    };
    let refused = run_bin(&["--once", "--config", cfg(false).to_str().unwrap()], &[]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("conflict"), "{}", refused.stderr);
    let kept = s.secret(&ns, "quay-creds").await.unwrap();
    assert_eq!(text(&kept)["password"], "typed-by-hand");

    let adopted = run_bin(&["--once", "--config", cfg(true).to_str().unwrap()], &[]).await;
    assert_eq!(adopted.code, 0, "{adopted:?}");
    let now = s.secret(&ns, "quay-creds").await.unwrap();
    let d = text(&now);
    assert_eq!(
        (d["username"].as_str(), d["password"].as_str()),
        ("robot", "robot-pw")
    );
    assert_eq!(d["url"], "quay.io");
    assert_eq!(
        label(&now, "argocd.argoproj.io/secret-type"),
        Some("repo-creds")
    );
    assert_eq!(
        label(&now, "app.kubernetes.io/managed-by"),
        Some("regcred-refresher")
    );
    assert_eq!(now.metadata.uid, kept.metadata.uid);
}

#[tokio::test]
async fn a_format_that_cannot_hold_the_secrets_sources_is_refused_at_start() {
    let s = Scratch::new().await;
    let pw = s.file("pw", "x\n");
    let dcj = s.file("dcj", r#"{"auths":{"quay.io":{"auth":"dTpw"}}}"#);
    let base = |secret: &str| {
        format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {pw:?} }}\n  - name: ghcr\n    static: {{ server: ghcr.io, username: bot, passwordFile: {pw:?} }}\n  - name: gar\n    google: {{ hosts: [gcr.io, us-docker.pkg.dev] }}\n  - name: doc\n    static: {{ dockerConfigJsonFile: {dcj:?} }}\nsecrets:\n{secret}namespaces: {{ include: [team-a] }}\n"
        )
    };
    for (secret, want) in [
        (
            "  - name: s\n    registries: [quay, ghcr]\n    format: basic-auth\n",
            &[
                "secrets[0].registries",
                "basic-auth",
                "2 are listed",
                "fix:",
            ][..],
        ),
        (
            "  - name: s\n    registries: [gar]\n    format: argocd-repository\n",
            &[
                "secrets[0].registries[0]",
                "\"gar\" may give several hosts",
                "fix:",
            ],
        ),
        (
            "  - name: s\n    registries: [doc]\n    format: argocd-repo-creds\n",
            &["secrets[0].registries[0]", "\"doc\"", "fix:"],
        ),
        (
            "  - name: s\n    registries: [quay]\n    format: basic_auth\n",
            &[
                "secrets[0].format",
                "\"basic_auth\"",
                "did you mean \"basic-auth\"",
            ],
        ),
        (
            "  - name: s\n    registries: [quay]\n    format: argocd-repository\n    argocd: { type: git }\n",
            &["secrets[0].argocd.type", "\"git\"", "fix:"],
        ),
        (
            "  - name: s\n    registries: [quay]\n    argocd: { name: x }\n",
            &["secrets[0].argocd", "dockerconfigjson", "fix:"],
        ),
        (
            "  - name: s\n    registries: [quay]\n    format: argocd-repository\n    argocd: { url: \"https://u:p@quay.io\" }\n",
            &["secrets[0].argocd.url", "user info", "fix:"],
        ),
    ] {
        let cfg = s.file(&unique("bad.yaml"), &base(secret));
        let r = run_bin(
            &["--once", "--config", cfg.to_str().unwrap()],
            &[("KUBECONFIG", "/nonexistent")],
        )
        .await;
        assert_eq!(r.code, 2, "{secret}: {r:?}");
        assert!(
            r.stderr.lines().any(|l| want.iter().all(|w| l.contains(w))),
            "{secret}: want {want:?} on one line: {}",
            r.stderr
        );
    }
}

/// The helm CLI the chart tests install (tests/chart/tools.sh), or `REGCRED_TEST_HELM`.
fn helm() -> String {
    std::env::var("REGCRED_TEST_HELM").unwrap_or_else(|_| {
        let cache = std::env::var("XDG_CACHE_HOME")
            .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap()));
        let p = format!("{cache}/regcred-refresher/tools/bin/helm");
        assert!(
            std::path::Path::new(&p).exists(),
            "no helm at {p}: run `bash tests/chart/tools.sh` (make test does) or set REGCRED_TEST_HELM"
        );
        p
    })
}

/// Runs helm with its own config, cache and registry login file in the test's scratch dir.
async fn run_helm(s: &Scratch, args: &[&str]) -> std::process::Output {
    let home = s.dir.join("helm-home");
    std::fs::create_dir_all(&home).unwrap();
    tokio::process::Command::new(helm())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("HELM_REGISTRY_CONFIG", home.join("registry.json"))
        .output()
        .await
        .unwrap()
}

/// Real clients (issue 24): the Argo CD repository secret's username and password pull a Helm
/// chart with the real `helm` CLI (`helm pull oci://…`, as Argo CD's repo-server does) from the
/// world's ECR registry, which checks them as ECR does (tests/fixtures/registry_front.py); a
/// password the fixture never issued is refused. The basic-auth secret's values authenticate a
/// Basic request at the same registry.
#[tokio::test]
async fn argocd_and_basic_auth_credentials_authenticate_real_clients_at_the_registry() {
    let (Ok(backend), Ok(host)) = (
        std::env::var("REGCRED_TEST_REGISTRY_BACKEND"),
        std::env::var("REGCRED_TEST_ECR_REGISTRY"),
    ) else {
        panic!("the world's registries are off (REGCRED_TEST_NODE=0): this test needs them");
    };
    let s = Scratch::new().await;
    let ns = s.namespace("argo-pull", &[], &[]).await;
    // A chart of its own in the ECR registry's repository space of the backend.
    let chart = s.dir.join("demo");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    let version = "0.1.0";
    std::fs::write(
        chart.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: {}\nversion: {version}\n",
            unique("demo")
        ),
    )
    .unwrap();
    let name = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
    let name = name
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("name: ")
        .to_string();
    let pkg = run_helm(
        &s,
        &[
            "package",
            chart.to_str().unwrap(),
            "-d",
            s.dir.to_str().unwrap(),
        ],
    )
    .await;
    assert!(pkg.status.success(), "helm package: {pkg:?}");
    let tgz = s.dir.join(format!("{name}-{version}.tgz"));
    let push = run_helm(
        &s,
        &[
            "push",
            tgz.to_str().unwrap(),
            &format!("oci://{backend}/{host}/charts"),
            "--plain-http",
        ],
    )
    .await;
    assert!(push.status.success(), "helm push: {push:?}");

    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: ecr-charts\n    registries: [ecr]\n    format: argocd-repository\n  - name: ecr-basic\n    registries: [ecr]\n    format: basic-auth\nnamespaces: {{ include: [{ns}] }}\n"
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let argo = text(&s.secret(&ns, "ecr-charts").await.unwrap());
    assert_eq!(argo["url"], host);
    let ca = env("REGCRED_TEST_CA_CERT");
    let pull = |user: String, pass: String, dest: &'static str| {
        let url = format!("oci://{}/charts/{name}", argo["url"]);
        let dest = s.dir.join(dest);
        let ca = ca.clone();
        let s = &s;
        async move {
            std::fs::create_dir_all(&dest).unwrap();
            let out = run_helm(
                s,
                &[
                    "pull",
                    &url,
                    "--version",
                    version,
                    "--username",
                    &user,
                    "--password",
                    &pass,
                    "--ca-file",
                    &ca,
                    "--destination",
                    dest.to_str().unwrap(),
                ],
            )
            .await;
            (out, dest)
        }
    };
    let (ok, dest) = pull(argo["username"].clone(), argo["password"].clone(), "ok").await;
    assert!(
        ok.status.success(),
        "helm pull with the Argo CD secret: {ok:?}"
    );
    assert!(dest.join(format!("{name}-{version}.tgz")).exists());
    let (forged, _) = pull("AWS".into(), "bm90LWlzc3VlZA".into(), "forged").await;
    assert!(
        !forged.status.success(),
        "a forged password pulled: {forged:?}"
    );
    let err = String::from_utf8_lossy(&forged.stderr);
    assert!(err.contains("401") || err.contains("nauthorized"), "{err}");

    let basic = text(&s.secret(&ns, "ecr-basic").await.unwrap());
    let curl = |user: &str, pass: &str| {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                &ca,
                "-u",
            ])
            .arg(format!("{user}:{pass}"))
            .arg(format!("https://{host}/v2/"))
            .output()
            .unwrap()
    };
    let good = curl(&basic["username"], &basic["password"]);
    assert_eq!(String::from_utf8_lossy(&good.stdout), "200", "{good:?}");
    let bad = curl(&basic["username"], "bm90LWlzc3VlZA");
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "401", "{bad:?}");
}

/// The daemon serves the formats as it serves the default: a new namespace gets its Argo CD
/// repository secret, a deleted one is restored, and `status` reads each by its own type.
#[tokio::test]
async fn the_daemon_restores_an_argocd_secret_and_status_reads_its_type() {
    let s = Scratch::new().await;
    let p = unique("dfmt");
    let first = s.namespace(&p, &[], &[]).await;
    let pw = s.file("pw", "daemon-pw\n");
    let cfg = s.file(
        "d.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {pw:?} }}\nsecrets:\n  - name: quay-repo\n    registries: [quay]\n    format: argocd-repository\nnamespaces:\n  include: [\"{p}-*\"]\n"
        ),
    );
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    let has = |ns: String| {
        let s = &s;
        async move {
            s.secret(&ns, "quay-repo")
                .await
                .is_some_and(|x| label(&x, "argocd.argoproj.io/secret-type") == Some("repository"))
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), || has(first.clone())).await,
        "{}",
        d.logs()
    );
    let second = s.namespace(&p, &[], &[]).await;
    assert!(
        wait_until(Duration::from_secs(15), || has(second.clone())).await,
        "new namespace not served: {}",
        d.logs()
    );
    Api::<Secret>::namespaced(s.client.clone(), &first)
        .delete("quay-repo", &Default::default())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || has(first.clone())).await,
        "deleted secret not restored: {}",
        d.logs()
    );
    let status = run_bin(&["status", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(
        status.stdout.matches("valid").count(),
        2,
        "{}",
        status.stdout
    );
    assert!(!format!("{status:?}{}", d.logs()).contains("daemon-pw"));
}
