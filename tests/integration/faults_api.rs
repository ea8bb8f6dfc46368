//! Fault matrix, API-server side. The refresher reaches the API server only through a TLS
//! fault proxy of the test's own (see `faults_proxy`), which answers chosen requests with a
//! conflict, a throttle, a denial or a webhook rejection, delays them, or lets them through.
//!
//! Daemon cases use a Google source whose tokens the proxy in front of the fixture shortens to
//! a few seconds, so every namespace's secret is rewritten every ~3 s: the faulted namespace
//! must keep its last good secret while the others keep being updated, the failure must show
//! in the metrics and in a log line naming the namespace, and the namespace must be updated
//! again once the fault clears, without a restart.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

use super::common::*;
use super::faults_proxy::{FaultProxy, status};
use super::link::Link;

const FAILED: &str = "regcred_secret_writes_total{result=\"failed\"}";

fn secret_patch(ns: &str) -> String {
    format!("^/api/v1/namespaces/{ns}/secrets/regcred\\?")
}

struct Rig {
    s: Scratch,
    a: String,
    b: String,
    api: FaultProxy,
    _google: FaultProxy,
    link: Link,
    d: DaemonProc,
}

impl Rig {
    async fn start() -> Self {
        let s = Scratch::new().await;
        let p = unique("fa");
        let a = s.namespace(&p, &[], &[]).await;
        let b = s.namespace(&p, &[], &[]).await;
        let google = FaultProxy::http(
            &env("REGCRED_TEST_GOOGLE_FIXTURE_URL"),
            json!([{"method": "POST", "path": "^/token", "json_set": [[["expires_in"], 4]]}]),
        )
        .await;
        let keyfile = google_key_via(&s, &google.url()).await;
        let cfg = s.file(
            "g.yaml",
            &format!("registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\n", keyfile.display()),
        );
        let api = FaultProxy::api_server(&s, json!([])).await;
        // A cuttable link in front of the proxy, for the restart case.
        let link = Link::to(([127, 0, 0, 1], api.port).into()).await;
        let kubeconfig = kubeconfig_via(
            &s,
            std::path::Path::new(&env("REGCRED_TEST_KUBECONFIG")),
            &link.url("https"),
        );
        let d = DaemonProc::start(
            &s,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--min-refresh-interval",
                "1",
                "--max-backoff",
                "2",
            ],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        )
        .await;
        let r = Self {
            s,
            a,
            b,
            api,
            _google: google,
            link,
            d,
        };
        let ok = wait_until(Duration::from_secs(30), || async {
            r.s.secret(&r.a, "regcred").await.is_some()
                && r.s.secret(&r.b, "regcred").await.is_some()
        })
        .await;
        assert!(ok, "never written: {}", r.d.logs());
        r
    }

    async fn rv(&self, ns: &str) -> String {
        rv(&self.s.secret(ns, "regcred").await.unwrap())
    }

    async fn failed(&self) -> f64 {
        self.d.metric(FAILED).await.unwrap_or(0.0)
    }

    /// `b` is rewritten at least twice more (its refresh goes on).
    async fn b_keeps_updating(&self) {
        for _ in 0..2 {
            let was = self.rv(&self.b).await;
            assert!(
                wait_until(Duration::from_secs(20), || async {
                    self.rv(&self.b).await != was
                })
                .await,
                "{} stopped being refreshed: {}",
                self.b,
                self.d.logs()
            );
        }
    }

    /// Faults every write of `a`'s secret with `fault`, then clears it.
    async fn fault_a(&self, fault: Value, needle: &str) {
        let base = self.failed().await;
        self.api.set_rules(json!([fault])).await;
        assert!(
            wait_until(Duration::from_secs(30), || async {
                self.failed().await > base
            })
            .await,
            "no failed write counted: {}",
            self.d.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = self.s.secret(&self.a, "regcred").await.unwrap();
        let failed = self.failed().await;
        self.b_keeps_updating().await;
        assert!(self.failed().await > failed, "a retry should fail again");
        let during = self.s.secret(&self.a, "regcred").await.unwrap();
        assert_eq!(rv(&during), rv(&before), "the last good secret was touched");
        assert_eq!(auths(&during), auths(&before));
        let logs = self.d.logs();
        let line = logs
            .lines()
            .rev()
            .find(|l| l.contains(" failed") && l.contains(&self.a) && l.contains(needle))
            .unwrap_or_else(|| panic!("no failure line naming {} and {needle:?}: {logs}", self.a));
        assert!(line.contains("regcred"), "{line}");
        assert!(
            !logs
                .lines()
                .any(|l| l.contains(&self.b) && l.contains(needle)),
            "{} was not faulted",
            self.b
        );

        self.api.set_rules(json!([])).await;
        assert!(
            wait_until(Duration::from_secs(20), || async {
                self.rv(&self.a).await != rv(&before)
            })
            .await,
            "{} not written again after the fault cleared: {}",
            self.a,
            self.d.logs()
        );
        let settled = self.failed().await;
        self.b_keeps_updating().await;
        assert_eq!(self.failed().await, settled, "writes still failing");
    }
}

fn on_a(r: &Rig, code: u16, reason: &str, message: &str) -> Value {
    json!({"method": "PATCH", "path": secret_patch(&r.a), "status": code,
           "body": status(code, reason, message)})
}

#[tokio::test]
async fn fault_api_409_on_a_secret() {
    let r = Rig::start().await;
    let f = on_a(
        &r,
        409,
        "Conflict",
        "Operation cannot be fulfilled on secrets \"regcred\": the object has been modified",
    );
    // The message, not "409": a bare number also matches timestamps and durations in other lines.
    r.fault_a(f, "the object has been modified").await;
}

#[tokio::test]
async fn fault_api_403_for_one_namespace() {
    let r = Rig::start().await;
    let msg = format!(
        "secrets \"regcred\" is forbidden: User \"x\" cannot patch resource \"secrets\" in API group \"\" in the namespace \"{}\"",
        r.a
    );
    let f = on_a(&r, 403, "Forbidden", &msg);
    r.fault_a(f, "forbidden to patch").await;
}

#[tokio::test]
async fn fault_api_422_webhook_rejection() {
    let r = Rig::start().await;
    let f = on_a(
        &r,
        422,
        "Invalid",
        "admission webhook \"deny.regcred.test\" denied the request: registry gcr.io is not allowed",
    );
    r.fault_a(f, "denied the request").await;
}

/// The API server goes away in the middle of a cycle (a write in flight is cut, then every
/// connection is refused for a while) and comes back: no restart, every secret current again.
#[tokio::test]
async fn fault_api_restart_mid_cycle() {
    let r = Rig::start().await;
    let pid = r.d.child.id();
    r.api
        .set_rules(json!([{"method": "PATCH", "path": secret_patch(&r.a), "delay": 2, "times": 1}]))
        .await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            r.api.log().await.iter().any(|e| e["rule"] == 0)
        })
        .await,
        "{}",
        r.d.logs()
    );
    // The delayed write is in flight now.
    r.link.down();
    let (a, b) = (r.rv(&r.a).await, r.rv(&r.b).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        r.d.logs().contains("some writes failed; retrying"),
        "{}",
        r.d.logs()
    );
    assert_eq!(
        r.rv(&r.b).await,
        b,
        "nothing can be written while it is away"
    );
    // The cut write landed whole or not at all: `a` is there, and every entry of its document
    // is consistent (`auth` is base64 of username:password), whichever version it is.
    let mid =
        r.s.secret(&r.a, "regcred")
            .await
            .expect("secret a survives");
    let a_mid = rv(&mid);
    let entries = auths(&mid);
    assert!(!entries.as_object().unwrap().is_empty(), "{entries}");
    for (host, e) in entries.as_object().unwrap() {
        let (user, pw) = (
            e["username"].as_str().unwrap(),
            e["password"].as_str().unwrap(),
        );
        assert_eq!(
            e["auth"],
            b64(&format!("{user}:{pw}")),
            "{host} in {a} -> {a_mid}"
        );
    }
    r.link.up().await;
    r.b_keeps_updating().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            r.rv(&r.a).await != a_mid
        })
        .await,
        "{}",
        r.d.logs()
    );
    assert_eq!(r.d.child.id(), pid, "no restart");
    assert_eq!(r.d.get("/readyz").await.unwrap().0, 200);
}

/// A `--once` run through the proxy, as `user` (impersonated) or admin.
async fn once_via(
    s: &Scratch,
    api: &FaultProxy,
    cfg: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> Run {
    let kc = api.kubeconfig(s, kubeconfig);
    run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[("KUBECONFIG", kc.to_str().unwrap())],
    )
    .await
}

fn static_config(s: &Scratch, namespaces: &[&str], extra: &str) -> std::path::PathBuf {
    let pass = s.file(&unique("pw"), "pw-1");
    s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {{ include: [{}] }}\n{extra}",
            pass.display(),
            namespaces.join(", ")
        ),
    )
}

/// 429 with `Retry-After`: the client waits as told and the write lands in the same run.
#[tokio::test]
async fn fault_api_429_retry_after_is_honoured() {
    let s = Scratch::new().await;
    let a = s.namespace("f429", &[], &[]).await;
    let b = s.namespace("f429", &[], &[]).await;
    let api = FaultProxy::api_server(
        &s,
        json!([{
            "method": "PATCH", "path": secret_patch(&a), "times": 2, "status": 429,
            "headers": {"Retry-After": "2"},
            "body": status(429, "TooManyRequests", "too many requests, please try again later")
        }]),
    )
    .await;
    let cfg = static_config(&s, &[&a, &b], "");
    let kc = std::path::PathBuf::from(env("REGCRED_TEST_KUBECONFIG"));
    let r = once_via(&s, &api, &cfg, &kc).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&a, "regcred").await.is_some());
    assert!(s.secret(&b, "regcred").await.is_some());
    let tries: Vec<f64> = api
        .seen("PATCH", &format!("/namespaces/{a}/secrets/regcred"))
        .await
        .iter()
        .map(|e| e["t"].as_f64().unwrap())
        .collect();
    assert_eq!(tries.len(), 3, "two throttled, one through: {tries:?}");
    for w in tries.windows(2) {
        assert!(w[1] - w[0] >= 1.9, "Retry-After: 2 not honoured: {tries:?}");
    }
}

/// A 429 that never ends: the client gives up after a bounded number of retries (kube's
/// default would retry 15 times with a backoff capped at 1000 s), that namespace fails with a
/// line naming it, the other is written, and the run ends promptly.
#[tokio::test]
async fn fault_api_persistent_429_fails_one_namespace_promptly() {
    let s = Scratch::new().await;
    let a = s.namespace("f429p", &[], &[]).await;
    let b = s.namespace("f429p", &[], &[]).await;
    let api = FaultProxy::api_server(
        &s,
        json!([{
            "method": "PATCH", "path": secret_patch(&a), "status": 429,
            "body": status(429, "TooManyRequests", "too many requests, please try again later")
        }]),
    )
    .await;
    let cfg = static_config(&s, &[&a, &b], "");
    let kc = std::path::PathBuf::from(env("REGCRED_TEST_KUBECONFIG"));
    let started = std::time::Instant::now();
    let r = once_via(&s, &api, &cfg, &kc).await;
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "a throttled namespace stalled the run for {took:?}"
    );
    assert!(s.secret(&a, "regcred").await.is_none());
    assert!(s.secret(&b, "regcred").await.is_some());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains(&a) && l.contains("failed"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        line.contains("429")
            || line.contains("TooManyRequests")
            || line.contains("too many requests"),
        "{line}"
    );
    let tries = api
        .seen("PATCH", &format!("/namespaces/{a}/secrets/regcred"))
        .await
        .len();
    assert_eq!(
        tries,
        1 + regcred_refresher::kube_client::RETRIES as usize,
        "bounded retries"
    );
}

/// 409 on a ServiceAccount: the read-modify-patch retries (here after two conflicts it goes
/// through); a conflict that never ends fails that namespace alone after 5 attempts, with a
/// line naming it, and the next run fixes it.
#[tokio::test]
async fn fault_api_409_on_a_service_account_is_retried() {
    let s = Scratch::new().await;
    let a = s.namespace("fsa", &[], &[]).await;
    let b = s.namespace("fsa", &[], &[]).await;
    for ns in [&a, &b] {
        default_service_account(&s.client, ns).await; // kube-controller-manager's
    }
    let conflict = |ns: &str, times: Option<u32>| {
        json!({"method": "PATCH", "path": format!("^/api/v1/namespaces/{ns}/serviceaccounts/default"),
               "times": times, "status": 409,
               "body": status(409, "Conflict", "Operation cannot be fulfilled on serviceaccounts \"default\": the object has been modified; please apply your changes to the latest version and try again")})
    };
    let api = FaultProxy::api_server(&s, json!([conflict(&a, Some(2)), conflict(&b, None)])).await;
    let cfg = static_config(&s, &[&a, &b], "serviceAccounts: [default]\n");
    let kc = std::path::PathBuf::from(env("REGCRED_TEST_KUBECONFIG"));
    let r = once_via(&s, &api, &cfg, &kc).await;
    assert_eq!(r.code, 1, "{r:?}");
    let refs = |ns: String| {
        let api = Api::<ServiceAccount>::namespaced(s.client.clone(), &ns);
        async move {
            api.get("default")
                .await
                .unwrap()
                .image_pull_secrets
                .unwrap_or_default()
                .iter()
                .any(|r| r.name == "regcred")
        }
    };
    let patches = |ns: String| {
        let api = &api;
        async move {
            api.seen(
                "PATCH",
                &format!("/namespaces/{ns}/serviceaccounts/default"),
            )
            .await
            .len()
        }
    };
    assert_eq!(patches(a.clone()).await, 3, "two conflicts, then through");
    assert!(refs(a.clone()).await);
    assert_eq!(patches(b.clone()).await, 5, "gives up after 5 attempts");
    assert!(!refs(b.clone()).await);
    assert!(
        s.secret(&b, "regcred").await.is_some(),
        "the secret is written all the same"
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("serviceaccount patch failed"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains(&b) && line.contains("409"), "{line}");

    api.set_rules(json!([])).await;
    let again = once_via(&s, &api, &cfg, &kc).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(refs(b.clone()).await);
}

/// A namespace deleted while its secret is being written (it stays Terminating here: no
/// controller-manager): that write fails cleanly, says why, and the others succeed.
#[tokio::test]
async fn fault_api_namespace_terminating_mid_write() {
    let s = Scratch::new().await;
    let a = s.namespace("fterm", &[], &[]).await;
    let b = s.namespace("fterm", &[], &[]).await;
    let api = FaultProxy::api_server(
        &s,
        json!([{"method": "PATCH", "path": secret_patch(&a), "delay": 3, "times": 1}]),
    )
    .await;
    let cfg = static_config(&s, &[&a, &b], "");
    let kc = std::path::PathBuf::from(env("REGCRED_TEST_KUBECONFIG"));
    let run = {
        let kc = api.kubeconfig(&s, &kc);
        let cfg = cfg.clone();
        tokio::spawn(async move {
            run_bin(
                &["--once", "--config", cfg.to_str().unwrap()],
                &[("KUBECONFIG", kc.to_str().unwrap())],
            )
            .await
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            api.log().await.iter().any(|e| e["rule"] == 0)
        })
        .await
    );
    Api::<Namespace>::all(s.client.clone())
        .delete(&a, &DeleteParams::default())
        .await
        .unwrap();
    let r = run.await.unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(s.secret(&b, "regcred").await.is_some());
    assert!(s.secret(&a, "regcred").await.is_none());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains(&a) && l.contains("failed"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("being deleted"), "{line}");
    assert!(
        !line.contains("grant"),
        "not an RBAC problem, no RBAC fix: {line}"
    );
    // The next run skips it as terminating and succeeds.
    let again = once_via(&s, &api, &cfg, &kc).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("Terminating"), "{}", again.stderr);
}

/// SIGTERM in the middle of a `--once` run (a CronJob pod evicted): the write under way
/// finishes, no further namespace is started, the partial summary is printed, exit 1.
#[tokio::test]
async fn sigterm_during_once_finishes_the_write_in_flight_and_exits_1() {
    let s = Scratch::new().await;
    let mut targets = Vec::new();
    for _ in 0..4 {
        targets.push(s.namespace("fst", &[], &[]).await);
    }
    let api = FaultProxy::api_server(
        &s,
        // Long enough that the signal, sent once the first PATCH is seen, lands within it even
        // on a loaded machine: a second write must not have started.
        json!([{"method": "PATCH", "path": "^/api/v1/namespaces/[^/]+/secrets/regcred\\?", "delay": 6}]),
    )
    .await;
    let names: Vec<&str> = targets.iter().map(String::as_str).collect();
    let cfg = static_config(&s, &names, "");
    let kc = api.kubeconfig(&s, std::path::Path::new(&env("REGCRED_TEST_KUBECONFIG")));
    let mut child = tokio::process::Command::new(bin())
        .args([
            "--once",
            "--concurrency",
            "1",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .env("KUBECONFIG", &kc)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            !api.seen("PATCH", "/secrets/regcred").await.is_empty()
        })
        .await
    );
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), async {
        let mut err = String::new();
        use tokio::io::AsyncReadExt;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        (child.wait().await.unwrap(), err)
    })
    .await
    .expect("stops within the delay of the write under way");
    let (status, stderr) = out;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped before every namespace was written"),
        "{stderr}"
    );
    assert!(stderr.contains("cycle finished"), "{stderr}");
    let mut written = 0;
    for ns in &targets {
        written += usize::from(s.secret(ns, "regcred").await.is_some());
    }
    assert_eq!(written, 1, "the write in flight lands, no other: {stderr}");
}
