//! Fault matrix, provider side. Each case: the last good secret stays intact while the fault
//! lasts, the failure shows (metric with the error's label, readiness, a log line naming the
//! source; the exit code with `--once`), and the daemon recovers by itself once it clears.
//!
//! Faults come from a fault proxy of the test's own in front of moto or the Google fixture;
//! it also shortens each credential's life to a few seconds (moto's ECR tokens expire in 2015,
//! the fixture's Google tokens in an hour), so the daemon refetches about every 3 s and an
//! outage turns readiness red within seconds.

use std::time::Duration;

use serde_json::{Value, json};

use super::common::*;
use super::faults_proxy::FaultProxy;

/// Seconds a credential lives when it comes through the proxy.
const LIFE: i64 = 4;

/// ECR's answer with an expiry `LIFE` seconds ahead.
fn ecr_fresh() -> Value {
    json!({"method": "POST", "json_set": [[["authorizationData", 0, "expiresAt"], {"now_plus": LIFE}]]})
}

/// Google's answer with `expires_in` of `LIFE` seconds (gcp_auth refetches a token with less
/// than 20 s left, so every fetch reaches the proxy).
fn google_fresh() -> Value {
    json!({"method": "POST", "path": "^/token", "json_set": [[["expires_in"], LIFE]]})
}

/// The AWS JSON-protocol error shape (`x-amzn-ErrorType` and `__type`).
fn aws_error(status: u16, kind: &str, message: &str) -> Value {
    json!({
        "method": "POST", "status": status,
        "headers": {"x-amzn-ErrorType": format!("{kind}:http://internal.amazon.com/coral/com.amazonaws.ecr/"),
                    "Content-Type": "application/x-amz-json-1.1"},
        "body": {"__type": kind, "message": message}
    })
}

struct Rig {
    s: Scratch,
    ns: String,
    proxy: FaultProxy,
    d: DaemonProc,
    source: &'static str,
    healthy: Value,
}

impl Rig {
    async fn ecr(provider_timeout: &str) -> Self {
        let s = Scratch::new().await;
        let p = unique("fpe");
        let ns = s.namespace(&p, &[], &[]).await;
        let proxy = FaultProxy::http(&env("REGCRED_TEST_MOTO_URL"), json!([ecr_fresh()])).await;
        let cfg = s.file(
            "ecr.yaml",
            &format!("registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces:\n  include: [\"{p}-*\"]\n"),
        );
        let d = start(
            &s,
            &cfg,
            provider_timeout,
            &[("AWS_ENDPOINT_URL", &proxy.url())],
        )
        .await;
        Self::ready(s, ns, proxy, d, "ecr", json!([ecr_fresh()])).await
    }

    async fn google() -> Self {
        let s = Scratch::new().await;
        let p = unique("fpg");
        let ns = s.namespace(&p, &[], &[]).await;
        let proxy = FaultProxy::http(
            &env("REGCRED_TEST_GOOGLE_FIXTURE_URL"),
            json!([google_fresh()]),
        )
        .await;
        let keyfile = google_key_via(&s, &proxy.url()).await;
        let cfg = s.file(
            "g.yaml",
            &format!("registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\n", keyfile.display()),
        );
        let d = start(&s, &cfg, "10", &[]).await;
        Self::ready(s, ns, proxy, d, "gar", json!([google_fresh()])).await
    }

    async fn ready(
        s: Scratch,
        ns: String,
        proxy: FaultProxy,
        d: DaemonProc,
        source: &'static str,
        healthy: Value,
    ) -> Self {
        let ok = wait_until(Duration::from_secs(30), || async {
            s.secret(&ns, "regcred").await.is_some()
                && d.get("/readyz").await.is_some_and(|(c, _)| c == 200)
        })
        .await;
        assert!(ok, "never ready: {}", d.logs());
        Self {
            s,
            ns,
            proxy,
            d,
            source,
            healthy,
        }
    }

    fn series(&self, result: &str) -> String {
        format!(
            "regcred_refreshes_total{{source=\"{}\",result=\"{result}\"}}",
            self.source
        )
    }

    async fn count(&self, result: &str) -> f64 {
        self.d.metric(&self.series(result)).await.unwrap_or(0.0)
    }

    /// Injects `fault` (tried before the healthy rules), checks the failure is visible and
    /// the last good secret intact, clears it and checks the recovery.
    async fn fault(&self, fault: Value, label: &str, needle: &str) {
        let mut rules = vec![fault];
        rules.extend(self.healthy.as_array().unwrap().iter().cloned());
        self.proxy.set_rules(Value::Array(rules)).await;
        let base = self.count(label).await;
        assert!(
            wait_until(Duration::from_secs(40), || async {
                self.count(label).await > base
            })
            .await,
            "no {label} failure counted: {}",
            self.d.logs()
        );
        // A write from the last success may still be landing: let it, then freeze.
        let mut before = self.s.secret(&self.ns, "regcred").await.unwrap();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.s.secret(&self.ns, "regcred").await.unwrap();
            if rv(&now) == rv(&before) {
                break;
            }
            before = now;
        }
        let failed = self.count(label).await;
        assert!(
            wait_until(Duration::from_secs(40), || async {
                self.count(label).await >= failed + 1.0
                    && self.d.get("/readyz").await.is_some_and(|(c, _)| c == 503)
            })
            .await,
            "readiness did not turn red: {:?} {}",
            self.d.get("/readyz").await,
            self.d.logs()
        );
        let (_, why) = self.d.get("/readyz").await.unwrap();
        assert_eq!(why, format!("expired credentials: {}", self.source));
        let during = self.s.secret(&self.ns, "regcred").await.unwrap();
        assert_eq!(rv(&during), rv(&before), "the last good secret was touched");
        assert_eq!(auths(&during), auths(&before));
        let logs = self.d.logs();
        let line = logs
            .lines()
            .rev()
            .find(|l| l.contains("fetch failed; the last good credential stays in use"))
            .unwrap_or_else(|| panic!("no failure line: {logs}"));
        assert!(
            line.contains(&format!("source={}", self.source))
                || line.contains(&format!("source=\"{}\"", self.source)),
            "{line}"
        );
        assert!(line.contains(needle), "{needle:?} not in {line}");

        self.proxy.set_rules(self.healthy.clone()).await;
        let ok = self.count("success").await;
        assert!(
            wait_until(Duration::from_secs(40), || async {
                self.count("success").await > ok
                    && self.d.get("/readyz").await.is_some_and(|(c, _)| c == 200)
            })
            .await,
            "no recovery: {}",
            self.d.logs()
        );
        assert!(
            wait_until(Duration::from_secs(10), || async {
                rv(&self.s.secret(&self.ns, "regcred").await.unwrap()) != rv(&before)
            })
            .await,
            "secret not refreshed after recovery: {}",
            self.d.logs()
        );
    }
}

async fn start(
    s: &Scratch,
    cfg: &std::path::Path,
    provider_timeout: &str,
    envs: &[(&str, &str)],
) -> DaemonProc {
    DaemonProc::start(
        s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
            "--max-backoff",
            "2",
            "--provider-timeout",
            provider_timeout,
        ],
        envs,
    )
    .await
}

#[tokio::test]
async fn fault_ecr_5xx() {
    let r = Rig::ecr("10").await;
    let f = aws_error(503, "ServiceUnavailableException", "try later");
    r.fault(f, "ecr_call", "ServiceUnavailableException").await;
}

#[tokio::test]
async fn fault_ecr_throttling() {
    let r = Rig::ecr("10").await;
    let f = aws_error(400, "ThrottlingException", "Rate exceeded");
    r.fault(f, "ecr_call", "ThrottlingException").await;
}

#[tokio::test]
async fn fault_ecr_slower_than_the_provider_timeout() {
    let r = Rig::ecr("2").await;
    let f = json!({"method": "POST", "delay": 4, "action": "forward"});
    r.fault(f, "timeout", "no answer within 2s").await;
}

#[tokio::test]
async fn fault_ecr_connection_reset_and_garbage() {
    let r = Rig::ecr("10").await;
    r.fault(
        json!({"method": "POST", "action": "close"}),
        "ecr_call",
        "ecr",
    )
    .await;
    r.fault(
        json!({"method": "POST", "action": "malformed"}),
        "ecr_call",
        "ecr",
    )
    .await;
}

#[tokio::test]
async fn fault_ecr_malformed_tokens() {
    let r = Rig::ecr("10").await;
    let token = |t: &str| {
        json!({"method": "POST", "json_set": [
            [["authorizationData", 0, "authorizationToken"], t],
            [["authorizationData", 0, "expiresAt"], {"now_plus": LIFE}]]})
    };
    r.fault(token("not base64!!"), "ecr_response", "not base64")
        .await;
    r.fault(
        token(&b64("AWSsecretwithoutcolon")),
        "ecr_response",
        "does not decode to user:password",
    )
    .await;
    assert!(!r.d.logs().contains("AWSsecretwithoutcolon"));
}

#[tokio::test]
async fn fault_google_401_invalid_json_and_5xx() {
    let r = Rig::google().await;
    let at = |status: u16, body: Value| json!({"method": "POST", "path": "^/token", "status": status, "body": body});
    let denied = json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."});
    r.fault(at(401, denied), "google", "source gar").await;
    r.fault(at(200, json!("{ this is not json")), "google", "source gar")
        .await;
    r.fault(
        at(503, json!({"error": "backendError"})),
        "google",
        "source gar",
    )
    .await;
}

/// A token that arrives already expired (clock skew, a broken provider) is a failed fetch:
/// never written over the last good secret, retried on the backoff (never a hot loop), not
/// ready once the cached token runs out, said in the log; ready as soon as a live token arrives.
#[tokio::test]
async fn fault_ecr_expired_on_arrival() {
    let r = Rig::ecr("10").await;
    let good = r.s.secret(&r.ns, "regcred").await.unwrap();
    r.proxy
        .set_rules(json!([{"method": "POST", "json_set": [[["authorizationData", 0, "expiresAt"], {"now_plus": -10}]]}]))
        .await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            r.d.get("/readyz")
                .await
                .is_some_and(|(c, why)| c == 503 && why == "expired credentials: ecr")
        })
        .await,
        "{}",
        r.d.logs()
    );
    // Retried (at least twice more), at no more than the backoff allows.
    let before = r.count("expired_on_arrival").await;
    let t = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            r.count("expired_on_arrival").await - before >= 2.0
        })
        .await,
        "{}",
        r.d.logs()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = r.count("expired_on_arrival").await - before;
    let secs = t.elapsed().as_secs_f64();
    assert!(
        failed / secs <= 1.5,
        "{failed} failed fetches in {secs:.1} s with a 2 s backoff cap: a hot loop"
    );
    assert!(
        r.d.logs().contains("arrived already expired"),
        "{}",
        r.d.logs()
    );
    let kept = r.s.secret(&r.ns, "regcred").await.unwrap();
    assert_eq!(auths(&kept), auths(&good), "the last good secret stays");
    r.proxy.set_rules(r.healthy.clone()).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            r.d.get("/readyz").await.is_some_and(|(c, _)| c == 200)
        })
        .await,
        "{}",
        r.d.logs()
    );
}

/// Failures the daemon cannot be steered into after start (the endpoint is read once): a
/// `--once` run exits 1 naming the source, leaves the secret as it was, and the next run
/// with the fault gone exits 0.
#[tokio::test]
async fn fault_ecr_connection_refused_and_dns_failure_once() {
    let s = Scratch::new().await;
    let ns = s.namespace("fpo", &[], &[]).await;
    let cfg = s.file(
        "ecr.yaml",
        &format!("registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces:\n  include: [{ns}]\n"),
    );
    let args = [
        "--once",
        "--provider-timeout",
        "15",
        "--config",
        cfg.to_str().unwrap(),
    ];
    let good = run_bin(&args, &[]).await;
    assert_eq!(good.code, 0, "{good:?}");
    let before = s.secret(&ns, "regcred").await.unwrap();
    let refused = format!("http://{}", free_port());
    // --force: the secret is fresh, so only a forced run asks ECR at all.
    let forced = [&args[..], &["--force"]].concat();
    for endpoint in [refused.as_str(), "http://does-not-exist.invalid:1"] {
        let r = run_bin(&forced, &[("AWS_ENDPOINT_URL", endpoint)]).await;
        assert_eq!(r.code, 1, "{endpoint}: {r:?}");
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("source failed"))
            .unwrap_or_else(|| panic!("{endpoint}: {}", r.stderr));
        assert!(line.contains("source ecr"), "{line}");
        assert!(
            r.stderr
                .contains("not written because source(s) ecr failed"),
            "{}",
            r.stderr
        );
        let after = s.secret(&ns, "regcred").await.unwrap();
        assert_eq!(rv(&after), rv(&before), "{endpoint}");
    }
    let again = run_bin(&forced, &[]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("updated=1"), "{}", again.stderr);
}
