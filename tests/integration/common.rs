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
    namespaces: Vec<String>,
    cluster_objects: Vec<(String, String)>,
}

impl Scratch {
    pub async fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("regcred-test"));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            client: admin().await,
            namespaces: Vec::new(),
            cluster_objects: Vec::new(),
        }
    }

    /// Creates a namespace with a random name starting with `prefix`.
    pub async fn namespace(
        &mut self,
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
        self.namespaces.push(name.clone());
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
        &mut self,
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
            self.cluster_objects
                .push(("clusterrole".into(), name.clone()));
            self.cluster_objects
                .push(("clusterrolebinding".into(), name.clone()));
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
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Namespaces only finish terminating with a controller-manager, which the test world
        // does not run; deleting them still takes them out of every refresher's targets.
        let kubeconfig = env("REGCRED_TEST_KUBECONFIG");
        let mut args: Vec<String> = vec![
            "delete".into(),
            "--wait=false".into(),
            "--ignore-not-found".into(),
        ];
        if !self.namespaces.is_empty() {
            let mut a = args.clone();
            a.push("namespace".into());
            a.extend(self.namespaces.iter().cloned());
            let _ = std::process::Command::new("kubectl")
                .env("KUBECONFIG", &kubeconfig)
                .args(&a)
                .output();
        }
        for (kind, name) in &self.cluster_objects {
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

/// Runs the real binary with the world's environment plus `envs`.
pub async fn run_bin(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcred-refresher"));
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
