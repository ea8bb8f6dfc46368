//! The chart's life after `helm install`, on the world's node, as users live it (issue 21):
//! - cronjob mode: the real CronJob controller starts our Jobs on a one-minute schedule, a
//!   good run completes, a failing source fails its Job after the retries, and a bad
//!   configuration fails it at once (the chart's `podFailurePolicy`);
//! - `helm upgrade` with a changed value and `helm rollback`, two replicas: each change is
//!   written once per target, by one writer (the old pods, with the old configuration, never
//!   write it back), and a rollout that changes nothing writes nothing;
//! - `helm uninstall` with the cleanup hook: its Job (sh + kubectl, in an image of the world)
//!   deletes this release's secrets, its ServiceAccount references and its Lease, and nothing
//!   else: a hand-made secret and another instance's secret under the same name stay, and so
//!   does a reference a user added.
//!
//! The figures (writes per change, the hook's duration, the Jobs' outcomes) go to stderr: run
//! with `--nocapture`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::chart_node::{
    CHART, Release, await_ready, await_secret, helm, kubectl, lease_holder, push_layer_image,
    refresher_image, release_namespace, release_pods,
};
use super::common::*;
use super::node_pull::{Outcome, create_pod, events, outcome, push_image};

/// The node's address (tests/testenv/node.sh NODE_IP): nothing listens on port 9 there, so a
/// token endpoint at it refuses every connection.
const DEAD_TOKEN_URI: &str = "http://10.99.0.2:9/token";

/// The values a user writes: the image and its pull secret, then `rest` (YAML, top level).
fn chart_values(s: &Scratch, image: &str, rest: &str) -> String {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    s.file(
        &unique("values.yaml"),
        &format!(
            "image: {{ repository: {repo}, tag: {tag:?} }}\nimagePullSecrets: [regcred]\n{rest}"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// The static quay.io source of `release_namespace`'s password Secret, with `extra` fields.
fn quay_registry(extra: &str) -> String {
    format!(
        "    - name: quay\n      static: {{ server: quay.io, username: {}, passwordSecretRef: {{ name: quay-password }}{extra} }}\n",
        env("REGCRED_TEST_QUAY_USER")
    )
}

/// A Secret `name` with `key.json` in the release namespace.
async fn key_secret(s: &Scratch, ns: &str, name: &str, key: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"key.json": key},
    }))
    .unwrap();
    Api::<Secret>::namespaced(s.client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The release's Jobs (the CronJob's job template carries the chart's labels).
async fn release_jobs(s: &Scratch, ns: &str, release: &str) -> Vec<Job> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    Api::<Job>::namespaced(s.client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
}

/// The first of the release's Jobs to finish (up to `secs`): its `Complete` or `Failed`
/// condition's type and reason, its counts and its pods' exit codes.
struct Finished {
    name: String,
    condition: String,
    reason: String,
    succeeded: i32,
    failed: i32,
    exit_codes: Vec<i32>,
    created_by_cronjob: bool,
    took: Duration,
}

async fn first_finished_job(s: &Scratch, ns: &str, release: &str, secs: u64) -> Finished {
    let start = Instant::now();
    loop {
        for j in release_jobs(s, ns, release).await {
            let st = j.status.clone().unwrap_or_default();
            let done = st
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
            let Some(c) = done else { continue };
            let name = j.metadata.name.clone().unwrap();
            let pods = Api::<Pod>::namespaced(s.client.clone(), ns)
                .list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
                .unwrap()
                .items;
            let exit_codes = pods
                .iter()
                .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
                .flatten()
                .filter_map(|c| Some(c.state.as_ref()?.terminated.as_ref()?.exit_code))
                .collect();
            return Finished {
                name,
                condition: c.type_,
                reason: c.reason.unwrap_or_default(),
                succeeded: st.succeeded.unwrap_or(0),
                failed: st.failed.unwrap_or(0),
                exit_codes,
                created_by_cronjob: j
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o.kind == "CronJob"),
                took: start.elapsed(),
            };
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "no Job of {release} finished in {secs} s: {}",
            kubectl(&["-n", ns, "get", "jobs,pods,events"]).await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Cronjob mode on a one-minute schedule, three releases side by side (the install hook off,
/// so that the CronJob controller starts every Job): a good source completes and writes the
/// target; a Google key whose token endpoint refuses connections exits 1, which the Job
/// retries `cronjob.backoffLimit` (2) times before it fails; a key Secret that is no key exits
/// 2, which `podFailurePolicy` fails at once, with no retry.
#[tokio::test]
async fn chart_cronjob_schedule_runs_jobs_and_failures_follow_the_pod_failure_policy() {
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let prefix = unique("chart-cs");
    let t1 = s.namespace(&prefix, &[], &[]).await;
    default_service_account(&s.client, &t1).await;
    let mut key: Value = serde_json::from_str(
        &std::fs::read_to_string(env("REGCRED_TEST_GOOGLE_KEY_FILE")).unwrap(),
    )
    .unwrap();
    key["token_uri"] = DEAD_TOKEN_URI.into();
    key_secret(&s, &rel_ns, "dead-endpoint-key", &key.to_string()).await;
    key_secret(
        &s,
        &rel_ns,
        "not-a-key",
        r#"{"type": "service_account", "client_email": "x@y.iam.gserviceaccount.com"}"#,
    )
    .await;
    let (image, workload) = tokio::join!(refresher_image(&s), push_image(&s, "quay.io"));
    let common = "mode: cronjob\nschedule: \"* * * * *\"\nhookJob: { enabled: false }\n";
    let good = chart_values(
        &s,
        &image,
        &format!(
            "{common}config:\n  registries:\n{}  secrets:\n    - name: regcred\n      registries: [quay]\n  namespaces:\n    include: [\"{prefix}-*\"]\n",
            quay_registry("")
        ),
    );
    let google = |secret: &str| {
        chart_values(
            &s,
            &image,
            &format!(
                "{common}config:\n  registries:\n    - name: gar\n      google: {{ hosts: [us-docker.pkg.dev], keySecretRef: {{ name: {secret} }} }}\n  secrets:\n    - name: regcred-gar\n      registries: [gar]\n  namespaces:\n    include: [\"{prefix}-*\"]\n"
            ),
        )
    };
    let failing = google("dead-endpoint-key");
    let bad = google("not-a-key");
    let releases: Vec<(String, String)> = [("cg", good), ("cf", failing), ("cb", bad)]
        .into_iter()
        .map(|(p, v)| (unique(p), v))
        .collect();
    let _guards: Vec<Release> = releases
        .iter()
        .map(|(r, _)| Release {
            name: r.clone(),
            namespace: rel_ns.clone(),
            home: s.dir.join("helm"),
        })
        .collect();
    for (r, v) in &releases {
        helm(&s, &["install", r, CHART, "-n", &rel_ns, "-f", v]).await;
    }
    let installed = Instant::now();
    let (ok, fail, badcfg) = tokio::join!(
        first_finished_job(&s, &rel_ns, &releases[0].0, 150),
        first_finished_job(&s, &rel_ns, &releases[1].0, 240),
        first_finished_job(&s, &rel_ns, &releases[2].0, 150),
    );
    for (what, f) in [
        ("good source", &ok),
        ("failing source", &fail),
        ("bad config", &badcfg),
    ] {
        eprintln!(
            "chart_lifecycle cronjob: {what}: Job {} {} ({}) {:?} after install, succeeded {} failed {}, exit codes {:?}",
            f.name, f.condition, f.reason, f.took, f.succeeded, f.failed, f.exit_codes
        );
        assert!(f.created_by_cronjob, "{what}: {} is the CronJob's", f.name);
    }
    assert_eq!(
        (
            ok.condition.as_str(),
            ok.succeeded,
            ok.exit_codes.as_slice()
        ),
        ("Complete", 1, &[0][..])
    );
    await_secret(&s, &t1, 1).await;
    create_pod(&s, &t1, "first", &workload, &["regcred"]).await;
    let (o, _) = outcome(&s, &t1, "first").await;
    assert_eq!(o, Outcome::Running, "{:?}", events(&s, &t1, "first").await);

    // Exit 1: retried (backoffLimit 2, so three pods), then BackoffLimitExceeded.
    assert_eq!(
        (fail.condition.as_str(), fail.reason.as_str(), fail.failed),
        ("Failed", "BackoffLimitExceeded", 3),
        "exit codes {:?}",
        fail.exit_codes
    );
    assert!(
        fail.exit_codes.iter().all(|c| *c == 1),
        "{:?}",
        fail.exit_codes
    );
    // Exit 2: the pod failure policy fails the Job at its first pod.
    assert_eq!(
        (
            badcfg.condition.as_str(),
            badcfg.reason.as_str(),
            badcfg.failed,
            badcfg.exit_codes.as_slice()
        ),
        ("Failed", "PodFailurePolicy", 1, &[2][..])
    );
    assert!(s.secret(&t1, "regcred-gar").await.is_none());
    eprintln!(
        "chart_lifecycle cronjob: all three Jobs finished {:?} after the last install",
        installed.elapsed()
    );
}

/// The versions of `name` in the namespaces starting with `prefix`, as a watch sees them:
/// (namespace, resourceVersion, the quay.io entry's email).
type Versions = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

fn watch_versions(
    client: kube::Client,
    prefix: String,
    name: &str,
) -> (Versions, tokio::task::JoinHandle<()>) {
    let seen: Versions = Default::default();
    let out = seen.clone();
    let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut stream = watcher(Api::<Secret>::all(client), wc).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                if !ns.starts_with(&prefix) {
                    continue;
                }
                let email = auths(&o)["quay.io"]["email"].as_str().map(str::to_string);
                let mut v = out.lock().unwrap();
                let entry = (ns, rv(&o), email);
                if !v.contains(&entry) {
                    v.push(entry);
                }
            }
        }
    });
    (seen, task)
}

/// Writes per namespace since `from` (index into the versions).
fn writes_since(v: &Versions, from: usize) -> BTreeMap<String, Vec<Option<String>>> {
    let mut m = BTreeMap::<String, Vec<Option<String>>>::new();
    for (ns, _, email) in v.lock().unwrap()[from..].iter() {
        m.entry(ns.clone()).or_default().push(email.clone());
    }
    m
}

/// Waits until every target's live secret carries `email` and the Deployment's rollout is
/// done (two Ready pods of the new template), then a few seconds more for a stray writer.
async fn settle(s: &Scratch, rel_ns: &str, release: &str, targets: &[String], email: Option<&str>) {
    await_ready(s, rel_ns, release, 2, 180).await;
    let ok = wait_until(Duration::from_secs(60), || async {
        for t in targets {
            let Some(secret) = s.secret(t, "regcred").await else {
                return false;
            };
            if auths(&secret)["quay.io"]["email"].as_str() != email {
                return false;
            }
        }
        true
    })
    .await;
    assert!(ok, "the targets never all carried email {email:?}");
    // Long enough for the old pods' passes (the chart's minimum refresh interval) and for a
    // follower that would write.
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// `helm upgrade` with a value that changes the document (the static source's email),
/// `helm upgrade` with one that changes only the pods (a rollout, nothing to write) and
/// `helm rollback` to the first revision, with two replicas: every change lands once per
/// target, no target flips back and forth between the old and the new configuration while
/// old and new pods overlap. The Lease's holders in turn are reported, not asserted.
#[tokio::test]
async fn chart_upgrade_and_rollback_write_each_change_once_with_one_writer() {
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let prefix = unique("chart-up");
    let mut targets = Vec::new();
    for _ in 0..3 {
        targets.push(s.namespace(&prefix, &[], &[]).await);
    }
    let image = refresher_image(&s).await;
    let rest = |email: &str| {
        format!(
            "replicaCount: 2\nconfig:\n  registries:\n{}  secrets:\n    - name: regcred\n      registries: [quay]\n  namespaces:\n    include: [\"{prefix}-*\"]\n",
            quay_registry(email)
        )
    };
    let v1 = chart_values(&s, &image, &rest(""));
    let v2 = chart_values(&s, &image, &rest(", email: ops@example.com"));
    let release = unique("ru");
    let full = format!("{release}-regcred-refresher");
    let _guard = Release {
        name: release.clone(),
        namespace: rel_ns.clone(),
        home: s.dir.join("helm"),
    };
    let (versions, watch) = watch_versions(s.client.clone(), format!("{prefix}-"), "regcred");
    // The Lease's holders in turn (sampled every 200 ms), for the report.
    let holders = Arc::new(Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (c, h, ns, full) = (
            s.client.clone(),
            holders.clone(),
            rel_ns.clone(),
            full.clone(),
        );
        tokio::spawn(async move {
            let leases = Api::<Lease>::namespaced(c, &ns);
            loop {
                if let Ok(Some(l)) = leases.get_opt(&full).await
                    && let Some(holder) = l.spec.and_then(|sp| sp.holder_identity)
                {
                    let mut seen = h.lock().unwrap();
                    if seen.last() != Some(&holder) {
                        seen.push(holder);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    helm(&s, &["install", &release, CHART, "-n", &rel_ns, "-f", &v1]).await;
    settle(&s, &rel_ns, &release, &targets, None).await;
    let installed = writes_since(&versions, 0);
    for t in &targets {
        assert_eq!(
            installed.get(t).map(Vec::len),
            Some(1),
            "install: {installed:?}"
        );
    }

    let steps: [(&str, Vec<&str>, Option<&str>); 3] = [
        (
            "upgrade, email added",
            vec!["upgrade", &release, CHART, "-n", &rel_ns, "-f", &v2],
            Some("ops@example.com"),
        ),
        (
            "upgrade, pods only",
            vec![
                "upgrade",
                &release,
                CHART,
                "-n",
                &rel_ns,
                "-f",
                &v2,
                "--set",
                "podAnnotations.rollout=r2",
            ],
            Some("ops@example.com"),
        ),
        (
            "rollback to revision 1",
            vec!["rollback", &release, "1", "-n", &rel_ns],
            None,
        ),
    ];
    for (what, args, email) in steps {
        let from = versions.lock().unwrap().len();
        let t = Instant::now();
        helm(&s, &args).await;
        settle(&s, &rel_ns, &release, &targets, email).await;
        let w = writes_since(&versions, from);
        let expected = usize::from(what != "upgrade, pods only");
        eprintln!(
            "chart_lifecycle upgrade: {what}: settled in {:?}; writes per target {:?}",
            t.elapsed(),
            targets
                .iter()
                .map(|t| w.get(t).map_or(0, Vec::len))
                .collect::<Vec<_>>()
        );
        for t in &targets {
            let got = w.get(t).cloned().unwrap_or_default();
            assert_eq!(
                got.len(),
                expected,
                "{what}: {t} written {} times (expected {expected}): {got:?}",
                got.len()
            );
            assert!(
                got.iter().all(|e| e.as_deref() == email),
                "{what}: {t} went through another configuration: {got:?}"
            );
        }
    }
    watch.abort();
    sampler.abort();
    eprintln!(
        "chart_lifecycle upgrade: the Lease's holders in turn: {:?}",
        holders.lock().unwrap()
    );
}

/// The cleanup hook's image (the chart's default, docker.io/alpine/k8s, is out of this world's
/// reach; any image with `sh` and `kubectl` will do, values.yaml says): the world's busybox
/// and this machine's kubectl, in the world's quay.io registry.
async fn kubectl_image(s: &Scratch) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        .unwrap();
    let path = std::fs::canonicalize(String::from_utf8_lossy(&out.stdout).trim())
        .expect("kubectl on this machine");
    push_layer_image(
        s,
        "regcred/kubectl",
        &[(path.to_str().unwrap(), "/usr/bin/kubectl")],
        "",
    )
    .await
}

async fn pull_secret_refs(s: &Scratch, ns: &str) -> Vec<String> {
    Api::<ServiceAccount>::namespaced(s.client.clone(), ns)
        .get("default")
        .await
        .unwrap()
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// `helm uninstall` with `cleanup.onUninstall`: the pre-delete Job stops the refresher and
/// deletes what this release wrote that Helm does not track (its secrets in two targets, their
/// references in the `default` ServiceAccounts, the Lease), while in the same targets a
/// same-named secret made by hand, one written by another instance and a reference the user
/// added to the ServiceAccount stay as they were.
#[tokio::test]
async fn chart_uninstall_cleanup_hook_removes_only_this_releases_objects() {
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let prefix = unique("chart-un");
    let mut ns = Vec::new();
    for _ in 0..4 {
        let n = s.namespace(&prefix, &[], &[]).await;
        default_service_account(&s.client, &n).await;
        ns.push(n);
    }
    let (t1, t2, hand, other) = (&ns[0], &ns[1], &ns[2], &ns[3]);
    // The user's own reference on t1's ServiceAccount.
    Api::<ServiceAccount>::namespaced(s.client.clone(), t1)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "mine"}]})),
        )
        .await
        .unwrap();
    // A same-named secret made by hand.
    let handmade: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "regcred", "namespace": hand},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\":{\"quay.io\":{\"auth\":\"aGFuZDptYWRl\"}}}"},
    }))
    .unwrap();
    let hand_rv = rv(&Api::<Secret>::namespaced(s.client.clone(), hand)
        .create(&PostParams::default(), &handmade)
        .await
        .unwrap());
    // Another instance's secret under the same name (as another release writes it).
    let other_instance = unique("another-release");
    let cfg = super::node_pull::quay_config(&s, &format!("{{ include: [{other}] }}"));
    let r = run_bin(
        &["--once", "--config", &cfg, "--instance", &other_instance],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let other_rv = rv(&s.secret(other, "regcred").await.unwrap());

    let (image, kimage) = tokio::join!(refresher_image(&s), kubectl_image(&s));
    let (krepo, ktag) = kimage.rsplit_once(':').unwrap();
    let release = unique("rx");
    let full = format!("{release}-regcred-refresher");
    let vals = chart_values(
        &s,
        &image,
        &format!(
            "config:\n  registries:\n{}  secrets:\n    - name: regcred\n      registries: [quay]\n  namespaces:\n    include: [\"{prefix}-*\"]\n  serviceAccounts: [default]\ncleanup:\n  onUninstall: true\n  image: {{ repository: {krepo}, tag: {ktag:?} }}\n",
            quay_registry("")
        ),
    );
    let _guard = Release {
        name: release.clone(),
        namespace: rel_ns.clone(),
        home: s.dir.join("helm"),
    };
    helm(
        &s,
        &["install", &release, CHART, "-n", &rel_ns, "-f", &vals],
    )
    .await;
    await_ready(&s, &rel_ns, &release, 1, 120).await;
    for t in [t1, t2] {
        await_secret(&s, t, 60).await;
    }
    let refs_ok = wait_until(Duration::from_secs(30), || async {
        pull_secret_refs(&s, t1).await == ["mine", "regcred"]
            && pull_secret_refs(&s, t2).await == ["regcred"]
    })
    .await;
    assert!(
        refs_ok,
        "the refresher added its reference: {:?} {:?}",
        pull_secret_refs(&s, t1).await,
        pull_secret_refs(&s, t2).await
    );
    assert!(lease_holder(&s, &rel_ns, &full).await.is_some());

    let t = Instant::now();
    let out = helm(
        &s,
        &["uninstall", &release, "-n", &rel_ns, "--timeout", "4m"],
    )
    .await;
    let took = t.elapsed();
    let hook = format!("{full}-cleanup");
    let ev = kubectl(&[
        "-n",
        &rel_ns,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={hook}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
    .await;
    eprintln!(
        "chart_lifecycle uninstall: helm uninstall with the cleanup hook returned in {took:?}; the hook Job's events: {}",
        ev.trim().replace('\n', "; ")
    );
    assert!(
        ev.contains("Completed"),
        "the hook Job completed: {ev}\n{out}"
    );
    for t in [t1, t2] {
        assert!(
            s.secret(t, "regcred").await.is_none(),
            "{t}: this release's secret stays"
        );
    }
    assert_eq!(pull_secret_refs(&s, t1).await, ["mine"]);
    assert!(pull_secret_refs(&s, t2).await.is_empty());
    assert!(
        Api::<Lease>::namespaced(s.client.clone(), &rel_ns)
            .get_opt(&full)
            .await
            .unwrap()
            .is_none(),
        "the Lease is deleted"
    );
    let h = s
        .secret(hand, "regcred")
        .await
        .expect("the hand-made secret stays");
    assert_eq!(rv(&h), hand_rv, "the hand-made secret is untouched");
    let o = s
        .secret(other, "regcred")
        .await
        .expect("the other instance's secret stays");
    assert_eq!(rv(&o), other_rv, "the other instance's secret is untouched");
    assert!(release_pods(&s, &rel_ns, &release).await.is_empty());
}

/// Release `release` of the chart's defaults (deployment mode, one replica) whose only
/// source reaches its cloud through what the pod's environment offers; `extra` is the rest
/// of the values. Returns the release's name once `helm install` has returned (not waiting
/// for the pod).
async fn keyless_release(
    s: &Scratch,
    rel_ns: &str,
    image: &str,
    release: String,
    target: &str,
    registry: &str,
    extra: &str,
) -> String {
    let vals = chart_values(
        s,
        image,
        &format!(
            "config:\n  registries:\n{registry}  secrets:\n    - name: regcred\n      registries: [cloud]\n  namespaces:\n    include: [{target}]\n{extra}"
        ),
    );
    helm(s, &["install", &release, CHART, "-n", rel_ns, "-f", &vals]).await;
    release
}

/// Guards that uninstall `releases` (made by [`keyless_release`]) when dropped, returned once
/// each has a Ready pod; made first, so that a release that never gets ready goes too.
async fn ready_releases(s: &Scratch, rel_ns: &str, releases: &[String]) -> Vec<Release> {
    let guards = releases
        .iter()
        .map(|r| Release {
            name: r.clone(),
            namespace: rel_ns.to_string(),
            home: s.dir.join("helm"),
        })
        .collect();
    for r in releases {
        await_ready(s, rel_ns, r, 1, 180).await;
    }
    guards
}

/// Keyless from a pod, with the chart's values and the node's link-local endpoints (no key in
/// any Secret):
/// - EC2 instance role: nothing set but the ECR API's address; the SDK's chain in the pod
///   reaches IMDSv2 at 169.254.169.254 through the node;
/// - EKS Pod Identity: the agent at 169.254.170.23 with the pod's projected token (audience
///   `pods.eks.amazonaws.com`), in the two variables and the volume EKS's Pod Identity webhook
///   injects (this world has no webhook, so `extraEnv` / `extraVolumes` carry them);
/// - GKE Workload Identity: a `google` registry without `keySecretRef` and the ServiceAccount's
///   `iam.gke.io/gcp-service-account` annotation; the metadata server at
///   metadata.google.internal answers the pod.
///
/// Each secret holds a token the fixture issued to that identity, and a workload pod pulls
/// from ECR through the kubelet with the instance role's.

#[tokio::test]
async fn chart_keyless_sources_from_a_pod_write_their_secrets() {
    let _g = super::keyless::KEYLESS.lock().await;
    super::keyless::endpoints(json!({})).await;
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let mut t = Vec::new();
    for _ in 0..3 {
        let n = s.namespace("chart-kl", &[], &[]).await;
        default_service_account(&s.client, &n).await;
        t.push(n);
    }
    let aws = env("AWS_ENDPOINT_URL");
    let aws_port: u16 = aws
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let relay = super::chaos::relay(aws_port).await;
    let endpoint = format!(
        "extraEnv:\n  - {{ name: AWS_ENDPOINT_URL, value: \"http://10.99.0.2:{relay}\" }}\n"
    );
    let ecr = "    - name: cloud\n      ecr: { region: us-east-1 }\n";
    let ecr_host = env("REGCRED_TEST_ECR_REGISTRY");
    let (image, workload) = tokio::join!(refresher_image(&s), push_image(&s, &ecr_host));
    let before = super::keyless::stats().await;
    let pod_identity = format!(
        "{endpoint}  - {{ name: AWS_CONTAINER_CREDENTIALS_FULL_URI, value: \"{}\" }}\n  - {{ name: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, value: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token }}\nextraVolumes:\n  - name: eks-pod-identity-token\n    projected:\n      sources:\n        - serviceAccountToken: {{ audience: pods.eks.amazonaws.com, expirationSeconds: 86400, path: eks-pod-identity-token }}\nextraVolumeMounts:\n  - {{ name: eks-pod-identity-token, mountPath: /var/run/secrets/pods.eks.amazonaws.com/serviceaccount, readOnly: true }}\n",
        env("REGCRED_TEST_POD_IDENTITY_URI")
    );
    let gke = "serviceAccount:\n  annotations: { iam.gke.io/gcp-service-account: regcred@example-project.iam.gserviceaccount.com }\n";
    let releases = vec![
        keyless_release(&s, &rel_ns, &image, unique("rk"), &t[0], ecr, &endpoint).await,
        keyless_release(&s, &rel_ns, &image, unique("rk"), &t[1], ecr, &pod_identity).await,
        keyless_release(
            &s,
            &rel_ns,
            &image,
            unique("rk"),
            &t[2],
            "    - name: cloud\n      google: { hosts: [us-docker.pkg.dev, gcr.io] }\n",
            gke,
        )
        .await,
    ];
    let _guards = ready_releases(&s, &rel_ns, &releases).await;
    let written = s.secrets_appear(&t, "regcred", 60).await;
    assert!(written, "every keyless release wrote its target");
    let after = super::keyless::stats().await;
    let delta = |p: &[&str]| {
        let get = |v: &Value| p.iter().fold(v, |v, k| &v[*k]).as_i64().unwrap_or(0);
        get(&after) - get(&before)
    };
    let issued = |svc: &str| -> Vec<String> {
        after[svc]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    for (n, source) in [(&t[0], "imds"), (&t[1], "pod-identity")] {
        let a = auths(&s.secret(n, "regcred").await.unwrap());
        let token = a[ecr_host.as_str()]["auth"].as_str().unwrap().to_string();
        assert!(
            issued("ecr").contains(&token),
            "{source}: a token the fixture issued"
        );
        assert!(
            delta(&["ecr", "by_source", source]) >= 1,
            "{source}: the token call was signed with {source} credentials: {after}"
        );
    }
    assert!(delta(&["pod_identity", "credentials"]) >= 1, "{after}");
    let a = auths(&s.secret(&t[2], "regcred").await.unwrap());
    for host in ["us-docker.pkg.dev", "gcr.io"] {
        assert_eq!(a[host]["username"], "oauth2accesstoken");
        assert!(
            issued("gke").contains(&a[host]["password"].as_str().unwrap().to_string()),
            "{host}: the metadata server's token"
        );
    }
    assert_eq!(delta(&["gke", "missing_flavor"]), 0);
    eprintln!(
        "chart_lifecycle keyless: ECR token calls by source imds {}, pod-identity {}; metadata token requests {}",
        delta(&["ecr", "by_source", "imds"]),
        delta(&["ecr", "by_source", "pod-identity"]),
        delta(&["gke", "token_requests"])
    );
    create_pod(&s, &t[0], "first", &workload, &["regcred"]).await;
    let (o, _) = outcome(&s, &t[0], "first").await;
    assert_eq!(
        o,
        Outcome::Running,
        "{:?}",
        events(&s, &t[0], "first").await
    );
}

/// Federation from a pod with the chart's own values and each cloud's default URLs: Azure
/// Workload Identity (`mode: projected`: the chart mounts a token of audience
/// `api://AzureADTokenExchange` and sets the AZURE_* variables) and Google workload identity
/// federation (the chart renders the credential configuration: STS at sts.googleapis.com,
/// impersonation at iamcredentials.googleapis.com). CoreDNS answers the pod those names, and
/// login.microsoftonline.com, with the node's front for the world's fixtures
/// (tests/testenv/node.sh); the one value no user of a public cloud sets is the world's CA
/// (`SSL_CERT_FILE` from a ConfigMap, as behind a TLS-inspecting proxy).
///
/// Each secret holds what the fixture issued to the release's ServiceAccount (an ACR refresh
/// token, an impersonated Google token), the front counts the pod's calls under the real
/// names, and a workload pod in each target pulls through the kubelet.
#[tokio::test]
async fn chart_federated_sources_from_a_pod_write_their_secrets() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let mut t = Vec::new();
    for _ in 0..2 {
        let n = s.namespace("chart-fed", &[], &[]).await;
        default_service_account(&s.client, &n).await;
        t.push(n);
    }
    let ca: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "world-ca", "namespace": rel_ns},
        "data": {"ca.crt": std::fs::read_to_string(env("REGCRED_TEST_CA_CERT")).unwrap()},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(s.client.clone(), &rel_ns)
        .create(&PostParams::default(), &ca)
        .await
        .unwrap();
    let trust = "extraEnv:\n  - { name: SSL_CERT_FILE, value: /etc/regcred-world-ca/ca.crt }\nextraVolumes:\n  - name: world-ca\n    configMap: { name: world-ca }\nextraVolumeMounts:\n  - { name: world-ca, mountPath: /etc/regcred-world-ca, readOnly: true }\n";
    let acr_host = env("REGCRED_TEST_AZURE_REGISTRY");
    let (image, acr_image, gar_image) = tokio::join!(
        refresher_image(&s),
        push_image(&s, &acr_host),
        push_image(&s, "us-docker.pkg.dev")
    );
    let front = "http://127.0.0.1:5002";
    let relayed = |v: &Value, host: &str| v[host]["relayed"].as_i64().unwrap_or(0);
    let before = fixture_request(front, "GET", "/stats", &Value::Null)
        .await
        .1;

    // The federated credential names the ServiceAccount the chart creates.
    let azure_release = unique("rk");
    let client = super::acr::client_id();
    super::acr::register(json!({
        "client_id": client,
        "subjects": [format!("system:serviceaccount:{rel_ns}:{azure_release}-regcred-refresher")],
        "acr_pull": [acr_host],
    }))
    .await;
    let azure = format!(
        "{trust}azure:\n  workloadIdentity: {{ clientId: {client}, tenantId: {}, mode: projected }}\n",
        env("REGCRED_TEST_AZURE_TENANT")
    );
    let google = format!(
        "{trust}google:\n  workloadIdentityFederation: {{ audience: {:?}, serviceAccountEmail: {} }}\n",
        env("REGCRED_TEST_GOOGLE_WIF_AUDIENCE"),
        env("REGCRED_TEST_GOOGLE_CLIENT_EMAIL")
    );
    let releases = vec![
        keyless_release(
            &s,
            &rel_ns,
            &image,
            azure_release,
            &t[0],
            &format!("    - name: cloud\n      acr: {{ loginServer: {acr_host} }}\n"),
            &azure,
        )
        .await,
        keyless_release(
            &s,
            &rel_ns,
            &image,
            unique("rk"),
            &t[1],
            "    - name: cloud\n      google: { hosts: [us-docker.pkg.dev, gcr.io] }\n",
            &google,
        )
        .await,
    ];
    let _guards = ready_releases(&s, &rel_ns, &releases).await;
    let written = s.secrets_appear(&t, "regcred", 60).await;
    assert!(written, "every federated release wrote its target");

    let a = auths(&s.secret(&t[0], "regcred").await.unwrap());
    assert_eq!(
        a[acr_host.as_str()]["username"],
        "00000000-0000-0000-0000-000000000000"
    );
    let refresh = a[acr_host.as_str()]["password"].as_str().unwrap();
    assert!(
        super::acr::issued_by_fixture(refresh).await,
        "an ACR refresh token of the fixture"
    );
    let by_client = &super::acr::stats().await["by_client"][&client];
    assert!(
        by_client["entra"].as_i64() >= Some(1) && by_client["exchange"].as_i64() >= Some(1),
        "Entra ID took the pod's federated token: {by_client}"
    );
    let a = auths(&s.secret(&t[1], "regcred").await.unwrap());
    for host in ["us-docker.pkg.dev", "gcr.io"] {
        let token = a[host]["password"].as_str().unwrap();
        assert!(
            token.starts_with("ya29.c.fixture-impersonated-"),
            "{host}: the impersonated token"
        );
        assert!(super::google_wif::issued_by_fixture(token).await);
    }
    let after = fixture_request(front, "GET", "/stats", &Value::Null)
        .await
        .1;
    let calls: Vec<(&str, i64)> = [
        "login.microsoftonline.com",
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
    ]
    .into_iter()
    .map(|h| (h, relayed(&after, h) - relayed(&before, h)))
    .collect();
    assert!(
        calls.iter().all(|(_, n)| *n >= 1),
        "the pods called each cloud API by its name: {calls:?}"
    );
    eprintln!("chart_lifecycle federated: calls relayed per name {calls:?}");
    for (ns, img) in [(&t[0], &acr_image), (&t[1], &gar_image)] {
        create_pod(&s, ns, "first", img, &["regcred"]).await;
        let (o, _) = outcome(&s, ns, "first").await;
        assert_eq!(o, Outcome::Running, "{:?}", events(&s, ns, "first").await);
    }
}
