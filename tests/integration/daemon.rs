//! Daemon mode against the real API server: watches, restores from cache, readiness,
//! metrics, pruning, leader election and graceful shutdown.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};

use super::common::*;

fn google_config(s: &Scratch, include: &str, extra: &str) -> std::path::PathBuf {
    s.file(
        &unique("d.yaml"),
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{include}\"]\n{extra}",
            env("REGCRED_TEST_GOOGLE_KEY_FILE")
        ),
    )
}

async fn has_secret(s: &Scratch, ns: &str) -> bool {
    s.secret(ns, "regcred").await.is_some()
}

#[tokio::test]
async fn new_namespaces_and_deleted_secrets_are_served_from_cache_within_seconds() {
    let s = Scratch::new().await;
    let p = unique("dw");
    let first = s.namespace(&p, &[], &[]).await;
    // The token endpoint sits behind a link we cut after the first token: everything below
    // must work from the cache.
    let link = super::link::Link::to(super::link::Link::parse(&env(
        "REGCRED_TEST_GOOGLE_TOKEN_URL",
    )))
    .await;
    let keyfile = google_key_via(&s, &link.url("http")).await;
    let cfg = s.file(
        "d.yaml",
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\nserviceAccounts: [default]\n",
            keyfile.display()
        ),
    );
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    assert!(
        wait_until(Duration::from_secs(10), || has_secret(&s, &first)).await,
        "{}",
        d.logs()
    );
    let fetches = "regcred_refreshes_total{source=\"gar\",result=\"success\"}";
    assert_eq!(d.metric(fetches).await, Some(1.0));
    link.down();

    let started = Instant::now();
    let second = s.namespace(&p, &[], &[]).await;
    assert!(
        wait_until(Duration::from_secs(15), || has_secret(&s, &second)).await,
        "{}",
        d.logs()
    );
    eprintln!("new namespace served in {:?}", started.elapsed());

    let api = Api::<Secret>::namespaced(s.client.clone(), &first);
    api.delete("regcred", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || has_secret(&s, &first)).await,
        "deleted secret not restored: {}",
        d.logs()
    );

    // An edit of the data is reverted too.
    let tamper = serde_json::json!({ "data": { ".dockerconfigjson": b64(r#"{"auths":{}}"#) } });
    api.patch("regcred", &PatchParams::default(), &Patch::Merge(&tamper))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            s.secret(&first, "regcred")
                .await
                .is_some_and(|sec| auths(&sec).get("gcr.io").is_some())
        })
        .await,
        "edited secret not restored: {}",
        d.logs()
    );

    // The ServiceAccount kube-controller-manager creates a moment after the namespace gets
    // its reference.
    default_service_account(&s.client, &second).await;
    let sas = Api::<ServiceAccount>::namespaced(s.client.clone(), &second);
    assert!(
        wait_until(Duration::from_secs(15), || async {
            sas.get("default")
                .await
                .unwrap()
                .image_pull_secrets
                .is_some_and(|r| r.iter().any(|r| r.name == "regcred"))
        })
        .await,
        "{}",
        d.logs()
    );
    assert_eq!(
        d.metric(fetches).await,
        Some(1.0),
        "restores and new namespaces cost no token call"
    );
    assert!(
        !d.logs().contains("fetch failed"),
        "a token call was attempted: {}",
        d.logs()
    );
}

/// At start the namespace list and the first pass are one piece of work: each target namespace
/// is written once, not once for the list and again for the pass (twice the API calls at
/// scale, and a conflict or an immutable secret reported twice).
#[tokio::test]
async fn the_start_writes_each_target_namespace_once() {
    let s = Scratch::new().await;
    let p = unique("d1");
    const TARGETS: usize = 12;
    for _ in 0..TARGETS {
        s.namespace(&p, &[], &[]).await;
    }
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [\"{p}-*\"] }}")),
    );
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    let created = "regcred_secret_writes_total{result=\"created\"}";
    assert!(
        d.metric_reaches(created, TARGETS as f64, 15).await,
        "{}",
        d.logs()
    );
    // A second look would come right after the first; this leaves it time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, metrics) = d.get("/metrics").await.unwrap();
    let writes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("regcred_secret_writes_total{"))
        .collect();
    assert_eq!(
        writes,
        vec![format!("{created} {TARGETS}").as_str()],
        "{}",
        d.logs()
    );
}

#[tokio::test]
async fn readiness_and_metrics_follow_the_credentials() {
    let s = Scratch::new().await;
    let p = unique("dr");
    s.namespace(&p, &[], &[]).await;
    let cfg = google_config(&s, &format!("{p}-*"), "");
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            d.get("/readyz").await.is_some_and(|(c, _)| c == 200)
        })
        .await,
        "{}",
        d.logs()
    );
    let (code, body) = d.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert_prometheus_text(&body);
    let left = d
        .metric("regcred_credential_expiry_seconds{source=\"gar\"}")
        .await
        .unwrap();
    assert!((3000.0..3600.0).contains(&left), "{left}");
    assert_eq!(
        d.metric("regcred_secret_writes_total{result=\"created\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(d.metric("regcred_target_namespaces").await, Some(1.0));

    // A token that has expired when it arrives (clock skew, a broken provider) is a failed
    // fetch: never written, never "ready", retried on the backoff.
    let expired = super::faults_proxy::FaultProxy::http(
        &env("AWS_ENDPOINT_URL"),
        serde_json::json!([{"method": "POST", "json_set": [[["authorizationData", 0, "expiresAt"], {"now_plus": -10}]]}]),
    )
    .await;
    let q = unique("dre");
    let ens = s.namespace(&q, &[], &[]).await;
    let ecr = s.file(
        "ecr.yaml",
        &format!("registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces:\n  include: [\"{q}-*\"]\n"),
    );
    let url = expired.url();
    let e = DaemonProc::start(
        &s,
        &[
            "--config",
            ecr.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
            "--max-backoff",
            "2",
        ],
        &[("AWS_ENDPOINT_URL", url.as_str())],
    )
    .await;
    let failed = "regcred_refreshes_total{source=\"ecr\",result=\"expired_on_arrival\"}";
    assert!(
        wait_until(Duration::from_secs(10), || async {
            e.metric(failed).await.unwrap_or(0.0) >= 2.0
        })
        .await,
        "retried: {}",
        e.logs()
    );
    let (code, why) = e.get("/readyz").await.unwrap();
    assert_eq!((code, why.as_str()), (503, "no complete refresh cycle yet"));
    assert!(e.logs().contains("arrived already expired"), "{}", e.logs());
    assert!(s.secret(&ens, "regcred").await.is_none(), "never written");
}

/// Every sample line is `name{labels} value`, every family has TYPE metadata, and it ends in EOF.
fn assert_prometheus_text(body: &str) {
    assert!(body.ends_with("# EOF\n"), "{body}");
    let mut typed = std::collections::BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("regcred_"), "{line}");
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "no TYPE for {line}"
        );
    }
    for family in [
        "regcred_refreshes",
        "regcred_credential_expiry_seconds",
        "regcred_last_success_timestamp_seconds",
        "regcred_secret_writes",
        "regcred_target_namespaces",
        "regcred_cycle_duration_seconds",
    ] {
        assert!(typed.contains(family), "missing {family}: {body}");
    }
}

#[tokio::test]
async fn pruning_removes_only_our_secrets_from_namespaces_that_stop_matching() {
    let s = Scratch::new().await;
    let p = unique("dp");
    let (a, b) = (
        s.namespace(&p, &[("team", "a")], &[]).await,
        s.namespace(&p, &[("team", "a")], &[]).await,
    );
    // Someone else's secret in the same namespace is never touched.
    let other = Secret {
        metadata: ObjectMeta {
            name: Some("theirs".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Secret>::namespaced(s.client.clone(), &a)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let cfg = google_config(&s, &format!("{p}-*"), "  selector: team=a\n");
    // An instance of its own: pruning must not reach the secrets of the tests running beside it.
    let instance = unique("prune");
    let d = DaemonProc::start(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--prune",
            "--instance",
            &instance,
        ],
        &[],
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            has_secret(&s, &a).await && has_secret(&s, &b).await
        })
        .await,
        "{}",
        d.logs()
    );

    let relabel = serde_json::json!({ "metadata": { "labels": { "team": "z" } } });
    Api::<Namespace>::all(s.client.clone())
        .patch(&a, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            !has_secret(&s, &a).await
        })
        .await,
        "not pruned: {}",
        d.logs()
    );
    assert!(
        s.secret(&a, "theirs").await.is_some(),
        "pruning deleted a secret we do not manage"
    );
    assert!(has_secret(&s, &b).await);
}

#[tokio::test]
async fn without_prune_a_namespace_that_stops_matching_is_left_alone() {
    let s = Scratch::new().await;
    let p = unique("dn");
    let a = s.namespace(&p, &[("team", "a")], &[]).await;
    let cfg = google_config(&s, &format!("{p}-*"), "  selector: team=a\n");
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    assert!(
        wait_until(Duration::from_secs(10), || has_secret(&s, &a)).await,
        "{}",
        d.logs()
    );
    let relabel = serde_json::json!({ "metadata": { "labels": { "team": "z" } } });
    Api::<Namespace>::all(s.client.clone())
        .patch(&a, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    // Proof the daemon saw events after the relabel (and is alive): a namespace that starts
    // matching afterwards gets its secret. Only then does "still there" mean "left alone".
    let later = s.namespace(&p, &[("team", "a")], &[]).await;
    assert!(
        wait_until(Duration::from_secs(10), || has_secret(&s, &later)).await,
        "{}",
        d.logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(has_secret(&s, &a).await, "{}", d.logs());
    assert_eq!(d.get("/healthz").await.map(|r| r.0), Some(200));
}

#[tokio::test]
async fn one_leader_writes_and_a_follower_takes_over() {
    let s = Scratch::new().await;
    let p = unique("dl");
    let lease_ns = s.namespace(&format!("{p}-lease"), &[], &[]).await;
    let first = s.namespace(&format!("{p}-t"), &[], &[]).await;
    let cfg = google_config(&s, &format!("{p}-t-*"), "");
    let lease = unique("lease");
    let start = |id: &'static str| {
        let a = [
            "--config",
            cfg.to_str().unwrap(),
            "--leader-election",
            "--lease-name",
            &lease,
            "--lease-namespace",
            &lease_ns,
            "--lease-duration",
            "5",
        ]
        .map(|s| s.to_string());
        let s = &s;
        async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            DaemonProc::start(s, &a, &[("POD_NAME", id)]).await
        }
    };
    let one = start("one").await;
    assert!(
        wait_until(Duration::from_secs(10), || has_secret(&s, &first)).await,
        "{}",
        one.logs()
    );
    let two = start("two").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(one.metric("regcred_leader").await, Some(1.0));
    assert_eq!(two.metric("regcred_leader").await, Some(0.0));
    assert_eq!(
        two.metric("regcred_refreshes_total{source=\"gar\",result=\"success\"}")
            .await,
        None,
        "the follower fetches nothing"
    );
    // No write of any kind (created, updated, unchanged checks, pruned, failed): a follower
    // does not even reconcile.
    let (_, metrics) = two.get("/metrics").await.unwrap();
    let writes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("regcred_secret_writes_total{"))
        .collect();
    assert!(writes.is_empty(), "the follower writes nothing: {writes:?}");
    assert!(
        metrics.contains("regcred_leader 0"),
        "the metrics are the follower's: {metrics}"
    );
    assert_eq!(
        two.get("/readyz").await.map(|r| r.0),
        Some(200),
        "a standby is ready"
    );

    // The leader dies without releasing: the follower takes over within the lease duration.
    let mut one = one;
    one.child.kill().await.unwrap();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            two.metric("regcred_leader").await == Some(1.0)
        })
        .await,
        "{}",
        two.logs()
    );
    eprintln!("takeover after {:?}", killed.elapsed());
    let later = s.namespace(&format!("{p}-t"), &[], &[]).await;
    assert!(
        wait_until(Duration::from_secs(15), || has_secret(&s, &later)).await,
        "{}",
        two.logs()
    );

    // A graceful stop exits 0 and releases the lease.
    let three = start("three").await;
    two.signal("-TERM");
    let mut two = two;
    let status = tokio::time::timeout(Duration::from_secs(15), two.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {}",
        two.logs()
    );
    assert!(two.logs().contains("lease released"), "{}", two.logs());
    // Released means no holder; the standby picks it up on its next try (within a duration).
    let held = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        s.client.clone(),
        &lease_ns,
    )
    .get(&lease)
    .await
    .unwrap();
    let holder = held
        .spec
        .and_then(|sp| sp.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty() || holder == "three",
        "lease still held by {holder:?}"
    );
    let released = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || async {
            three.metric("regcred_leader").await == Some(1.0)
        })
        .await,
        "{}",
        three.logs()
    );
    eprintln!("handover after release {:?}", released.elapsed());
}

#[tokio::test]
async fn sigterm_exits_zero_promptly() {
    let s = Scratch::new().await;
    let p = unique("ds");
    s.namespace(&p, &[], &[]).await;
    let cfg = google_config(&s, &format!("{p}-*"), "");
    let mut d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            d.logs().contains("cycle finished")
        })
        .await
    );
    let t = Instant::now();
    d.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(12), d.child.wait())
        .await
        .expect("stops within the shutdown bound")
        .unwrap();
    assert!(status.success(), "{}", d.logs());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_conflict_is_reported_as_a_kubernetes_event_on_the_secret() {
    let s = Scratch::new().await;
    let p = unique("de");
    let ns = s.namespace(&p, &[], &[]).await;
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some("regcred".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Secret>::namespaced(s.client.clone(), &ns)
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let cfg = google_config(&s, &format!("{p}-*"), "");
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &ns);
    let found = wait_until(Duration::from_secs(10), || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Conflict")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("regcred")
                    && e.reporting_controller.as_deref() == Some("regcred-refresher")
            })
    })
    .await;
    assert!(found, "no Conflict event: {}", d.logs());
    // Counted once, and not looped: nothing looks again at a conflict until the namespace or
    // the config changes.
    let series = "regcred_secret_writes_total{result=\"conflict\"}";
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(d.metric(series).await, Some(1.0), "{}", d.logs());
}

#[tokio::test]
async fn a_failing_source_is_reported_as_an_event_on_the_refreshers_pod() {
    let s = Scratch::new().await;
    let ns = s.namespace("dev", &[], &[]).await;
    // The refresher's own Pod (its image never pulls, from example.invalid: the object suffices).
    // Pods need their ServiceAccount (admission): the controller's `default`.
    default_service_account(&s.client, &ns).await;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "refresher-0" },
        "spec": { "containers": [{ "name": "r", "image": "example.invalid/regcred-refresher" }] }
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(s.client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    // A token endpoint that does not answer: a failure only a fetch sees (a broken mounted
    // document or a blank password is refused at start instead).
    let dead = google_key_via(&s, &format!("http://{}", free_port())).await;
    let cfg = s.file(
        "ev.yaml",
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{ns}\"]\n",
            dead.display()
        ),
    );
    let d = DaemonProc::start(
        &s,
        &["--config", cfg.to_str().unwrap()],
        &[("POD_NAME", "refresher-0"), ("POD_NAMESPACE", &ns)],
    )
    .await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &ns);
    let found = wait_until(Duration::from_secs(10), || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("RefreshFailed")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Pod")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("refresher-0")
                    && e.note.as_deref().is_some_and(|n| n.contains("source gar"))
            })
    })
    .await;
    assert!(found, "no RefreshFailed event on the pod: {}", d.logs());
    assert_eq!(
        d.metric("regcred_refreshes_total{source=\"gar\",result=\"google\"}")
            .await
            .map(|v| v >= 1.0),
        Some(true)
    );
}

/// The default admin address, `[::]`, answers probes on IPv6 and IPv4 alike (IPv6-only and
/// dual-stack clusters probe the pod over IPv6).
#[tokio::test]
async fn the_admin_server_answers_on_ipv6_and_ipv4() {
    let s = Scratch::new().await;
    let p = unique("dv6");
    s.namespace(&p, &[], &[]).await;
    let pw = s.file("pw", "pw-1");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [\"{p}-*\"] }}")),
    );
    let port = free_port().port();
    let v4: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut d = DaemonProc::start_listening(
        &s,
        &["--config", cfg.to_str().unwrap()],
        &[],
        &format!("[::]:{port}"),
        v4,
    )
    .await;
    assert_eq!(d.get("/healthz").await.map(|r| r.0), Some(200));
    d.admin = (std::net::Ipv6Addr::LOCALHOST, port).into();
    assert_eq!(
        d.get("/healthz").await.map(|r| r.0),
        Some(200),
        "[::1]: {}",
        d.logs()
    );
}
