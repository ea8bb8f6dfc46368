//! Outages of a provider and of the API server while the daemon runs: the last good secret
//! stays, the failure shows in metrics and readiness, and everything is correct again once
//! the fault clears, without a restart.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};

use super::common::*;
use super::link::Link;

fn ecr_config(s: &Scratch, include: &str) -> std::path::PathBuf {
    s.file(
        &unique("o.yaml"),
        &format!("registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces:\n  include: [\"{include}\"]\n"),
    )
}

#[tokio::test]
async fn a_provider_outage_keeps_the_secret_and_recovers() {
    let s = Scratch::new().await;
    let p = unique("po");
    let ns = s.namespace(&p, &[], &[]).await;
    // 2 s tokens (a proxy rewrites each one's expiry), so the daemon refetches about every
    // 1.5 s and the cached token runs out soon after the link goes down.
    let short = super::faults_proxy::FaultProxy::http(
        &env("AWS_ENDPOINT_URL"),
        serde_json::json!([{"method": "POST", "json_set": [[["authorizationData", 0, "expiresAt"], {"now_plus": 2}]]}]),
    )
    .await;
    let link = Link::to(Link::parse(&short.url())).await;
    let cfg = ecr_config(&s, &format!("{p}-*"));
    let d = DaemonProc::start(
        &s,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--min-refresh-interval",
            "1",
            "--max-backoff",
            "2",
            "--provider-timeout",
            "5",
        ],
        &[("AWS_ENDPOINT_URL", &link.url("http"))],
    )
    .await;
    d.await_secret(&s, &ns, "regcred", true, 10).await;

    link.down();
    let failed = "regcred_refreshes_total{source=\"ecr\",result=\"ecr_call\"}";
    // Read once a fetch has failed: a renewal may still land between the secret's first
    // write and the cut.
    assert!(d.metric_reaches(failed, 1.0, 20).await, "{}", d.logs());
    let before = s.secret(&ns, "regcred").await.unwrap();
    assert!(d.metric_reaches(failed, 3.0, 20).await, "{}", d.logs());
    assert!(
        d.logs()
            .contains("fetch failed; the last good credential stays in use"),
        "{}",
        d.logs()
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            d.get("/readyz").await.is_some_and(|(c, _)| c == 503)
        })
        .await,
        "{}",
        d.logs()
    );
    let during = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(
        rv(&during),
        rv(&before),
        "the last good secret stays untouched"
    );

    link.up().await;
    let ok = "regcred_refreshes_total{source=\"ecr\",result=\"success\"}";
    let base = d.metric(ok).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            d.metric(ok).await.unwrap_or(0.0) > base
        })
        .await,
        "no recovery: {}",
        d.logs()
    );
    assert!(s.secret(&ns, "regcred").await.is_some());
}

#[tokio::test]
async fn an_api_server_outage_ends_with_every_target_correct() {
    let s = Scratch::new().await;
    let p = unique("ao");
    let a = s.namespace(&p, &[], &[]).await;
    let link = Link::to(Link::parse(&env("REGCRED_TEST_API_SERVER"))).await;
    // The daemon reaches the API server only through the link.
    let kubeconfig = kubeconfig_via(
        &s,
        std::path::Path::new(&env("REGCRED_TEST_KUBECONFIG")),
        &link.url("https"),
    );
    let cfg = s.file(
        "g.yaml",
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [\"{p}-*\"]\n",
            env("REGCRED_TEST_GOOGLE_KEY_FILE")
        ),
    );
    let d = DaemonProc::start(
        &s,
        &["--config", cfg.to_str().unwrap()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    d.await_secret(&s, &a, "regcred", true, 10).await;

    link.down();
    // While it is away: a secret is deleted and a namespace appears.
    Api::<Secret>::namespaced(s.client.clone(), &a)
        .delete("regcred", &DeleteParams::default())
        .await
        .unwrap();
    let b = s.namespace(&p, &[], &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.secret(&b, "regcred").await.is_none());
    link.up().await;
    let healed = wait_until(Duration::from_secs(30), || async {
        s.secret(&a, "regcred").await.is_some() && s.secret(&b, "regcred").await.is_some()
    })
    .await;
    assert!(healed, "not healed after the outage: {}", d.logs());
    assert_eq!(d.get("/readyz").await.unwrap().0, 200);
}
