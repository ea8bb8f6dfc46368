//! The credential lifecycle on a world that behaves like production: ECR answers a new token
//! on every call, Google tokens expire, two processes of one release overlap, secrets come
//! from `kubectl`. Each test here failed on the main this work started from (0518797).
//!
//! Token calls are counted by a fault proxy of the test's own in front of the world's AWS
//! endpoint or Google fixture (no rules: it only forwards and logs), so parallel tests never
//! see each other's calls.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;

use super::common::*;
use super::faults_proxy::FaultProxy;

/// ECR through a proxy of the test's own; `life` rewrites each token's expiry to that many
/// seconds from now (None: the world's own 12 h).
async fn ecr_proxy(life: Option<i64>) -> FaultProxy {
    let rules = match life {
        Some(l) => {
            json!([{"method": "POST", "json_set": [[["authorizationData", 0, "expiresAt"], {"now_plus": l}]]}])
        }
        None => json!([]),
    };
    FaultProxy::http(&env("AWS_ENDPOINT_URL"), rules).await
}

/// ECR token calls the proxy forwarded (moto's API is one POST path for every action).
async fn ecr_calls(p: &FaultProxy) -> usize {
    p.seen("POST", "").await.len()
}

async fn google_calls(p: &FaultProxy) -> usize {
    p.seen("POST", "/token").await.len()
}

fn ecr_cfg(prefix: &str, extra_registries: &str, secret_registries: &str) -> String {
    format!(
        "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\n{extra_registries}secrets:\n  - name: regcred\n    registries: [{secret_registries}]\nnamespaces:\n  include: [\"{prefix}-*\"]\n"
    )
}

fn password_of(secret: &Secret, host: &str) -> String {
    auths(secret)[host]["password"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ecr_host() -> String {
    format!(
        "{}.dkr.ecr.us-east-1.amazonaws.com",
        env("REGCRED_TEST_AWS_ACCOUNT_ID")
    )
}

/// A CronJob's second run, minutes after the first, with ECR handing out a new token: no
/// write, no token call. `--force` refreshes anyway, with one call per source for all
/// namespaces.
#[tokio::test]
async fn a_second_run_writes_nothing_and_fetches_no_token() {
    let s = Scratch::new().await;
    let p = unique("lc2");
    let mut nss = Vec::new();
    for _ in 0..3 {
        nss.push(s.namespace(&p, &[], &[]).await);
    }
    let ecr = ecr_proxy(None).await;
    let google = FaultProxy::http(&env("REGCRED_TEST_GOOGLE_FIXTURE_URL"), json!([])).await;
    let key = google_key_via(&s, &google.url()).await;
    let pw = s.file("pw", "static-pass");
    let extra = format!(
        "  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev], keyFile: {key:?} }}\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {pw:?} }}\n"
    );
    let cfg = s.file("c.yaml", &ecr_cfg(&p, &extra, "ecr, gar, quay"));
    let envs = [("AWS_ENDPOINT_URL", ecr.url())];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["--once", "--config", cfg.to_str().unwrap()];

    let first = run_bin(&args, &envs).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stderr.contains("created=3"), "{}", first.stderr);
    assert_eq!((ecr_calls(&ecr).await, google_calls(&google).await), (1, 1));
    let mut versions = Vec::new();
    for ns in &nss {
        let secret = s.secret(ns, "regcred").await.expect("written");
        let ann = secret.metadata.annotations.clone().unwrap();
        assert_eq!(ann["regcred-refresher.io/fingerprint"].len(), 32);
        assert!(ann.contains_key("regcred-refresher.io/refresh-after"));
        versions.push(rv(&secret));
    }

    let second = run_bin(&args, &envs).await;
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second.stderr.contains("unchanged=3") && second.stderr.contains("updated=0"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("not fetched"),
        "says why no token was fetched: {}",
        second.stderr
    );
    assert_eq!(
        (ecr_calls(&ecr).await, google_calls(&google).await),
        (1, 1),
        "no token call on the second run"
    );
    for (ns, v) in nss.iter().zip(&versions) {
        assert_eq!(&rv(&s.secret(ns, "regcred").await.unwrap()), v, "no write");
    }

    let forced = run_bin(&[&args[..], &["--force"]].concat(), &envs).await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(forced.stderr.contains("updated=3"), "{}", forced.stderr);
    assert_eq!(
        (ecr_calls(&ecr).await, google_calls(&google).await),
        (2, 2),
        "one call per source, however many namespaces"
    );
    for (ns, v) in nss.iter().zip(&versions) {
        assert_ne!(&rv(&s.secret(ns, "regcred").await.unwrap()), v);
    }
}

/// Once the renewal margin of the token's life is reached, the next run renews it.
#[tokio::test]
async fn a_run_after_the_margin_renews_the_token() {
    let s = Scratch::new().await;
    let p = unique("lcm");
    let ns = s.namespace(&p, &[], &[]).await;
    // 30 s: the second run must decide well before the renewal is due, even on a loaded
    // machine.
    let ecr = ecr_proxy(Some(30)).await;
    let cfg = s.file("c.yaml", &ecr_cfg(&p, "", "ecr"));
    let url = ecr.url();
    let envs = [("AWS_ENDPOINT_URL", url.as_str())];
    // Half of the 30 s life left: renewal due 15 s after the fetch.
    let args = [
        "--once",
        "--config",
        cfg.to_str().unwrap(),
        "--refresh-margin",
        "0.5",
    ];
    let first = run_bin(&args, &envs).await;
    assert_eq!(first.code, 0, "{first:?}");
    let before = s.secret(&ns, "regcred").await.unwrap();
    let early = run_bin(&args, &envs).await;
    assert!(early.stderr.contains("unchanged=1"), "{}", early.stderr);
    assert_eq!(ecr_calls(&ecr).await, 1);
    tokio::time::sleep(Duration::from_secs(16)).await;
    let due = run_bin(&args, &envs).await;
    assert_eq!(due.code, 0, "{due:?}");
    assert!(
        due.stderr.contains("updated=1") && due.stderr.contains("due for renewal"),
        "{}",
        due.stderr
    );
    assert_eq!(ecr_calls(&ecr).await, 2);
    let after = s.secret(&ns, "regcred").await.unwrap();
    assert_ne!(
        password_of(&before, &ecr_host()),
        password_of(&after, &ecr_host()),
        "a new token landed"
    );
}

/// Every Google refresh asks for a new token (gcp_auth would hand back its cached one until
/// 20 s before expiry), and a rotated key file is read at the next fetch.
#[tokio::test]
async fn google_refreshes_get_a_new_token_and_read_a_rotated_key() {
    let s = Scratch::new().await;
    let p = unique("lcg");
    let ns = s.namespace(&p, &[], &[]).await;
    // 60 s tokens, refreshed with half their life (30 s) left: well above gcp_auth's 20 s.
    let google = FaultProxy::http(
        &env("REGCRED_TEST_GOOGLE_FIXTURE_URL"),
        json!([{"method": "POST", "path": "^/token", "json_set": [[["expires_in"], 60]]}]),
    )
    .await;
    let good = std::fs::read_to_string(google_key_via(&s, &google.url()).await).unwrap();
    // A key of the right shape that the token endpoint does not know.
    let other = s.dir.join("other-key.json");
    let gen_key = std::process::Command::new(env("REGCRED_TEST_PYTHON"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/google_token_server.py"
        ))
        .args(["gen-key", "--out", other.to_str().unwrap()])
        .args(["--token-uri", &format!("{}/token", google.url())])
        .output()
        .unwrap();
    assert!(gen_key.status.success(), "{gen_key:?}");
    let key = s.file("key.json", &std::fs::read_to_string(&other).unwrap());
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev], keyFile: {key:?} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\n"
        ),
    );
    let d = DaemonProc::start(
        &s,
        &[&["--config", cfg.to_str().unwrap()][..], &FAST_RENEWAL].concat(),
        &[],
    )
    .await;
    let failed = r#"regcred_refreshes_total{source="gar",result="google"}"#;
    let ok = r#"regcred_refreshes_total{source="gar",result="success"}"#;
    assert!(
        d.metric_reaches(failed, 1.0, 20).await,
        "the unknown key is refused: {}",
        d.logs()
    );
    assert!(s.secret(&ns, "regcred").await.is_none());
    // Rotate the key in place, as a mounted Secret is updated: no restart.
    let tmp = s.file("key.json.new", &good);
    std::fs::rename(&tmp, &key).unwrap();
    assert!(
        d.metric_reaches(ok, 1.0, 20).await,
        "the rotated key is read at the next fetch: {}",
        d.logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.secret(&ns, "regcred").await.is_some()
        })
        .await
    );
    let first = password_of(
        &s.secret(&ns, "regcred").await.unwrap(),
        "us-docker.pkg.dev",
    );
    let calls = google_calls(&google).await;
    // The refresh comes with about 30 s of the token's life left.
    assert!(
        d.metric_reaches(ok, 2.0, 45).await,
        "a second refresh: {}",
        d.logs()
    );
    assert!(
        google_calls(&google).await > calls,
        "the refresh asked the token endpoint, not a cache"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let now = s.secret(&ns, "regcred").await.unwrap();
            password_of(&now, "us-docker.pkg.dev") != first
        })
        .await,
        "the secret holds the new token: {}",
        d.logs()
    );
    assert_eq!(d.get("/readyz").await.map(|r| r.0), Some(200));
}

/// Two daemons of one instance at once (a rolling update of a Deployment without leader
/// election): a bounded number of writes, not one fight per token.
#[tokio::test]
async fn two_processes_of_one_instance_do_not_fight() {
    let s = Scratch::new().await;
    let p = unique("lcf");
    let ns = s.namespace(&p, &[], &[]).await;
    let ecr = ecr_proxy(None).await;
    let cfg = s.file("c.yaml", &ecr_cfg(&p, "", "ecr"));
    let api: Api<Secret> = Api::namespaced(s.client.clone(), &ns);
    let wc = watcher::Config::default().fields("metadata.name=regcred");
    let versions = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen = versions.clone();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(api, wc).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) = ev {
                seen.lock().unwrap().insert(rv(&s));
            }
        }
    });
    let url = ecr.url();
    let envs = [("AWS_ENDPOINT_URL", url.as_str())];
    let args = ["--config", cfg.to_str().unwrap()];
    let a = DaemonProc::start(&s, &args, &envs).await;
    let b = DaemonProc::start(&s, &args, &envs).await;
    // Each one's writes are the other's watch events: on the old code every one of them was
    // answered with a write of its own token.
    tokio::time::sleep(Duration::from_secs(20)).await;
    watch.abort();
    let writes = versions.lock().unwrap().len();
    for d in [&a, &b] {
        assert_eq!(
            d.get("/readyz").await.map(|r| r.0),
            Some(200),
            "both alive and serving: {}",
            d.logs()
        );
    }
    assert!(
        (1..=3).contains(&writes),
        "{writes} writes of one secret in 20 s\nA: {}\nB: {}",
        a.logs(),
        b.logs()
    );
    assert!(ecr_calls(&ecr).await >= 2, "both fetched their own token");
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", env("REGCRED_TEST_KUBECONFIG"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    out
}

/// The pipeline this tool replaces, then adoption: no trace of the old password anywhere on
/// the object, and the fields are ours alone.
#[tokio::test]
async fn adopting_a_kubectl_applied_secret_leaves_no_trace_of_the_old_credentials() {
    let s = Scratch::new().await;
    let ns = s.namespace("lca", &[], &[]).await;
    let manifest = kubectl(
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            &ns,
            "--docker-server=quay.io",
            "--docker-username=old-bot",
            "--docker-password=OLD-PASSWORD-77",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    kubectl(
        &["apply", "-f", "-"],
        Some(&String::from_utf8(manifest.stdout).unwrap()),
    );
    let pw = s.file("pw", "new-password");
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {pw:?} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\n    adopt: true\nnamespaces:\n  include: [{ns}]\n"
        ),
    );
    let args = ["--once", "--config", cfg.to_str().unwrap()];
    let r = run_bin(&args, &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("adopted"), "{}", r.stderr);
    let secret = s.secret(&ns, "regcred").await.unwrap();
    let whole = serde_json::to_string(&secret).unwrap();
    for trace in [
        "OLD-PASSWORD-77".to_string(),
        b64("OLD-PASSWORD-77"),
        b64("old-bot:OLD-PASSWORD-77"),
        "last-applied-configuration".to_string(),
    ] {
        assert!(!whole.contains(&trace), "{trace} left in {whole}");
    }
    // Also inside the base64 of the whole data (the old document, if any were left).
    assert_eq!(auths(&secret)["quay.io"]["password"], "new-password");
    let managers: Vec<String> = secret
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["regcred-refresher"], "fields ours alone");
    let again = run_bin(&args, &[]).await;
    assert!(again.stderr.contains("unchanged=1"), "{}", again.stderr);
}

/// Our labels, but fields of another manager (a restore from a backup, a changed
/// --field-manager): one write converges, not an update reported on every run.
#[tokio::test]
async fn a_secret_with_another_managers_fields_converges_after_one_write() {
    let s = Scratch::new().await;
    let ns = s.namespace("lcc", &[], &[]).await;
    let doc = json!({"auths": {"quay.io": {"username": "bot", "password": "pw-1", "auth": b64("bot:pw-1")}}});
    let restored = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "regcred-refresher", "regcred-refresher.io/instance": "default"},
            "annotations": {"regcred-refresher.io/sources": "quay", "regcred-refresher.io/expires-at": "2020-01-01T00:00:00Z"}},
        "data": {".dockerconfigjson": b64(&doc.to_string())}
    });
    kubectl(
        &["create", "--field-manager=velero", "-f", "-"],
        Some(&restored.to_string()),
    );
    let pw = s.file("pw", "pw-1");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [{ns}] }}")),
    );
    let args = ["--once", "--config", cfg.to_str().unwrap()];
    let first = run_bin(&args, &[]).await;
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stderr.contains("updated=1"), "{}", first.stderr);
    let second = run_bin(&args, &[]).await;
    assert!(
        second.stderr.contains("unchanged=1") && second.stderr.contains("updated=0"),
        "converged: {}",
        second.stderr
    );
    let ann = s
        .secret(&ns, "regcred")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert!(
        !ann.contains_key("regcred-refresher.io/expires-at"),
        "a static secret does not expire: {ann:?}"
    );
}

/// Two sources of one secret naming one registry (spelled differently) are refused at start.
#[tokio::test]
async fn one_registry_from_two_sources_is_refused_at_start() {
    let s = Scratch::new().await;
    let pw = s.file("pw", "x");
    for (a, b) in [
        ("docker.io", "https://index.docker.io/v1/"),
        ("quay.io", "HTTPS://Quay.io/"),
    ] {
        let cfg = s.file(
            "c.yaml",
            &format!(
                "registries:\n  - name: one\n    static: {{ server: {a:?}, username: u, passwordFile: {pw:?} }}\n  - name: two\n    static: {{ server: {b:?}, username: u, passwordFile: {pw:?} }}\nsecrets:\n  - name: regcred\n    registries: [one, two]\n"
            ),
        );
        let r = run_bin(
            &["--once", "--config", cfg.to_str().unwrap()],
            &[("KUBECONFIG", "/nonexistent")],
        )
        .await;
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains("secrets[0].registries") && r.stderr.contains("\"one\" and \"two\""),
            "{}",
            r.stderr
        );
    }
}

/// A refusal names the verb the server refused: a server-side apply that creates a secret
/// needs create as well as patch.
#[tokio::test]
async fn a_refusal_names_the_refused_verb() {
    let s = Scratch::new().await;
    let ns = s.namespace("lcv", &[], &[]).await;
    let user = unique("no-create");
    s.grant(
        &user,
        vec![rule(&[""], &["namespaces"], &["get", "list"])],
        &[&ns],
        vec![rule(&[""], &["secrets"], &["get", "list", "patch"])],
    )
    .await;
    let kc = s.kubeconfig_as(&user);
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [{ns}] }}")),
    );
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let args = [&["--once", "--config", cfg.to_str().unwrap()][..], extra].concat();
        let r = run_bin(&args, &[("KUBECONFIG", kc.to_str().unwrap())]).await;
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains("forbidden to create") && r.stderr.contains("grant create"),
            "{extra:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("grant patch"), "{}", r.stderr);
    }
}

/// `immutable: true` on a managed secret: one clear error, and the daemon does not loop on it.
#[tokio::test]
async fn an_immutable_secret_gets_one_clear_error() {
    let s = Scratch::new().await;
    let p = unique("lci");
    let ns = s.namespace(&p, &[], &[]).await;
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [\"{p}-*\"] }}")),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    kubectl(
        &[
            "patch",
            "secret",
            "regcred",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"immutable":true}"#,
        ],
        None,
    );
    std::fs::write(&pw, "rotated").unwrap();
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr.matches("is immutable").count(),
        1,
        "one error: {}",
        r.stderr
    );
    assert!(r.stderr.contains("fix: delete it"), "{}", r.stderr);
    let d = DaemonProc::start(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
            "--max-backoff",
            "1",
        ],
        &[],
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            d.logs().contains("is immutable")
        })
        .await,
        "{}",
        d.logs()
    );
    // With a 1 s backoff, a retried error would show several times in 6 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let logs = d.logs();
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("is immutable") && l.contains("failed"))
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(d.get("/healthz").await.map(|r| r.0), Some(200));
}

/// A credential that has already expired when it arrives is a failed source: not written.
#[tokio::test]
async fn an_expired_credential_is_a_failed_source() {
    let s = Scratch::new().await;
    let p = unique("lce");
    let ns = s.namespace(&p, &[], &[]).await;
    let ecr = ecr_proxy(Some(-10)).await;
    let cfg = s.file("c.yaml", &ecr_cfg(&p, "", "ecr"));
    let url = ecr.url();
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[("AWS_ENDPOINT_URL", url.as_str())],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("arrived already expired"), "{}", r.stderr);
    assert!(!r.stderr.contains("source ok"), "{}", r.stderr);
    assert!(s.secret(&ns, "regcred").await.is_none());
}

/// Boolean environment variables take 1/0 as well as true/false.
#[tokio::test]
async fn boolean_environment_variables_take_1_and_0() {
    let s = Scratch::new().await;
    let ns = s.namespace("lcb", &[], &[]).await;
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [{ns}] }}")),
    );
    let r = run_bin(
        &["--config", cfg.to_str().unwrap()],
        &[
            ("REGCRED_ONCE", "1"),
            ("REGCRED_EVENTS", "0"),
            ("REGCRED_PRUNE", "0"),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&ns, "regcred").await.is_some());
}

/// A leader whose renewals fail (here: cut off from the API server) stops writing before its
/// Lease runs out, so a follower that takes the Lease over never writes beside it.
#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_its_lease_runs_out() {
    leader_cut_off(false).await;
}

/// The same when the API server accepts connections and never answers: the fence's own read
/// of the Lease hangs (up to the 30 s request timeout) and must not hold the deadline back.
#[tokio::test]
async fn a_leader_whose_api_server_hangs_stops_before_its_lease_runs_out() {
    leader_cut_off(true).await;
}

async fn leader_cut_off(hang: bool) {
    use super::link::Link;
    let s = Scratch::new().await;
    let p = unique("lcl");
    let lease_ns = s.namespace(&format!("{p}-lease"), &[], &[]).await;
    let ns = s.namespace(&format!("{p}-t"), &[], &[]).await;
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [\"{p}-t-*\"] }}")),
    );
    let link = Link::to(Link::parse(&env("REGCRED_TEST_API_SERVER"))).await;
    let kc = kubeconfig_via(
        &s,
        std::path::Path::new(&env("REGCRED_TEST_KUBECONFIG")),
        &link.url("https"),
    );
    let lease = unique("lease");
    let d = DaemonProc::start(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--leader-election",
            "--lease-name",
            &lease,
            "--lease-namespace",
            &lease_ns,
            "--lease-duration",
            "6",
        ],
        &[("KUBECONFIG", kc.to_str().unwrap()), ("POD_NAME", "one")],
    )
    .await;
    d.await_secret(&s, &ns, "regcred", true, 15).await;
    assert_eq!(d.metric("regcred_leader").await, Some(1.0));
    let cut = tokio::time::Instant::now();
    if hang {
        link.stall().await;
    } else {
        link.down();
    }
    // The Lease expires at most 6 s after the last renewal; writing must stop before that.
    assert!(
        wait_until(Duration::from_secs(6), || async {
            d.metric("regcred_leader").await == Some(0.0)
        })
        .await,
        "still leading {:?} after the cut: {}",
        cut.elapsed(),
        d.logs()
    );
    assert!(
        d.logs().contains("lease renewal not confirmed"),
        "{}",
        d.logs()
    );
    // Back in reach: it confirms its renewal and leads again.
    link.up().await;
    assert!(
        wait_until(Duration::from_secs(40), || async {
            d.metric("regcred_leader").await == Some(1.0)
        })
        .await,
        "{}",
        d.logs()
    );
}

/// Writes and token calls per namespace per day at the default margin (0.25), time-compressed
/// 1,800×: ECR's 12 h tokens live 24 s, Google's 1 h tokens 2 s, a day is 48 s. Two days for
/// the daemon, then two for an hourly CronJob (`--once` every 2 s). Prints JSON; run with
/// `make day` (README → Performance).
#[tokio::test]
#[ignore = "a 4-minute measurement: make day"]
async fn a_compressed_day_of_writes_and_token_calls() {
    const SPEED: f64 = 1800.0;
    const DAYS: f64 = 2.0;
    let day = Duration::from_secs_f64(24.0 * 3600.0 / SPEED);
    let s = Scratch::new().await;
    let p = unique("day");
    let namespaces = 3;
    for _ in 0..namespaces {
        s.namespace(&p, &[], &[]).await;
    }
    let mut out = serde_json::Map::new();
    for mode in ["daemon", "hourly-cronjob"] {
        let ecr = ecr_proxy(Some((12.0 * 3600.0 / SPEED) as i64)).await;
        let google = FaultProxy::http(
            &env("REGCRED_TEST_GOOGLE_FIXTURE_URL"),
            json!([{"method": "POST", "path": "^/token", "json_set": [[["expires_in"], (3600.0 / SPEED) as i64]]}]),
        )
        .await;
        let key = google_key_via(&s, &google.url()).await;
        let cfg = s.file(
            &unique("day.yaml"),
            &format!(
                "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\n  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev], keyFile: {key:?} }}\nsecrets:\n  - name: {mode}-ecr\n    registries: [ecr]\n  - name: {mode}-gar\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\n"
            ),
        );
        let api: Api<Secret> = Api::all(s.client.clone());
        let versions = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::<(
            String,
            String,
        )>::new()));
        let seen = versions.clone();
        let prefix = format!("{mode}-");
        let watch = tokio::spawn(async move {
            let wc =
                watcher::Config::default().labels("app.kubernetes.io/managed-by=regcred-refresher");
            let mut stream = watcher(api, wc).boxed();
            while let Some(Ok(ev)) = stream.next().await {
                if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = ev {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    if name.starts_with(&prefix) {
                        seen.lock().unwrap().insert((name, rv(&o)));
                    }
                }
            }
        });
        let url = ecr.url();
        let envs = [("AWS_ENDPOINT_URL", url.as_str())];
        let c = cfg.to_str().unwrap();
        let started = tokio::time::Instant::now();
        let total = day.mul_f64(DAYS);
        if mode == "daemon" {
            let _d =
                DaemonProc::start(&s, &["--config", c, "--min-refresh-interval", "1"], &envs).await;
            tokio::time::sleep(total.saturating_sub(started.elapsed())).await;
        } else {
            let hour = day / 24;
            while started.elapsed() < total {
                let next = tokio::time::Instant::now() + hour;
                run_bin(&["--once", "--config", c], &envs).await;
                tokio::time::sleep_until(next).await;
            }
        }
        watch.abort();
        let v = versions.lock().unwrap().clone();
        let writes = |suffix: &str| {
            v.iter().filter(|(n, _)| n.ends_with(suffix)).count() as f64 / namespaces as f64 / DAYS
        };
        out.insert(
            mode.into(),
            json!({
                "ecr": {"writes_per_namespace_per_day": writes("-ecr"),
                        "token_calls_per_day": ecr_calls(&ecr).await as f64 / DAYS},
                "google": {"writes_per_namespace_per_day": writes("-gar"),
                           "token_calls_per_day": google_calls(&google).await as f64 / DAYS},
            }),
        );
    }
    out.insert(
        "kubectl-cronjob-hourly".into(),
        json!({"ecr": {"writes_per_namespace_per_day": 24, "token_calls_per_day": 24 * namespaces}}),
    );
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    // The floor the token lifetimes allow: ECR 24 h / 9 h = 2.7, Google 24 h / 45 min = 32
    // (plus the first write of the run).
    let d = &out["daemon"];
    assert!(
        d["ecr"]["writes_per_namespace_per_day"].as_f64().unwrap() <= 4.0,
        "{d}"
    );
    assert!(
        d["google"]["writes_per_namespace_per_day"]
            .as_f64()
            .unwrap()
            <= 40.0,
        "{d}"
    );
    assert!(
        d["ecr"]["token_calls_per_day"].as_f64().unwrap() <= 4.0,
        "{d}"
    );
}
