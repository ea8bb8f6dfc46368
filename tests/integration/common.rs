//! The test world as the tests see it: clients, scratch namespaces that clean up after
//! themselves, impersonated identities, and a runner for the real binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests with `make test`, which starts the test world")
    })
}

/// A short random suffix for names (no extra crate: hash of time, pid and a counter).
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{prefix}-{:08x}", h.finish() as u32)
}

pub async fn client_from(path: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("client")
}

pub async fn admin() -> kube::Client {
    client_from(Path::new(&env("REGCRED_TEST_KUBECONFIG"))).await
}

/// Scratch space for one test: a temp dir and namespaces, all removed on drop (also on panic).
pub struct Scratch {
    pub dir: PathBuf,
    pub client: kube::Client,
    namespaces: std::sync::Mutex<Vec<String>>,
    cluster_objects: std::sync::Mutex<Vec<(String, String)>>,
}

impl Scratch {
    pub async fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("regcred-test"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            client: admin().await,
            namespaces: Default::default(),
            cluster_objects: Default::default(),
        }
    }

    /// Creates a namespace with a random name starting with `prefix`.
    pub async fn namespace(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> String {
        let name = unique(prefix);
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        self.namespaces.lock().unwrap().push(name.clone());
        name
    }

    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A kubeconfig that impersonates `user` through the admin identity, so each test can
    /// grant exactly the rights it wants to a user of its own.
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let mut kc = Kubeconfig::read_from(env("REGCRED_TEST_KUBECONFIG")).unwrap();
        for a in &mut kc.auth_infos {
            if let Some(info) = a.auth_info.as_mut() {
                info.impersonate = Some(user.to_string());
            }
        }
        let p = self.dir.join(format!("kubeconfig-{user}"));
        std::fs::write(&p, serde_json::to_string(&kc).unwrap()).unwrap();
        p
    }

    /// Grants `user` the given rules cluster-wide (for namespaces) and in `namespaces`.
    pub async fn grant(
        &self,
        user: &str,
        cluster_rules: Vec<PolicyRule>,
        namespaces: &[&str],
        rules: Vec<PolicyRule>,
    ) {
        let subject = Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        };
        let name = user.to_string();
        if !cluster_rules.is_empty() {
            let cr = ClusterRole {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                rules: Some(cluster_rules),
                ..Default::default()
            };
            Api::<ClusterRole>::all(self.client.clone())
                .create(&PostParams::default(), &cr)
                .await
                .unwrap();
            let crb = ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: name.clone(),
                },
                subjects: Some(vec![subject.clone()]),
            };
            Api::<ClusterRoleBinding>::all(self.client.clone())
                .create(&PostParams::default(), &crb)
                .await
                .unwrap();
            let mut objs = self.cluster_objects.lock().unwrap();
            objs.push(("clusterrole".into(), name.clone()));
            objs.push(("clusterrolebinding".into(), name.clone()));
        }
        for ns in namespaces {
            let role = Role {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                rules: Some(rules.clone()),
            };
            Api::<Role>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), &role)
                .await
                .unwrap();
            let rb = RoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: name.clone(),
                },
                subjects: Some(vec![subject.clone()]),
            };
            Api::<RoleBinding>::namespaced(self.client.clone(), ns)
                .create(&PostParams::default(), &rb)
                .await
                .unwrap();
        }
    }

    pub async fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    /// Whether `name` exists in every one of `namespaces` within `secs`.
    pub async fn secrets_appear(&self, namespaces: &[String], name: &str, secs: u64) -> bool {
        wait_until(std::time::Duration::from_secs(secs), || async {
            for ns in namespaces {
                if self.secret(ns, name).await.is_none() {
                    return false;
                }
            }
            true
        })
        .await
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The world's kube-controller-manager finalizes them a few seconds later; no need to
        // wait: a terminating namespace is already out of every refresher's targets.
        let kubeconfig = env("REGCRED_TEST_KUBECONFIG");
        let mut args: Vec<String> = vec![
            "delete".into(),
            "--wait=false".into(),
            "--ignore-not-found".into(),
        ];
        let namespaces = self
            .namespaces
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        if !namespaces.is_empty() {
            let mut a = args.clone();
            a.push("namespace".into());
            a.extend(namespaces);
            let _ = std::process::Command::new("kubectl")
                .env("KUBECONFIG", &kubeconfig)
                .args(&a)
                .output();
        }
        let objs = self
            .cluster_objects
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        for (kind, name) in &objs {
            args.truncate(3);
            args.extend([kind.clone(), name.clone()]);
            let _ = std::process::Command::new("kubectl")
                .env("KUBECONFIG", &kubeconfig)
                .args(&args)
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        ..Default::default()
    }
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The binary under test: this build's, or `REGCRED_TEST_BIN` (to show that a test fails on
/// an older build).
pub fn bin() -> String {
    std::env::var("REGCRED_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_regcred-refresher").to_string())
}

/// Runs the real binary with the world's environment plus `envs`.
pub async fn run_bin(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env("REGCRED_LOG", "info,regcred_refresher=debug");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("binary timed out")
        .expect("binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `.dockerconfigjson` of a secret, parsed.
pub fn auths(secret: &Secret) -> serde_json::Value {
    let bytes = &secret.data.as_ref().unwrap()[".dockerconfigjson"].0;
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v["auths"].clone()
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn rv(secret: &Secret) -> String {
    secret.metadata.resource_version.clone().unwrap()
}

/// A running daemon: killed on drop; its log goes to a file in the scratch dir.
pub struct DaemonProc {
    pub child: tokio::process::Child,
    pub admin: std::net::SocketAddr,
    pub log: PathBuf,
}

pub fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl DaemonProc {
    pub async fn start(s: &Scratch, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let admin = free_port();
        Self::start_listening(s, args, envs, &admin.to_string(), admin).await
    }

    /// `listen` is the `--admin-addr` given; `admin` where the test reaches it.
    pub async fn start_listening(
        s: &Scratch,
        args: &[&str],
        envs: &[(&str, &str)],
        listen: &str,
        admin: std::net::SocketAddr,
    ) -> Self {
        let log = s.dir.join(unique("daemon.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(args)
            .args(["--admin-addr", listen])
            .env("REGCRED_LOG", "info,regcred_refresher=debug")
            // The default hourly refresh would add a pass to any test that runs across :00;
            // tests of a schedule set their own.
            .env("REGCRED_SCHEDULE", "0 0 1 1 *")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("daemon starts");
        let d = Self { child, admin, log };
        let ok = wait_until(std::time::Duration::from_secs(20), || async {
            d.get("/healthz").await.is_some()
        })
        .await;
        assert!(ok, "admin server never answered: {}", d.logs());
        d
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (status, body) of a GET on the admin server, or None when it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = String::new();
        conn.read_to_string(&mut buf).await.ok()?;
        let status = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    }

    /// Whether the metric `series` reaches `at_least` within `secs` seconds.
    pub async fn metric_reaches(&self, series: &str, at_least: f64, secs: u64) -> bool {
        wait_until(std::time::Duration::from_secs(secs), || async {
            self.metric(series).await.unwrap_or(0.0) >= at_least
        })
        .await
    }

    /// The value of one metric line (exact name and labels as rendered).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
    }
}

pub async fn wait_until<F, Fut>(timeout: std::time::Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// POSTs a control document to the Google token fixture.
pub async fn fixture_control(body: &serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = super::link::Link::parse(&env("REGCRED_TEST_GOOGLE_FIXTURE_URL"));
    let body = body.to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /control HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "fixture control: {out}"
    );
}

/// The world's Google service-account key with its `token_uri` at `base_url` (a proxy or a
/// link in front of the fixture), which the fixture is told to accept as an audience.
pub async fn google_key_via(s: &Scratch, base_url: &str) -> PathBuf {
    let mut key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env("REGCRED_TEST_GOOGLE_KEY_FILE")).unwrap(),
    )
    .unwrap();
    let uri = format!("{base_url}/token");
    key["token_uri"] = uri.clone().into();
    fixture_control(&serde_json::json!({ "accept_audience": uri })).await;
    s.file(&unique("key.json"), &key.to_string())
}

/// `kubeconfig` with every cluster's server swapped for `server` (a proxy or a link).
pub fn kubeconfig_via(s: &Scratch, kubeconfig: &Path, server: &str) -> PathBuf {
    let mut kc = serde_json::to_value(Kubeconfig::read_from(kubeconfig).unwrap()).unwrap();
    for c in kc["clusters"].as_array_mut().unwrap() {
        c["cluster"]["server"] = server.into();
    }
    s.file(&unique("kubeconfig-via"), &kc.to_string())
}

/// Like `run_bin`, without the world's variables named in `unset` (e.g. its static AWS keys,
/// to reach the SDKs' keyless sources).
pub async fn run_bin_without(args: &[&str], unset: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env("REGCRED_LOG", "info,regcred_refresher=debug");
    for k in unset {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("binary timed out")
        .expect("binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `default` ServiceAccount of `ns`. kube-controller-manager creates it a moment after
/// the namespace, as in any cluster: a test never creates it (that races the controller), it
/// waits for it here (up to 30 s).
pub async fn default_service_account(
    client: &kube::Client,
    ns: &str,
) -> k8s_openapi::api::core::v1::ServiceAccount {
    let api = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(sa) = api.get_opt("default").await.unwrap() {
            return sa;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kube-controller-manager never created the default ServiceAccount in {ns}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A request to the cloud fixture's control API at `REGCRED_TEST_ECR_FIXTURE_URL/_fixture/`:
/// `("GET", "stats", Null)` or `("POST", "control", {...})`. Panics unless it answers 200.
pub async fn cloud_fixture(
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let (status, doc) = fixture_request(
        &env("REGCRED_TEST_ECR_FIXTURE_URL"),
        method,
        &format!("/_fixture/{path}"),
        body,
    )
    .await;
    assert_eq!(status, 200, "cloud fixture {path}: {doc}");
    doc
}

/// One plain-HTTP request with a JSON body to a fixture's control listener at `base`
/// (`http://127.0.0.1:PORT`): the status and the JSON answer.
pub async fn fixture_request(
    base: &str,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = super::link::Link::parse(base);
    let body = if method == "GET" {
        String::new()
    } else {
        body.to_string()
    };
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{base}{path}: not HTTP: {out}"));
    let doc = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, doc)
}

/// Daemon flags for tests with lifetimes of seconds: renew at half the lifetime, at most once
/// a second, retry within 2 s.
pub const FAST_RENEWAL: [&str; 6] = [
    "--refresh-margin",
    "0.5",
    "--min-refresh-interval",
    "1",
    "--max-backoff",
    "2",
];

impl DaemonProc {
    /// Waits up to `secs` for `ns/name` to exist (`present`) or to be gone; fails with the
    /// daemon's log otherwise.
    pub async fn await_secret(&self, s: &Scratch, ns: &str, name: &str, present: bool, secs: u64) {
        let ok = wait_until(std::time::Duration::from_secs(secs), || async {
            s.secret(ns, name).await.is_some() == present
        })
        .await;
        assert!(
            ok,
            "{ns}/{name} present={present} never came: {}",
            self.logs()
        );
    }

    /// Watches `ns/regcred` for `secs` while the daemon renews short-lived credentials: every
    /// version seen must hold an unexpired credential (by its expires-at annotation), and at
    /// least two must differ. The passwords `password` read from them, in order of first sight.
    pub async fn renewals(
        &self,
        s: &Scratch,
        ns: &str,
        secs: u64,
        password: impl Fn(&Secret) -> String,
    ) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        while tokio::time::Instant::now() < until {
            if let Some(secret) = s.secret(ns, "regcred").await {
                let ann = secret.metadata.annotations.clone().unwrap_or_default();
                let expires_at =
                    chrono::DateTime::parse_from_rfc3339(&ann["regcred-refresher.io/expires-at"])
                        .unwrap();
                assert!(
                    expires_at > chrono::Utc::now() - chrono::Duration::seconds(1),
                    "the secret holds an expired token: {}",
                    self.logs()
                );
                let pw = password(&secret);
                if !seen.contains(&pw) {
                    seen.push(pw);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert!(
            seen.len() >= 2,
            "renewed before expiry: {} token(s)\n{}",
            seen.len(),
            self.logs()
        );
        seen
    }
}

/// `text` (a run's stderr, a daemon's log) says each of `phrases`.
pub fn assert_says(text: &str, phrases: &[&str]) {
    for phrase in phrases {
        assert!(text.contains(phrase), "{phrase:?} missing: {text}");
    }
}

/// A configuration with one static source (quay.io, user `bot`, password from `pw`) in one
/// secret `regcred`, for the namespaces given as YAML (`{ include: [a] }`).
pub fn static_cfg(pw: &Path, namespaces: &str) -> String {
    format!(
        "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {pw:?} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {namespaces}\n"
    )
}
