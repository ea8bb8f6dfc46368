//! The chart as a user installs it, on the world's node (tests/testenv/node.sh): `helm install`
//! of charts/regcred-refresher with its own defaults (deployment mode, leader election on),
//! the image of the binary served by the world's quay.io registry and pulled by the kubelet
//! with a secret of ours, the release namespace under Pod Security `restricted`. Only what a
//! user must set is set: the image, its pull secret, the registry and its credential Secret,
//! the secret's name and the target namespaces (a glob of this test's own: the world is shared
//! with every other test, and the default `*` would write into their namespaces).
//!
//! Helm is the one `tests/chart/tools.sh` installs (`make test` runs it first, via
//! `chart-test`); `REGCRED_TEST_HELM` overrides it.
//!
//! The figures (install to Ready, to the secret, to the first workload pod Running; the
//! refresher container's memory working set and CPU from its cgroup beside the chart's default
//! requests and limits; the Lease's hand-over) go to stderr: run with `--nocapture`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use super::common::*;
use super::node_pull::{Outcome, create_pod, events, outcome, push_image, quay_config};

pub(super) const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/regcred-refresher");
/// The chart's defaults that the figures are compared with (values.yaml).
const DEFAULT_REQUEST_MEMORY: u64 = 32 << 20;
const DEFAULT_LIMIT_MEMORY: u64 = 128 << 20;
const DEFAULT_REQUEST_CPU_MILLI: f64 = 10.0;
const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

pub(super) fn helm_bin() -> PathBuf {
    if let Ok(h) = std::env::var("REGCRED_TEST_HELM") {
        return h.into();
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env("HOME")).join(".cache"));
    let h = cache.join("regcred-refresher/tools/bin/helm");
    assert!(
        h.exists(),
        "{} missing: run `bash tests/chart/tools.sh` (make test does)",
        h.display()
    );
    h
}

/// `helm ARGS` with Helm's own directories in the scratch dir; panics unless it succeeds.
pub(super) async fn helm(s: &Scratch, args: &[&str]) -> String {
    let home = s.dir.join("helm");
    let out = tokio::process::Command::new(helm_bin())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?}: {text}");
    text
}

/// Uninstalls the release when the test ends, also on a panic (its ClusterRole and binding
/// outlive the namespaces the Scratch deletes).
pub(super) struct Release {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) home: PathBuf,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::process::Command::new(helm_bin())
            .args([
                "uninstall",
                &self.name,
                "-n",
                &self.namespace,
                "--wait=false",
            ])
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output();
    }
}

/// `crane append` of a layer made of `files` (host path, path in the image) and the shared
/// libraries the executables among them load (`ldd`) onto the world's busybox image in
/// quay.io's registry, then `crane mutate` with `entrypoint` (empty: none) and user 65532. Returns the image
/// (`quay.io/<repo>:1`).
pub(super) async fn push_layer_image(
    s: &Scratch,
    repo: &str,
    files: &[(&str, &str)],
    entrypoint: &str,
) -> String {
    let root = s.dir.join(unique("image-root"));
    std::fs::create_dir_all(&root).unwrap();
    for (host, inside) in files {
        let dest = root.join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut magic = [0u8; 4];
        let elf = std::io::Read::read_exact(&mut std::fs::File::open(host).unwrap(), &mut magic)
            .is_ok()
            && magic == *b"\x7fELF";
        if !elf {
            std::fs::copy(host, &dest).unwrap();
            continue;
        }
        let out = std::process::Command::new("ldd")
            .arg(host)
            .output()
            .unwrap();
        // A static executable (kubectl, Go) loads nothing: ldd says so and fails.
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || text.contains("not a dynamic executable"),
            "ldd {host}: {out:?}"
        );
        for lib in text.split_whitespace().filter(|w| w.starts_with('/')) {
            let dest = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap();
        }
        let st = std::process::Command::new("objcopy")
            .arg("--strip-debug")
            .arg(host)
            .arg(&dest)
            .status()
            .unwrap();
        assert!(st.success(), "objcopy --strip-debug {host}");
    }
    let backend = env("REGCRED_TEST_REGISTRY_BACKEND");
    let repo = unique(repo);
    super::node_pull::append_tree(s, &root, &format!("quay.io/{repo}:1")).await;
    let target = format!("{backend}/quay.io/{repo}:1");
    let crane = env("REGCRED_TEST_CRANE");
    let mut mutate = vec!["mutate", "--insecure", &target, "-u", "65532:65532"];
    if !entrypoint.is_empty() {
        mutate.extend(["--entrypoint", entrypoint]);
    }
    mutate.extend(["-t", &target]);
    let out = tokio::process::Command::new(&crane)
        .args(&mutate)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "crane mutate: {out:?}");
    format!("quay.io/{repo}:1")
}

/// The refresher's image as the Dockerfile's runtime stage declares it: the binary at
/// /usr/local/bin/regcred-refresher (the entrypoint), user 65532.
pub(super) async fn refresher_image(s: &Scratch) -> String {
    push_layer_image(
        s,
        "regcred/refresher",
        &[
            (&bin(), "/usr/local/bin/regcred-refresher"),
            // distroless/cc-debian12's CA bundle, at its path: Google's token client loads it.
            (
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/ssl/certs/ca-certificates.crt",
            ),
        ],
        "/usr/local/bin/regcred-refresher",
    )
    .await
}

/// The `helm test` Pod's image (the chart's default is docker.io/curlimages/curl, which this
/// world cannot reach): this machine's curl, in the same registry.
async fn curl_image(s: &Scratch) -> String {
    let curl = ["/usr/bin/curl", "/bin/curl"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("curl on this machine");
    push_layer_image(s, "curlimages/curl", &[(curl, "/usr/bin/curl")], "").await
}

/// What a user creates before `helm install`: the release namespace (Pod Security
/// `restricted`, enforced), the pull secret for the refresher's own image (written by an
/// earlier run of ours from outside) and the registry password's Secret.
pub(super) async fn release_namespace(s: &Scratch) -> String {
    let ns = s
        .namespace(
            "chart-rel",
            &[("pod-security.kubernetes.io/enforce", "restricted")],
            &[],
        )
        .await;
    default_service_account(&s.client, &ns).await;
    let cfg = quay_config(s, &format!("{{ include: [{ns}] }}"));
    let r = run_bin(&["--once", "--config", &cfg], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let password = std::fs::read_to_string(env("REGCRED_TEST_QUAY_PASSWORD_FILE")).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "quay-password", "namespace": ns},
        "stringData": {"password": password},
    }))
    .unwrap();
    Api::<Secret>::namespaced(s.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    ns
}

/// The values a user writes: image, its pull secret, one static registry, one secret, targets.
fn values(s: &Scratch, image: &str, targets: &str, extra: &str) -> String {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let text = format!(
        "image: {{ repository: {repo}, tag: {tag:?} }}\nimagePullSecrets: [regcred]\nconfig:\n  registries:\n    - name: quay\n      static: {{ server: quay.io, username: {}, passwordSecretRef: {{ name: quay-password }} }}\n  secrets:\n    - name: regcred\n      registries: [quay]\n  namespaces:\n    include: [{targets:?}]\n{extra}",
        env("REGCRED_TEST_QUAY_USER")
    );
    s.file(&unique("values.yaml"), &text)
        .to_str()
        .unwrap()
        .to_string()
}

/// The release's pods (by the chart's instance label).
pub(super) async fn release_pods(s: &Scratch, ns: &str, release: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={release},app.kubernetes.io/name=regcred-refresher"
    ));
    Api::<Pod>::namespaced(s.client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
}

pub(super) fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits (up to `secs`) until the Deployment has `n` ready replicas of its current template
/// and exactly `n` pods, all Ready; fails with the pods' events and the ReplicaSet's story.
pub(super) async fn await_ready(
    s: &Scratch,
    ns: &str,
    release: &str,
    n: usize,
    secs: u64,
) -> Vec<Pod> {
    let deploy = Api::<Deployment>::namespaced(s.client.clone(), ns);
    let full = format!("{release}-regcred-refresher");
    let ok = wait_until(Duration::from_secs(secs), || async {
        let d = deploy.get(&full).await.unwrap();
        let st = d.status.unwrap_or_default();
        let pods = release_pods(s, ns, release).await;
        st.ready_replicas.unwrap_or(0) as usize == n
            && st.updated_replicas.unwrap_or(0) as usize == n
            && pods.len() == n
            && pods.iter().all(is_ready)
    })
    .await;
    if !ok {
        let mut story = Vec::new();
        for p in release_pods(s, ns, release).await {
            let name = p.metadata.name.clone().unwrap();
            story.push(format!("{name}: {:?}", events(s, ns, &name).await));
            let logs = Api::<Pod>::namespaced(s.client.clone(), ns)
                .logs(&name, &Default::default())
                .await
                .unwrap_or_default();
            story.push(format!("{name} logs: {logs}"));
        }
        let rs = kubectl(&[
            "-n",
            ns,
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=ReplicaSet",
        ])
        .await;
        panic!(
            "{n} ready pods of {full} never came in {secs} s:\n{}\n{rs}",
            story.join("\n")
        );
    }
    release_pods(s, ns, release).await
}

pub(super) async fn kubectl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("kubectl")
        .args(args)
        .output()
        .await
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(super) async fn await_secret(s: &Scratch, ns: &str, secs: u64) -> Secret {
    let ok = wait_until(Duration::from_secs(secs), || async {
        s.secret(ns, "regcred").await.is_some()
    })
    .await;
    assert!(ok, "no regcred in {ns} after {secs} s");
    let secret = s.secret(ns, "regcred").await.unwrap();
    assert_eq!(
        auths(&secret)["quay.io"]["username"],
        env("REGCRED_TEST_QUAY_USER"),
        "{ns}: the chart's static source"
    );
    secret
}

pub(super) async fn lease_holder(s: &Scratch, ns: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(s.client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|sp| sp.holder_identity)
}

/// A pod of the node's, with its memory working set and CPU read from its container's cgroup
/// (cgroup v1 under the node's cgroup root, or v2).
struct Cgroup {
    memory: PathBuf,
    cpu: PathBuf,
    v2: bool,
}

fn find_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if e.file_name().to_str() == Some(name) {
            return Some(p);
        }
        if let Some(found) = find_dir(&p, name) {
            return Some(found);
        }
    }
    None
}

fn container_cgroup(pod: &Pod) -> Cgroup {
    let id = pod
        .status
        .as_ref()
        .and_then(|st| st.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.clone())
        .expect("a running container");
    let id = id.rsplit("://").next().unwrap().to_string();
    let root =
        std::fs::read_to_string(Path::new(&env("REGCRED_TEST_NODE_DIR")).join("cgroup-root"))
            .unwrap()
            .trim()
            .to_string();
    // `ip netns exec` (how the world runs the tests) mounts a sysfs of the namespace's own on
    // /sys, without the cgroup mounts: read them as the node's mount namespace (its holder
    // process, in the world's `pids`) sees them.
    let pids = std::fs::read_to_string(format!("{}/pids", env("REGCRED_TEST_WORLD_DIR"))).unwrap();
    let holder = pids
        .lines()
        .find_map(|l| l.strip_prefix("node-holder "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("node-holder in the world's pids");
    let via_holder = format!("/proc/{holder}/root/sys/fs/cgroup");
    let fs = ["/sys/fs/cgroup", via_holder.as_str()]
        .into_iter()
        .find(|d| {
            Path::new(&format!("{d}/memory{root}")).is_dir()
                || Path::new(&format!("{d}{root}")).is_dir()
        })
        .unwrap_or_else(|| panic!("no cgroup hierarchy holds the node's root {root}"));
    let v1 = |ctl: &str| find_dir(&PathBuf::from(format!("{fs}/{ctl}{root}")), &id);
    if let (Some(memory), Some(cpu)) = (v1("memory"), v1("cpuacct").or_else(|| v1("cpu,cpuacct"))) {
        return Cgroup {
            memory,
            cpu,
            v2: false,
        };
    }
    let dir = find_dir(&PathBuf::from(format!("{fs}{root}")), &id).unwrap_or_else(|| {
        let listing = std::process::Command::new("find")
            .arg(format!("{fs}/memory{root}"))
            .args(["-maxdepth", "4", "-type", "d"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("no cgroup of container {id} under {root}:\n{listing}")
    });
    Cgroup {
        memory: dir.clone(),
        cpu: dir,
        v2: true,
    }
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

fn stat(p: &Path, key: &str) -> u64 {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

impl Cgroup {
    /// (usage, working set = usage - inactive file, peak), bytes.
    fn memory(&self) -> (u64, u64, u64) {
        if self.v2 {
            let usage = read_u64(&self.memory.join("memory.current"));
            let inactive = stat(&self.memory.join("memory.stat"), "inactive_file");
            let peak = std::fs::read_to_string(self.memory.join("memory.peak"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            (usage, usage.saturating_sub(inactive), peak)
        } else {
            let usage = read_u64(&self.memory.join("memory.usage_in_bytes"));
            let inactive = stat(&self.memory.join("memory.stat"), "total_inactive_file");
            let peak = read_u64(&self.memory.join("memory.max_usage_in_bytes"));
            (usage, usage.saturating_sub(inactive), peak)
        }
    }

    /// CPU time used so far.
    fn cpu(&self) -> Duration {
        if self.v2 {
            Duration::from_micros(stat(&self.cpu.join("cpu.stat"), "usage_usec"))
        } else {
            Duration::from_nanos(read_u64(&self.cpu.join("cpuacct.usage")))
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Prints the refresher container's memory and CPU (over `window`) beside the chart's defaults;
/// the working set must be under the default limit.
async fn figures(pod: &Pod, window: Duration) {
    let cg = container_cgroup(pod);
    let cpu0 = cg.cpu();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let milli = (cg.cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 1000.0;
    let (usage, ws, peak) = cg.memory();
    eprintln!(
        "chart_node figures: {}: memory working set {} (usage {}, peak {}) beside the chart's default request {} / limit {}; CPU {milli:.2} m idle over {window:?} (request {DEFAULT_REQUEST_CPU_MILLI} m), {:?} in all since start; cgroup {}",
        pod.metadata.name.as_deref().unwrap_or(""),
        mib(ws),
        mib(usage),
        mib(peak),
        mib(DEFAULT_REQUEST_MEMORY),
        mib(DEFAULT_LIMIT_MEMORY),
        cg.cpu(),
        cg.memory.display()
    );
    assert!(ws > 0 && ws < DEFAULT_LIMIT_MEMORY, "working set {ws}");
}

/// Deployment mode with the chart's defaults, end to end on the node:
/// - `helm install` (one replica, leader election on): the pod is admitted under Pod Security
///   `restricted` (a privileged pod is refused in the same namespace: the admission is on),
///   passes its startup/readiness probes, holds the Lease, writes the secret into each target
///   namespace, and a workload pod there pulls through the kubelet with it;
/// - `helm upgrade --set replicaCount=2 --set metrics.service.enabled=true` (the Service is
///   what `helm test` asks): two Ready pods, one Lease holder; the leader's pod deleted, the
///   other replica takes the Lease within the lease duration (15 s by default), the earlier
///   targets keep their secret, and a new target namespace gets its secret from the new leader
///   and its first pod pulls;
/// - `helm test`, once the two replicas are Ready (before the hand-overs): its Pod (curl on
///   /readyz through the Service) runs and succeeds, admitted under `restricted` too.
#[tokio::test]
async fn chart_deployment_on_the_node_with_defaults() {
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let prefix = unique("chart-tgt");
    let t1 = s.namespace(&prefix, &[], &[]).await;
    let t2 = s.namespace(&prefix, &[], &[]).await;
    for t in [&t1, &t2] {
        default_service_account(&s.client, t).await;
    }
    let (image, curl, workload) = tokio::join!(
        refresher_image(&s),
        curl_image(&s),
        push_image(&s, "quay.io")
    );
    let (curl_repo, curl_tag) = curl.rsplit_once(':').unwrap();
    let release = unique("rr");
    let full = format!("{release}-regcred-refresher");
    let vals = values(
        &s,
        &image,
        &format!("{prefix}-*"),
        &format!("helmTest:\n  image: {{ repository: {curl_repo}, tag: {curl_tag:?} }}\n"),
    );
    let _guard = Release {
        name: release.clone(),
        namespace: rel_ns.clone(),
        home: s.dir.join("helm"),
    };

    // helm install, the chart's defaults otherwise.
    let start = Instant::now();
    helm(
        &s,
        &["install", &release, CHART, "-n", &rel_ns, "-f", &vals],
    )
    .await;
    let installed = start.elapsed();
    let pods = await_ready(&s, &rel_ns, &release, 1, 120).await;
    let ready = start.elapsed();
    await_secret(&s, &t1, 60).await;
    let secret_at = start.elapsed();
    create_pod(&s, &t1, "first", &workload, &["regcred"]).await;
    let (o, _) = outcome(&s, &t1, "first").await;
    assert_eq!(o, Outcome::Running, "{:?}", events(&s, &t1, "first").await);
    let running = start.elapsed();
    eprintln!(
        "chart_node timing: helm install returned in {installed:?}; pod Ready at {ready:?}; secret in the target at {secret_at:?}; first workload pod Running at {running:?} (all from the start of helm install)"
    );
    await_secret(&s, &t2, 30).await;
    let ev = events(&s, &t1, "first").await.join("\n");
    assert!(!ev.contains("Failed"), "{ev}");

    // Admitted under `restricted`, which is enforced: a privileged pod in the same namespace
    // is refused by the API server.
    let ns_labels = kubectl(&["get", "ns", &rel_ns, "-o", "jsonpath={.metadata.labels}"]).await;
    assert!(
        ns_labels.contains("\"pod-security.kubernetes.io/enforce\":\"restricted\""),
        "{ns_labels}"
    );
    let bad: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": rel_ns},
        "spec": {"containers": [{"name": "c", "image": workload, "securityContext": {"privileged": true}}]},
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(s.client.clone(), &rel_ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &bad,
        )
        .await
        .expect_err("a privileged pod is refused under restricted");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "{refused}"
    );
    let leader = pods[0].metadata.name.clone().unwrap();
    assert_eq!(
        lease_holder(&s, &rel_ns, &full).await.as_deref(),
        Some(leader.as_str())
    );
    figures(&pods[0], Duration::from_secs(10)).await;

    // Two replicas (and the Service `helm test` needs); the leader's pod deleted.
    helm(
        &s,
        &[
            "upgrade",
            &release,
            CHART,
            "-n",
            &rel_ns,
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--set",
            "metrics.service.enabled=true",
        ],
    )
    .await;
    let pods = await_ready(&s, &rel_ns, &release, 2, 120).await;
    // helm test: its Pod asks the Service for /readyz, with both replicas Ready behind it.
    // (After the hand-overs below, in .ci/run of 43aaa8f, the one pod left behind the
    // Service did not answer within the test's minute of retries on a loaded node.)
    let t = Instant::now();
    let out = helm(&s, &["test", &release, "-n", &rel_ns, "--timeout", "3m"]).await;
    assert!(out.contains("Phase:") && out.contains("Succeeded"), "{out}");
    eprintln!(
        "chart_node helm test: passed in {:?}: {}",
        t.elapsed(),
        out.lines()
            .filter(|l| l.contains("TEST SUITE") || l.contains("Phase"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let leader = lease_holder(&s, &rel_ns, &full).await.expect("a holder");
    let follower = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| *n != leader)
        .expect("a follower");
    assert!(
        pods.iter()
            .any(|p| p.metadata.name.as_deref() == Some(leader.as_str())),
        "{leader} is one of the pods"
    );
    let deleted = Instant::now();
    Api::<Pod>::namespaced(s.client.clone(), &rel_ns)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    // Another replica takes the Lease: the follower, or the pod the ReplicaSet starts in the
    // deleted one's place if it is quicker (the deleted leader releases the Lease on SIGTERM).
    let took = wait_until(DEFAULT_LEASE_DURATION, || async {
        lease_holder(&s, &rel_ns, &full)
            .await
            .is_some_and(|h| !h.is_empty() && h != leader)
    })
    .await;
    let handover = deleted.elapsed();
    let holder = lease_holder(&s, &rel_ns, &full).await.unwrap_or_default();
    assert!(
        took,
        "no other replica took the Lease within {DEFAULT_LEASE_DURATION:?} of deleting {leader} (holder: {holder:?}; follower {follower})"
    );
    let live: Vec<String> = release_pods(&s, &rel_ns, &release)
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        live.contains(&holder),
        "{holder} is a live pod of the release: {live:?}"
    );
    let follower = if holder == follower {
        format!("{holder} (the follower)")
    } else {
        format!("{holder} (the ReplicaSet's new pod; the follower was {follower})")
    };
    eprintln!(
        "chart_node lease: {leader} deleted, {follower} holds the Lease after {handover:?} (lease duration {DEFAULT_LEASE_DURATION:?})"
    );
    let t3 = s.namespace(&prefix, &[], &[]).await;
    default_service_account(&s.client, &t3).await;
    let created = Instant::now();
    await_secret(&s, &t3, 30).await;
    eprintln!(
        "chart_node lease: new target {t3} got its secret {:?} after it was created",
        created.elapsed()
    );
    for t in [&t1, &t2] {
        await_secret(&s, t, 1).await;
    }
    create_pod(&s, &t3, "after-handover", &workload, &["regcred"]).await;
    let (o, _) = outcome(&s, &t3, "after-handover").await;
    assert_eq!(
        o,
        Outcome::Running,
        "{:?}",
        events(&s, &t3, "after-handover").await
    );
    // The Deployment replaced the deleted pod: two Ready again.
    let pods = await_ready(&s, &rel_ns, &release, 2, 120).await;

    // Again, with no new pod to race it: a ResourceQuota of one pod in the release namespace
    // (counted by the world's resourcequota controller; two pods already run, so any new one is
    // refused) keeps the ReplicaSet from replacing the leader: the follower alone must take the
    // Lease.
    let leader = lease_holder(&s, &rel_ns, &full).await.expect("a holder");
    let follower = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| *n != leader)
        .expect("a follower");
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "no-new-pods", "namespace": rel_ns},
        "spec": {"hard": {"pods": "1"}},
    }))
    .unwrap();
    let quotas =
        Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(s.client.clone(), &rel_ns);
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota admission reads quotas from a cache: wait until it refuses a (dry-run) pod.
    let probe: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "quota-probe", "namespace": rel_ns},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": workload, "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        },
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pods_api = Api::<Pod>::namespaced(s.client.clone(), &rel_ns);
    let refusing = wait_until(Duration::from_secs(30), || async {
        matches!(pods_api.create(&dry, &probe).await, Err(e) if e.to_string().contains("quota"))
    })
    .await;
    assert!(refusing, "the quota admission never refused a pod");
    let deleted = Instant::now();
    Api::<Pod>::namespaced(s.client.clone(), &rel_ns)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let took = wait_until(DEFAULT_LEASE_DURATION, || async {
        lease_holder(&s, &rel_ns, &full).await.as_deref() == Some(follower.as_str())
    })
    .await;
    let handover = deleted.elapsed();
    let holder = lease_holder(&s, &rel_ns, &full).await;
    let live: Vec<String> = release_pods(&s, &rel_ns, &release)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    quotas
        .delete("no-new-pods", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        live.iter().all(|n| *n == leader || *n == follower),
        "the quota let no new pod in: {live:?}"
    );
    assert!(
        took,
        "the follower {follower} did not take the Lease within {DEFAULT_LEASE_DURATION:?} of deleting {leader} (holder {holder:?}, pods {live:?})"
    );
    eprintln!(
        "chart_node lease: {leader} deleted with no replacement allowed, the follower {follower} holds the Lease after {handover:?} (lease duration {DEFAULT_LEASE_DURATION:?})"
    );
    let t4 = s.namespace(&prefix, &[], &[]).await;
    let created = Instant::now();
    await_secret(&s, &t4, 30).await;
    eprintln!(
        "chart_node lease: new target {t4} got its secret from the follower {:?} after it was created",
        created.elapsed()
    );
    for t in [&t1, &t2, &t3] {
        await_secret(&s, t, 1).await;
    }
}

/// Cronjob mode, the chart's defaults otherwise: `helm install` waits for the post-install
/// hook Job, whose pod (admitted under `restricted`) runs `--once` to completion; when the
/// install returns, the target has its secret and a workload pod pulls with it; the CronJob
/// is there on the default schedule.
#[tokio::test]
async fn chart_cronjob_install_hook_runs_once_on_the_node() {
    let s = Scratch::new().await;
    let rel_ns = release_namespace(&s).await;
    let prefix = unique("chart-cj");
    let t1 = s.namespace(&prefix, &[], &[]).await;
    default_service_account(&s.client, &t1).await;
    let (image, workload) = tokio::join!(refresher_image(&s), push_image(&s, "quay.io"));
    let release = unique("rc");
    let full = format!("{release}-regcred-refresher");
    let vals = values(&s, &image, &format!("{prefix}-*"), "mode: cronjob\n");
    let _guard = Release {
        name: release.clone(),
        namespace: rel_ns.clone(),
        home: s.dir.join("helm"),
    };
    let job_name = format!("{full}-initial");
    let start = Instant::now();
    // Helm waits for the hook Job and deletes it once it has succeeded (hook-delete-policy):
    // what is left to read are its Events and the release's hooks.
    let out = helm(
        &s,
        &[
            "install",
            &release,
            CHART,
            "-n",
            &rel_ns,
            "-f",
            &vals,
            "--timeout",
            "4m",
        ],
    )
    .await;
    let installed = start.elapsed();
    let ev = kubectl(&[
        "-n",
        &rel_ns,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={job_name}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
    .await;
    assert!(
        ev.contains("Completed"),
        "the hook Job completed: {ev}\n{out}"
    );
    eprintln!(
        "chart_node cronjob: helm install (waiting for the hook Job) returned in {installed:?}; the Job's events: {}",
        ev.trim().replace('\n', "; ")
    );
    let hooks = helm(&s, &["get", "hooks", &release, "-n", &rel_ns]).await;
    assert!(
        hooks.contains("helm.sh/hook: post-install,post-upgrade")
            && hooks.contains("name: REGCRED_ONCE\n              value: \"true\""),
        "the hook Job runs --once: {hooks}"
    );
    await_secret(&s, &t1, 1).await;
    let cj = kubectl(&[
        "-n",
        &rel_ns,
        "get",
        "cronjob",
        &full,
        "-o",
        "jsonpath={.spec.schedule}",
    ])
    .await;
    assert_eq!(cj, "0 * * * *");
    create_pod(&s, &t1, "first", &workload, &["regcred"]).await;
    let (o, _) = outcome(&s, &t1, "first").await;
    assert_eq!(o, Outcome::Running, "{:?}", events(&s, &t1, "first").await);
    eprintln!(
        "chart_node cronjob: first workload pod Running {:?} after helm install started",
        start.elapsed()
    );
}
