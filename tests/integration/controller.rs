//! The daemon's work queue under events: retries that survive unrelated traffic, permanent
//! failures that are not looped, pruning without a list per event, an echo cache that follows
//! the live namespaces, and a secret deleted while a watch had lost track.
//!
//! A static source keeps the credentials still (no token expiry, no refresh pass), so what
//! happens here is the work of the events and retries alone. The daemon talks to the API
//! server through the test's fault proxy, which counts requests and injects failures.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::common::*;
use super::faults_proxy::{FaultProxy, status};
use super::link::Link;

struct Rig {
    s: Scratch,
    prefix: String,
    /// This rig's instance: pruning sweeps the managed secrets of its instance in every
    /// namespace it does not target, so with the default instance a test's `--prune` deleted
    /// the secrets of the tests running beside it (`a_restart_reads_the_live_secrets_…` lost
    /// its eight between two daemons in a cold `.ci/run`).
    instance: String,
    api: FaultProxy,
    link: Link,
}

impl Rig {
    async fn new(rules: Value) -> Self {
        let s = Scratch::new().await;
        let prefix = unique("ct");
        let instance = unique("ct");
        let api = FaultProxy::api_server(&s, rules).await;
        let link = Link::to(([127, 0, 0, 1], api.port).into()).await;
        Self {
            s,
            prefix,
            instance,
            api,
            link,
        }
    }

    async fn daemon(&self, namespaces: &str, extra: &[&str]) -> DaemonProc {
        self.daemon_with(namespaces, "", extra).await
    }

    async fn daemon_with(&self, namespaces: &str, more: &str, extra: &[&str]) -> DaemonProc {
        let pw = self.s.file(&unique("pw"), "pw-1");
        let cfg = self.s.file(
            &unique("c.yaml"),
            &format!("{}{more}", static_cfg(&pw, namespaces)),
        );
        let kubeconfig = kubeconfig_via(
            &self.s,
            std::path::Path::new(&env("REGCRED_TEST_KUBECONFIG")),
            &self.link.url("https"),
        );
        let mut args = vec![
            "--config",
            cfg.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
            "--max-backoff",
            "2",
            "--instance",
            &self.instance,
        ];
        args.extend_from_slice(extra);
        DaemonProc::start(
            &self.s,
            &args,
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        )
        .await
    }

    fn all(&self) -> String {
        format!("{{ include: [\"{}-*\"] }}", self.prefix)
    }

    async fn relabel(&self, ns: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"labels": {key: value}}});
        Api::<Namespace>::all(self.s.client.clone())
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Waits until `ns/name` exists (or is gone), failing with the daemon's log.
    async fn patches_of(&self, ns: &str) -> usize {
        self.api
            .seen("PATCH", &format!("/namespaces/{ns}/secrets/regcred"))
            .await
            .len()
    }
}

fn on_secret_of(ns: &str, code: u16, reason: &str, message: &str) -> Value {
    json!({"method": "PATCH", "path": format!("^/api/v1/namespaces/{ns}/secrets/regcred\\?"),
           "status": code, "body": status(code, reason, message)})
}

/// A failed write is retried on its own backoff, even while other namespaces keep changing
/// (each change a reconcile of its own that succeeds).
#[tokio::test]
async fn a_failed_write_is_retried_while_unrelated_events_keep_arriving() {
    let r = Rig::new(json!([])).await;
    let a = r.s.namespace(&r.prefix, &[], &[]).await;
    let b = r.s.namespace(&r.prefix, &[], &[]).await;
    let mut fault = on_secret_of(&a, 500, "InternalError", "etcd is having a bad day");
    fault["times"] = json!(2);
    r.api.set_rules(json!([fault])).await;
    let d = r.daemon(&r.all(), &[]).await;
    d.await_secret(&r.s, &b, "regcred", true, 20).await;
    // Unrelated events, one every 150 ms, for as long as the retry may take.
    let mut n = 0;
    let written = wait_until(Duration::from_secs(20), || {
        n += 1;
        let (r, a, b) = (&r, &a, &b);
        let n = n;
        async move {
            r.relabel(b, "churn", &n.to_string()).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            r.s.secret(a, "regcred").await.is_some()
        }
    })
    .await;
    assert!(written, "{a} never retried: {}", d.logs());
    assert!(r.patches_of(&a).await >= 3, "two failed, one through");
    assert!(d.logs().contains("some writes failed; retrying"));
}

/// Forbidden is not fixed by trying again a second later: it is reported once and looked at
/// again on a change of the namespace (or the next refresh), not retried in a loop.
#[tokio::test]
async fn a_forbidden_namespace_is_reported_once_not_looped() {
    let r = Rig::new(json!([])).await;
    let a = r.s.namespace(&r.prefix, &[], &[]).await;
    let msg = format!(
        "secrets \"regcred\" is forbidden: User \"x\" cannot patch resource \"secrets\" in API group \"\" in the namespace \"{a}\""
    );
    r.api
        .set_rules(json!([on_secret_of(&a, 403, "Forbidden", &msg)]))
        .await;
    let d = r.daemon(&r.all(), &[]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            d.logs().contains("forbidden to patch")
        })
        .await,
        "{}",
        d.logs()
    );
    // With --max-backoff 2 a retry loop would have tried four times or more by now.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(r.patches_of(&a).await, 1, "{}", d.logs());
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(r.s.client.clone(), &a);
    let failed: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("WriteFailed"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].deprecated_count.unwrap_or(1), 1, "{failed:?}");
    // A change of the namespace is a reason to look again.
    r.api.set_rules(json!([])).await;
    r.relabel(&a, "rbac", "granted").await;
    d.await_secret(&r.s, &a, "regcred", true, 10).await;
}

/// Cluster-wide secret lists (not watches) the daemon has sent so far.
async fn secret_lists(api: &FaultProxy) -> usize {
    api.seen("GET", "/api/v1/secrets?")
        .await
        .iter()
        .filter(|e| !e["path"].as_str().unwrap().contains("watch=true"))
        .count()
}

/// With pruning, a namespace that stops matching loses our secret, and neither that nor any
/// event on a namespace that is no target costs a list of secrets.
#[tokio::test]
async fn a_relabel_with_prune_costs_no_list_per_event() {
    let r = Rig::new(json!([])).await;
    let a = r.s.namespace(&r.prefix, &[("regcred", "on")], &[]).await;
    let others = [
        r.s.namespace(&r.prefix, &[], &[]).await,
        r.s.namespace(&r.prefix, &[], &[]).await,
    ];
    let selected = format!(
        "{{ include: [\"{}-*\"], selector: \"regcred=on\" }}",
        r.prefix
    );
    let d = r.daemon(&selected, &["--prune"]).await;
    d.await_secret(&r.s, &a, "regcred", true, 20).await;
    // The one sweep after the first pass: counted once it has listed and nothing follows.
    let mut lists = secret_lists(&r.api).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = secret_lists(&r.api).await;
        if now > 0 && now == lists {
            break;
        }
        lists = now;
    }
    for i in 0..10 {
        r.relabel(&others[i % 2], "churn", &i.to_string()).await;
    }
    r.relabel(&a, "regcred", "off").await;
    d.await_secret(&r.s, &a, "regcred", false, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(secret_lists(&r.api).await, lists, "{}", d.logs());
}

/// What the daemon remembers of its own writes (to skip their echo) follows the namespaces
/// that exist: it shrinks when they are deleted.
#[tokio::test]
async fn the_echo_cache_follows_the_live_namespaces() {
    let r = Rig::new(json!([])).await;
    let mut made = Vec::new();
    for _ in 0..6 {
        made.push(r.s.namespace(&r.prefix, &[], &[]).await);
    }
    let d = r.daemon(&r.all(), &[]).await;
    const REMEMBERED: &str = "regcred_remembered_objects";
    assert!(d.metric_reaches(REMEMBERED, 6.0, 20).await, "{}", d.logs());
    let before = d.metric(REMEMBERED).await.unwrap();
    let api = Api::<Namespace>::all(r.s.client.clone());
    for ns in &made {
        api.delete(ns, &Default::default()).await.unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || async {
            d.metric(REMEMBERED).await.unwrap_or(f64::MAX) <= before - 6.0
        })
        .await,
        "still {:?} of {before}: {}",
        d.metric(REMEMBERED).await,
        d.logs()
    );
}

/// The secret watch loses track (the connection drops, and the API server answers its
/// resume with 410 Gone) while the secret is deleted: no event will ever say so, so the
/// re-list must lead to a look at every target.
#[tokio::test]
async fn a_secret_deleted_while_the_watch_had_lost_track_is_restored() {
    let r = Rig::new(json!([])).await;
    let a = r.s.namespace(&r.prefix, &[], &[]).await;
    let d = r.daemon(&r.all(), &[]).await;
    d.await_secret(&r.s, &a, "regcred", true, 20).await;
    // Settled: no reconcile or retry pending that would look at the namespace anyway.
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.api
        .set_rules(json!([{
            "method": "GET", "path": "^/api/v1/secrets\\?.*watch=true", "times": 1,
            "status": 410,
            "body": status(410, "Expired", "too old resource version: 1 (2)")
        }]))
        .await;
    r.link.down();
    Api::<Secret>::namespaced(r.s.client.clone(), &a)
        .delete("regcred", &Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.link.up().await;
    d.await_secret(&r.s, &a, "regcred", true, 30).await;
    let log = r.api.log().await;
    assert!(
        log.iter().any(|e| e["rule"] == 0),
        "the watch never hit the 410: {}\n{:?}",
        d.logs(),
        log.iter()
            .filter(|e| e["path"].as_str().unwrap().contains("secrets?"))
            .collect::<Vec<_>>()
    );
}

/// A ServiceAccount that already references our secret is not read again at every look at
/// its namespace: the watch holds what it references.
#[tokio::test]
async fn an_unchanged_service_account_costs_no_request() {
    let r = Rig::new(json!([])).await;
    let a = r.s.namespace(&r.prefix, &[], &[]).await;
    default_service_account(&r.s.client, &a).await;
    let d = r
        .daemon_with(&r.all(), "serviceAccounts: [default]\n", &[])
        .await;
    let path = format!("/api/v1/namespaces/{a}/serviceaccounts/default");
    let referenced = || async {
        default_service_account(&r.s.client, &a)
            .await
            .image_pull_secrets
            .is_some_and(|refs| refs.iter().any(|x| x.name == "regcred"))
    };
    assert!(
        wait_until(Duration::from_secs(20), referenced).await,
        "{}",
        d.logs()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = r.api.seen("GET", &path).await.len();
    // Ten looks at the namespace (each relabel is a reconcile), none needs the account.
    for i in 0..10 {
        r.relabel(&a, "churn", &i.to_string()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.api.seen("GET", &path).await.len(), reads, "{}", d.logs());
    // A reference removed by hand is put back: the watch shows the change.
    let api = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(r.s.client.clone(), &a);
    api.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(&json!({"imagePullSecrets": null})),
    )
    .await
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), referenced).await,
        "{}",
        d.logs()
    );
}

/// `--prune-secret-names`: the managed secrets of a name no longer configured are pruned,
/// read by name; a same-named secret we do not manage stays.
#[tokio::test]
async fn names_no_longer_configured_are_pruned_by_name() {
    let r = Rig::new(json!([])).await;
    let a = r.s.namespace(&r.prefix, &[], &[]).await;
    let b = r.s.namespace(&r.prefix, &[], &[]).await;
    let secret = |labels: Option<std::collections::BTreeMap<String, String>>| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("oldcred".into()),
            labels,
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        string_data: Some(
            [(
                ".dockerconfigjson".to_string(),
                "{\"auths\":{}}".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let ours = [
        ("app.kubernetes.io/managed-by", "regcred-refresher"),
        ("regcred-refresher.io/instance", r.instance.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Api::<Secret>::namespaced(r.s.client.clone(), &a)
        .create(&Default::default(), &secret(Some(ours)))
        .await
        .unwrap();
    Api::<Secret>::namespaced(r.s.client.clone(), &b)
        .create(&Default::default(), &secret(None))
        .await
        .unwrap();
    let d = r
        .daemon(&r.all(), &["--prune", "--prune-secret-names", "oldcred"])
        .await;
    d.await_secret(&r.s, &a, "oldcred", false, 20).await;
    assert!(r.s.secret(&b, "oldcred").await.is_some(), "not ours: kept");
    assert!(r.s.secret(&a, "regcred").await.is_some());
    assert!(
        !r.api.seen("GET", "/api/v1/secrets?").await.iter().any(|e| {
            let p = e["path"].as_str().unwrap();
            !p.contains("watch=true") && !p.contains("fieldSelector=metadata.name")
        }),
        "a list of secrets without a name"
    );
}

/// Reads of one namespace's secret (`GET …/namespaces/<ns>/secrets/regcred`) and cluster-wide
/// lists of secrets by name alone (not a watch: no label selector) seen so far.
async fn reads_and_lists(api: &FaultProxy, namespaces: &[String]) -> (usize, usize) {
    let log = api.log().await;
    let gets = log
        .iter()
        .filter(|e| e["method"] == "GET")
        .filter_map(|e| e["path"].as_str())
        .filter(|p| {
            namespaces
                .iter()
                .any(|ns| p.starts_with(&format!("/api/v1/namespaces/{ns}/secrets/regcred")))
        })
        .count();
    let lists = log
        .iter()
        .filter(|e| e["method"] == "GET")
        .filter_map(|e| e["path"].as_str())
        .filter(|p| p.starts_with("/api/v1/secrets?") && !p.contains("labelSelector"))
        .count();
    (gets, lists)
}

/// A restart over namespaces that hold their secrets already: the first pass reads them in
/// one paged list per configured name, not one read per namespace, and writes nothing. Where
/// that list is refused it reads them one by one, and still writes nothing.
#[tokio::test]
async fn a_restart_reads_the_live_secrets_in_one_list_not_one_read_per_namespace() {
    let r = Rig::new(json!([])).await;
    let mut made = Vec::new();
    for _ in 0..8 {
        made.push(r.s.namespace(&r.prefix, &[], &[]).await);
    }
    let first = r.daemon(&r.all(), &[]).await;
    for ns in &made {
        first.await_secret(&r.s, ns, "regcred", true, 20).await;
    }
    drop(first);
    for refused in [false, true] {
        if refused {
            r.api
                .set_rules(json!([{"method": "GET", "path": "^/api/v1/secrets\\?(?!.*labelSelector)",
                    "status": 403, "body": status(403, "Forbidden", "secrets is forbidden: cannot list resource \"secrets\" at the cluster scope")}]))
                .await;
        }
        let (gets, lists) = reads_and_lists(&r.api, &made).await;
        let patches: usize = {
            let mut n = 0;
            for ns in &made {
                n += r.patches_of(ns).await;
            }
            n
        };
        let d = r.daemon(&r.all(), &[]).await;
        assert!(
            d.metric_reaches("regcred_cycle_duration_seconds_count", 1.0, 30)
                .await,
            "{}",
            d.logs()
        );
        let (gets_after, lists_after) = reads_and_lists(&r.api, &made).await;
        let mut patches_after = 0;
        for ns in &made {
            patches_after += r.patches_of(ns).await;
        }
        assert_eq!(patches_after, patches, "unchanged: no write; {}", d.logs());
        if refused {
            assert_eq!(gets_after - gets, made.len(), "one read each: {}", d.logs());
        } else {
            assert_eq!(
                (gets_after - gets, lists_after - lists),
                (0, 1),
                "{}",
                d.logs()
            );
        }
        drop(d);
    }
}
