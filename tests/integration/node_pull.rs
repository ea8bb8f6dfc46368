//! Pulls through the world's node (tests/testenv/node.sh): a real kubelet (with
//! `KubeletEnsureSecretPulledImages` at its default, on) and containerd pull from registries
//! that authenticate like the real ones (tests/fixtures/registry_front.py: ECR, ECR Public,
//! Artifact Registry and gcr.io, ACR, a quay.io-style htpasswd), with the secrets the real
//! binary writes. There are no node-wide credentials: a pod without a secret must fail.
//!
//! Each test pushes an image of its own (a unique layer on the world's busybox image), so the
//! node's image cache never carries one test's pull into another.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use super::common::*;

/// How a pod's container ended up.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Running,
    /// ErrImagePull or ImagePullBackOff, with the message.
    PullFailed(String, String),
}

/// A new image in `host`'s registry (its repository in the world's backend registry): the
/// world's busybox image plus a layer of its own. Returns `host/repo:1`.
pub(super) async fn push_image(s: &Scratch, host: &str) -> String {
    let repo = unique("team/app");
    let dir = s.dir.join(unique("layer"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("marker"), &repo).unwrap();
    let tar = s.dir.join(unique("layer.tar"));
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("marker")
        .status()
        .unwrap();
    assert!(st.success());
    let backend = env("REGCRED_TEST_REGISTRY_BACKEND");
    let out = tokio::process::Command::new(env("REGCRED_TEST_CRANE"))
        .args([
            "append",
            "--insecure",
            "-b",
            &format!("{backend}/app:base"),
            "-f",
        ])
        .arg(&tar)
        .args(["-t", &format!("{backend}/{host}/{repo}:1")])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "crane append: {out:?}");
    format!("{host}/{repo}:1")
}

/// The directory tree `root` as one layer on the world's busybox image, pushed to the backend
/// registry as `target` (`host/repo:tag`, served by `host`'s registry).
pub(super) async fn append_tree(s: &Scratch, root: &std::path::Path, target: &str) {
    let tar = s.dir.join(unique("tree.tar"));
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let backend = env("REGCRED_TEST_REGISTRY_BACKEND");
    let out = tokio::process::Command::new(env("REGCRED_TEST_CRANE"))
        .args([
            "append",
            "--insecure",
            "-b",
            &format!("{backend}/app:base"),
            "-f",
        ])
        .arg(&tar)
        .args(["-t", &format!("{backend}/{target}")])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "crane append: {out:?}");
}

/// A pod on the node running `image` (sleeping), with `secrets` as its `imagePullSecrets`.
pub(super) async fn create_pod(s: &Scratch, ns: &str, name: &str, image: &str, secrets: &[&str]) {
    let pull: Vec<Value> = secrets.iter().map(|n| json!({ "name": n })).collect();
    let mut spec = json!({
        "containers": [{"name": "app", "image": image, "command": ["/bin/sleep", "3600"]}],
        "terminationGracePeriodSeconds": 0,
    });
    if !pull.is_empty() {
        spec["imagePullSecrets"] = Value::Array(pull);
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap();
    Api::<Pod>::namespaced(s.client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

/// Waits (up to 90 s) until the pod's container runs or its pull has failed.
pub(super) async fn outcome(s: &Scratch, ns: &str, name: &str) -> (Outcome, Duration) {
    let pods = Api::<Pod>::namespaced(s.client.clone(), ns);
    let start = Instant::now();
    loop {
        let pod = pods.get(name).await.unwrap();
        let state = pod
            .status
            .and_then(|st| st.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.state);
        if let Some(state) = state {
            if state.running.is_some() {
                return (Outcome::Running, start.elapsed());
            }
            if let Some(w) = state.waiting {
                let reason = w.reason.unwrap_or_default();
                if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
                    return (
                        Outcome::PullFailed(reason, w.message.unwrap_or_default()),
                        start.elapsed(),
                    );
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{ns}/{name} neither ran nor failed to pull in 90 s; events: {:?}",
            events(s, ns, name).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages of the pod's events, oldest first.
pub(super) async fn events(s: &Scratch, ns: &str, name: &str) -> Vec<String> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let mut list = Api::<Event>::namespaced(s.client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items;
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone());
    list.into_iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect()
}

/// The registry front's counters for `host` (manifests, blobs, refused, last_refusal).
async fn registry_stats(host: &str) -> Value {
    let (status, doc) = fixture_request(
        &env("REGCRED_TEST_REGISTRY_CONTROL"),
        "GET",
        "/stats",
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    doc.get(host).cloned().unwrap_or(json!({}))
}

fn count(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

/// A pod without a secret fails to pull, with the registry's refusal in its events; then a
/// pod with the secret `--once` wrote runs. The pull times go to stderr (`--nocapture`).
async fn refused_without_then_pulls_with(
    s: &Scratch,
    ns: &str,
    host: &str,
    image: &str,
    secret: &str,
) {
    let before = registry_stats(host).await;
    create_pod(s, ns, "no-secret", image, &[]).await;
    let (o, t) = outcome(s, ns, "no-secret").await;
    let Outcome::PullFailed(reason, message) = o else {
        panic!("{host}: a pod without a pull secret ran: no node-wide credentials may exist")
    };
    eprintln!("node_pull {host}: no secret -> {reason} in {t:?}");
    let ev = events(s, ns, "no-secret").await.join("\n");
    assert!(
        message.contains("401") || message.contains("authorization failed"),
        "{host}: {message}"
    );
    assert_says(&ev, &["Failed to pull image", "ErrImagePull"]);
    let after = registry_stats(host).await;
    assert!(
        count(&after, "refused") > count(&before, "refused"),
        "{host}: the registry refused: {after}"
    );
    assert!(
        after["last_refusal"].as_str().unwrap_or("").contains("401"),
        "{after}"
    );

    create_pod(s, ns, "ours", image, &[secret]).await;
    let (o, t) = outcome(s, ns, "ours").await;
    assert_eq!(
        o,
        Outcome::Running,
        "{host}: our secret pulls; events: {:?}",
        events(s, ns, "ours").await
    );
    eprintln!("node_pull {host}: our secret -> Running in {t:?}");
    assert!(
        count(&registry_stats(host).await, "manifests") > count(&after, "manifests"),
        "{host}: pulled through the registry"
    );
}

pub(super) fn quay_config(s: &Scratch, namespaces: &str) -> String {
    let pw = s.file(
        &unique("quay-pw"),
        &std::fs::read_to_string(env("REGCRED_TEST_QUAY_PASSWORD_FILE")).unwrap(),
    );
    s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: {}, passwordFile: {pw:?} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {namespaces}\n",
            env("REGCRED_TEST_QUAY_USER")
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

async fn once(cfg: &str, extra: &[&str], envs: &[(&str, &str)]) {
    let mut args = vec!["--once", "--config", cfg];
    args.extend_from_slice(extra);
    let r = run_bin(&args, envs).await;
    assert_eq!(r.code, 0, "{r:?}");
}

#[tokio::test]
async fn static_quay_pod_pulls_with_our_secret_and_not_without() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-quay", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let image = push_image(&s, "quay.io").await;
    once(
        &quay_config(&s, &format!("{{ include: [{ns}] }}")),
        &[],
        &[],
    )
    .await;
    refused_without_then_pulls_with(&s, &ns, "quay.io", &image, "regcred").await;
}

fn ecr_config(s: &Scratch, ns: &str) -> String {
    s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces:\n  include: [{ns}]\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

async fn secret_of(s: &Scratch, ns: &str) -> Secret {
    s.secret(ns, "regcred").await.expect("secret written")
}

/// ECR: refused without, pulls with ours; rotated in place by `--force` (same uid, a new
/// token) a new pod in the namespace still runs, pulling a new image with the new token.
#[tokio::test]
async fn ecr_pod_pulls_with_our_secret_and_after_rotation_in_place() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-ecr", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let host = env("REGCRED_TEST_ECR_REGISTRY");
    let image = push_image(&s, &host).await;
    let cfg = ecr_config(&s, &ns);
    once(&cfg, &[], &[]).await;
    refused_without_then_pulls_with(&s, &ns, &host, &image, "regcred").await;

    let old = secret_of(&s, &ns).await;
    once(&cfg, &["--force"], &[]).await;
    let new = secret_of(&s, &ns).await;
    assert_eq!(old.metadata.uid, new.metadata.uid, "rotated in place");
    assert_ne!(
        auths(&old)[host.as_str()]["password"],
        auths(&new)[host.as_str()]["password"],
        "a new token"
    );
    // The cached image, matched by the secret's coordinates...
    create_pod(&s, &ns, "cached-after-rotation", &image, &["regcred"]).await;
    let (o, t) = outcome(&s, &ns, "cached-after-rotation").await;
    assert_eq!(o, Outcome::Running);
    eprintln!("node_pull {host}: rotated secret, cached image -> Running in {t:?}");
    // ...and a fresh pull, which only the new token can make.
    let second = push_image(&s, &host).await;
    create_pod(&s, &ns, "pulled-after-rotation", &second, &["regcred"]).await;
    let (o, t) = outcome(&s, &ns, "pulled-after-rotation").await;
    assert_eq!(
        o,
        Outcome::Running,
        "{:?}",
        events(&s, &ns, "pulled-after-rotation").await
    );
    eprintln!("node_pull {host}: rotated secret, new image -> Running in {t:?}");
}

#[tokio::test]
async fn ecr_public_pod_pulls_with_our_secret_and_not_without() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-ecrpub", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let image = push_image(&s, "public.ecr.aws").await;
    let cfg = s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: pub\n    ecrPublic: {{}}\nsecrets:\n  - name: regcred\n    registries: [pub]\nnamespaces:\n  include: [{ns}]\n"
        ),
    );
    once(cfg.to_str().unwrap(), &[], &[]).await;
    refused_without_then_pulls_with(&s, &ns, "public.ecr.aws", &image, "regcred").await;
}

/// Artifact Registry and gcr.io from one Google source: both pull with our secret.
#[tokio::test]
async fn google_pods_pull_from_artifact_registry_and_gcr_with_our_secret_and_not_without() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-gar", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let cfg = s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [us-docker.pkg.dev, gcr.io] }}\nsecrets:\n  - name: gcp\n    registries: [gar]\nnamespaces: {{ include: [{ns}] }}\n"
        ),
    );
    once(
        cfg.to_str().unwrap(),
        &[],
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &env("REGCRED_TEST_GOOGLE_KEY_FILE"),
        )],
    )
    .await;
    let ar = push_image(&s, "us-docker.pkg.dev").await;
    refused_without_then_pulls_with(&s, &ns, "us-docker.pkg.dev", &ar, "gcp").await;
    let gcr = push_image(&s, "gcr.io").await;
    create_pod(&s, &ns, "gcr", &gcr, &["gcp"]).await;
    let (o, t) = outcome(&s, &ns, "gcr").await;
    assert_eq!(o, Outcome::Running, "{:?}", events(&s, &ns, "gcr").await);
    eprintln!("node_pull gcr.io: our secret -> Running in {t:?}");
}

/// An Azure app with AcrPull on the world's registry, whose refresh tokens live `lifetime` s.
pub(super) async fn acr_app(s: &Scratch, lifetime: u64) -> (String, String) {
    let client = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(..0x1000),
        fastrand::u64(..1 << 48)
    );
    let secret_value = unique("sp~secret");
    let (status, doc) = fixture_request(
        &env("REGCRED_TEST_AZURE_CONTROL_URL"),
        "POST",
        "/apps",
        &json!({"client_id": client, "secret": secret_value, "refresh_lifetime": lifetime,
                "acr_pull": [env("REGCRED_TEST_AZURE_REGISTRY")]}),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    let file = s.file(&unique("client-secret"), &format!("{secret_value}\n"));
    (client, file.to_str().unwrap().to_string())
}

fn acr_config(s: &Scratch, ns: &str, client: &str, secret_file: &str) -> String {
    s.file(
        &unique("c.yaml"),
        &format!(
            "registries:\n  - name: acr\n    acr: {{ loginServer: {}, tenantId: {}, clientId: {client}, clientSecretFile: {secret_file:?} }}\nsecrets:\n  - name: regcred\n    registries: [acr]\nnamespaces:\n  include: [{ns}]\n",
            env("REGCRED_TEST_AZURE_REGISTRY"),
            env("REGCRED_TEST_AZURE_TENANT")
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

#[tokio::test]
async fn acr_pod_pulls_with_our_secret_and_not_without() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-acr", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let host = env("REGCRED_TEST_AZURE_REGISTRY");
    let image = push_image(&s, &host).await;
    let (client, file) = acr_app(&s, 10800).await;
    let ca = env("REGCRED_TEST_CA_CERT");
    once(
        &acr_config(&s, &ns, &client, &file),
        &[],
        &[("SSL_CERT_FILE", &ca)],
    )
    .await;
    refused_without_then_pulls_with(&s, &ns, &host, &image, "regcred").await;
}

/// With `KubeletEnsureSecretPulledImages` on (the default since 1.35), an image on the node
/// is no free pass: namespace `lapsed` holds a secret of ours whose refresh token expired,
/// `fresh` pulls the image with a live one, and a pod in `lapsed` is then refused (the
/// kubelet pulls again with the lapsed credential, and the registry says 401) although the
/// image is cached. This is what a secret the refresher stopped renewing costs.
#[tokio::test]
async fn an_expired_secret_of_ours_is_refused_although_the_image_is_cached() {
    let s = Scratch::new().await;
    let lapsed = s.namespace("node-lapsed", &[], &[]).await;
    let fresh = s.namespace("node-fresh", &[], &[]).await;
    default_service_account(&s.client, &lapsed).await;
    default_service_account(&s.client, &fresh).await;
    let host = env("REGCRED_TEST_AZURE_REGISTRY");
    let image = push_image(&s, &host).await;
    let ca = env("REGCRED_TEST_CA_CERT");
    let ssl = [("SSL_CERT_FILE", ca.as_str())];
    let (client, file) = acr_app(&s, 8).await;
    once(&acr_config(&s, &lapsed, &client, &file), &[], &ssl).await;
    let written = Instant::now();
    let (client2, file2) = acr_app(&s, 10800).await;
    once(&acr_config(&s, &fresh, &client2, &file2), &[], &ssl).await;
    create_pod(&s, &fresh, "fresh", &image, &["regcred"]).await;
    assert_eq!(outcome(&s, &fresh, "fresh").await.0, Outcome::Running);

    tokio::time::sleep(Duration::from_secs(9).saturating_sub(written.elapsed())).await;
    create_pod(&s, &lapsed, "lapsed", &image, &["regcred"]).await;
    let (o, t) = outcome(&s, &lapsed, "lapsed").await;
    let Outcome::PullFailed(_, message) = o else {
        panic!(
            "a pod whose secret lapsed ran from the cache: is KubeletEnsureSecretPulledImages off? {:?}",
            events(&s, &lapsed, "lapsed").await
        )
    };
    assert!(message.contains("401"), "{message}");
    eprintln!("node_pull {host}: lapsed secret, cached image -> refused in {t:?}");
}

/// The daemon serves a namespace created after it started: its first pod pulls at once, with
/// no ImagePullBackOff on the way.
#[tokio::test]
async fn a_new_namespace_served_by_the_daemon_runs_its_first_pod() {
    let s = Scratch::new().await;
    let prefix = unique("node-new");
    let image = push_image(&s, "quay.io").await;
    let cfg = quay_config(&s, &format!("{{ include: [\"{prefix}-*\"] }}"));
    let d = DaemonProc::start(&s, &["--config", &cfg], &[]).await;
    let ns = s.namespace(&prefix, &[], &[]).await;
    d.await_secret(&s, &ns, "regcred", true, 30).await;
    default_service_account(&s.client, &ns).await;
    create_pod(&s, &ns, "first", &image, &["regcred"]).await;
    let (o, t) = outcome(&s, &ns, "first").await;
    assert_eq!(o, Outcome::Running, "{:?}", events(&s, &ns, "first").await);
    eprintln!("node_pull quay.io: daemon-served new namespace, first pod -> Running in {t:?}");
    let ev = events(&s, &ns, "first").await.join("\n");
    assert!(!ev.contains("BackOff") && !ev.contains("Failed"), "{ev}");
}

/// `serviceAccounts: [default]`: the pod names no secret, the ServiceAccount admission plugin
/// copies our reference from `default`, and the pull goes through.
#[tokio::test]
async fn our_service_account_reference_lets_a_pod_without_image_pull_secrets_pull() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-sa", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let image = push_image(&s, "quay.io").await;
    let cfg = quay_config(&s, &format!("{{ include: [{ns}] }}"));
    let cfg_text = std::fs::read_to_string(&cfg).unwrap() + "serviceAccounts: [default]\n";
    std::fs::write(&cfg, cfg_text).unwrap();
    once(&cfg, &[], &[]).await;
    let sa = Api::<ServiceAccount>::namespaced(s.client.clone(), &ns)
        .get("default")
        .await
        .unwrap();
    assert!(
        sa.image_pull_secrets
            .unwrap_or_default()
            .iter()
            .any(|r| r.name == "regcred")
    );
    create_pod(&s, &ns, "via-sa", &image, &[]).await;
    let pod = Api::<Pod>::namespaced(s.client.clone(), &ns)
        .get("via-sa")
        .await
        .unwrap();
    let refs = pod.spec.unwrap().image_pull_secrets.unwrap_or_default();
    assert!(
        refs.iter().any(|r| r.name == "regcred"),
        "admission copied it: {refs:?}"
    );
    let (o, t) = outcome(&s, &ns, "via-sa").await;
    assert_eq!(o, Outcome::Running, "{:?}", events(&s, &ns, "via-sa").await);
    eprintln!("node_pull quay.io: ServiceAccount reference -> Running in {t:?}");
}

/// The binary and the shared libraries it loads (`ldd`), stripped of debug info, as a layer
/// onto the world's busybox image in quay.io's registry. Returns the image.
async fn push_binary_image(s: &Scratch) -> String {
    let root = s.dir.join(unique("image-root"));
    std::fs::create_dir_all(&root).unwrap();
    let out = std::process::Command::new("ldd")
        .arg(bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "ldd: {out:?}");
    let libs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(str::to_string)
        .collect();
    for lib in &libs {
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dest).unwrap();
    }
    let st = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin())
        .arg(root.join("regcred-refresher"))
        .status()
        .unwrap();
    assert!(st.success(), "objcopy --strip-debug");
    let repo = unique("regcred/refresher");
    append_tree(s, &root, &format!("quay.io/{repo}:1")).await;
    format!("quay.io/{repo}:1")
}

/// The binary itself as a pod, with in-cluster configuration (its ServiceAccount token and
/// the `kubernetes` Service, routed by kube-proxy to the API server), its password from a
/// secret volume and its image pulled with the secret an earlier run of ours wrote: the run
/// succeeds and the target namespace gets its secret.
#[tokio::test]
async fn the_binary_runs_as_a_pod_with_in_cluster_config() {
    let s = Scratch::new().await;
    let runner = s.namespace("node-runner", &[], &[]).await;
    let target = s.namespace("node-target", &[], &[]).await;
    default_service_account(&s.client, &runner).await;
    let image = push_binary_image(&s).await;
    // Our own pull secret for our image, written from outside the cluster.
    once(
        &quay_config(&s, &format!("{{ include: [{runner}] }}")),
        &[],
        &[],
    )
    .await;

    let password = std::fs::read_to_string(env("REGCRED_TEST_QUAY_PASSWORD_FILE")).unwrap();
    let config = format!(
        "registries:\n  - name: quay\n    static: {{ server: quay.io, username: {}, passwordFile: /etc/quay/password }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {{ include: [{target}] }}\n",
        env("REGCRED_TEST_QUAY_USER")
    );
    let objects = json!([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "refresher", "namespace": runner}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config", "namespace": runner},
         "data": {"config.yaml": config}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "quay-password", "namespace": runner},
         "stringData": {"password": password}},
    ]);
    for o in objects.as_array().unwrap() {
        let kind = o["kind"].as_str().unwrap();
        let pp = PostParams::default();
        match kind {
            "ServiceAccount" => {
                Api::<ServiceAccount>::namespaced(s.client.clone(), &runner)
                    .create(&pp, &serde_json::from_value(o.clone()).unwrap())
                    .await
                    .unwrap();
            }
            "ConfigMap" => {
                Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(s.client.clone(), &runner)
                    .create(&pp, &serde_json::from_value(o.clone()).unwrap())
                    .await
                    .unwrap();
            }
            _ => {
                Api::<Secret>::namespaced(s.client.clone(), &runner)
                    .create(&pp, &serde_json::from_value(o.clone()).unwrap())
                    .await
                    .unwrap();
            }
        }
    }
    let user = format!("system:serviceaccount:{runner}:refresher");
    s.grant(
        &user,
        vec![rule(&[""], &["namespaces"], &["get", "list", "watch"])],
        &[&target],
        vec![
            rule(
                &[""],
                &["secrets"],
                &["get", "list", "create", "patch", "update"],
            ),
            rule(&[""], &["events"], &["create", "patch"]),
        ],
    )
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "refresher", "namespace": runner},
        "spec": {
            "serviceAccountName": "refresher",
            "restartPolicy": "Never",
            "imagePullSecrets": [{"name": "regcred"}],
            "containers": [{
                "name": "refresher", "image": image,
                "command": ["/regcred-refresher", "--once", "--config", "/etc/regcred/config.yaml"],
                "env": [{"name": "REGCRED_LOG", "value": "info"}],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/regcred", "readOnly": true},
                    {"name": "password", "mountPath": "/etc/quay", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "config"}},
                {"name": "password", "secret": {"secretName": "quay-password"}},
            ],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(s.client.clone(), &runner);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let start = Instant::now();
    let phase = loop {
        let p = pods.get("refresher").await.unwrap();
        let phase = p.status.and_then(|st| st.phase).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break phase;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the refresher pod is still {phase}: {:?}",
            events(&s, &runner, "refresher").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = pods
        .logs("refresher", &Default::default())
        .await
        .unwrap_or_else(|e| format!("(no logs: {e})"));
    assert_eq!(phase, "Succeeded", "{logs}");
    eprintln!(
        "node_pull: the binary as a pod (in-cluster config) -> Succeeded in {:?}",
        start.elapsed()
    );
    let written = s
        .secret(&target, "regcred")
        .await
        .expect("written in-cluster");
    assert_eq!(
        auths(&written)["quay.io"]["username"],
        env("REGCRED_TEST_QUAY_USER")
    );
}

/// What a pod sees of the world: CoreDNS answers the `kubernetes` Service's name and the
/// registries' and metadata server's real names; the link-local endpoints answer as on a
/// GKE/EKS node (GKE metadata with `Metadata-Flavor: Google`, IMDSv2 refusing a call without
/// a session token).
#[tokio::test]
async fn pods_resolve_the_worlds_names_and_reach_the_link_local_endpoints() {
    let s = Scratch::new().await;
    let ns = s.namespace("node-dns", &[], &[]).await;
    default_service_account(&s.client, &ns).await;
    let image = push_image(&s, "quay.io").await;
    once(
        &quay_config(&s, &format!("{{ include: [{ns}] }}")),
        &[],
        &[],
    )
    .await;
    let script = [
        "nslookup kubernetes.default.svc.cluster.local",
        &format!("nslookup {}", env("REGCRED_TEST_ECR_REGISTRY")),
        "nslookup metadata.google.internal",
        "echo email=$(wget -qO- --header 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/email)",
        "wget -qO- http://169.254.169.254/latest/meta-data/ || echo imds-refused",
    ]
    .join("; ");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "look", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "imagePullSecrets": [{"name": "regcred"}],
            "containers": [{"name": "look", "image": image, "command": ["/bin/sh", "-c", script]}],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(s.client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ok = wait_until(Duration::from_secs(60), || async {
        let p = pods.get("look").await.unwrap();
        matches!(
            p.status.and_then(|st| st.phase).as_deref(),
            Some("Succeeded" | "Failed")
        )
    })
    .await;
    assert!(ok, "{:?}", events(&s, &ns, "look").await);
    let logs = pods.logs("look", &Default::default()).await.unwrap();
    assert_says(
        &logs,
        &[
            "Address: 10.0.0.1",
            "Address: 10.99.0.11",
            "Address: 169.254.169.254",
            "email=",
            "imds-refused",
        ],
    );
    assert!(
        !logs.contains("email=\n") && logs.contains("gserviceaccount.com"),
        "{logs}"
    );
}
