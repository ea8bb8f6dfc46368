//! Pull proof: the secrets we write really let a pull through (tests/testenv/PULLPROOF.md).
//!
//! - The kubelet's own keyring code (`keyring`, a Go tool around k8s.io/kubernetes
//!   `pkg/credentialprovider/secrets`, called as the kubelet's image manager calls it) reads
//!   our secrets from the API server and must pick, for each image, exactly the credential the
//!   provider produced: ECR, ECR Public, Artifact Registry, gcr.io, Docker Hub (short names
//!   too), quay.io, and none for a registry we hold nothing for.
//! - A real registry (distribution 2.8 from Debian, htpasswd basic auth with bcrypt, plain
//!   HTTP on 127.0.0.1 of the world) serves a pull to `crane` whose `config.json` is our
//!   secret's `.dockerconfigjson` byte for byte, and refuses one with a wrong password.
//!
//! The tools come from `tests/testenv/build-pullproof.sh` (built by `make test-deps`); a test
//! finds them through `REGCRED_TEST_PULLPROOF_BIN` or, unset, by asking that script
//! (`--no-build`: cached, instant, never builds inside the world).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::*;

/// The directory holding `keyring`, `crane` and `registry`.
fn tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("REGCRED_TEST_PULLPROOF_BIN") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testenv/build-pullproof.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("--no-build")
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{} --no-build: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(stdout.lines().last().expect("bin dir").trim())
    })
}

async fn output(cmd: &mut tokio::process::Command) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command timed out")
        .expect("command runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the kubelet would hand the runtime for each image, with the pod's
/// `imagePullSecrets` = `secrets` (read from the API server, in this order).
pub(super) async fn keyring(ns: &str, secrets: &[&str], images: &[&str]) -> Vec<Value> {
    let mut cmd = tokio::process::Command::new(tools().join("keyring"));
    cmd.env("KUBECONFIG", env("REGCRED_TEST_KUBECONFIG"))
        .args(["-namespace", ns]);
    for s in secrets {
        cmd.args(["-secret", s]);
    }
    cmd.args(images);
    let r = output(&mut cmd).await;
    assert_eq!(r.code, 0, "keyring: {r:?}");
    let v: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v.len(), images.len(), "{}", r.stdout);
    v
}

fn result<'a>(results: &'a [Value], image: &str) -> &'a Value {
    let r = results
        .iter()
        .find(|r| r["image"] == image)
        .unwrap_or_else(|| panic!("{image} not in {results:?}"));
    assert!(r.get("error").is_none(), "{r}");
    r
}

/// The kubelet hands exactly one credential for `image`: the `key` entry of `ns/secret`
/// (`entry`, as read back from the API server).
pub(super) fn assert_served(
    results: &[Value],
    image: &str,
    ns: &str,
    secret: &str,
    key: &str,
    entry: &Value,
) {
    let r = result(results, image);
    let from = format!("{ns}/{secret}");
    assert_eq!(r["found"], true, "{image}: {r}");
    assert_eq!(
        r["credentials"],
        json!([{
            "username": entry["username"],
            "password": entry["password"],
            "secret": from,
        }]),
        "{image}: the kubelet's credential is not the {key} entry of {from}"
    );
    assert_eq!(r["keys"], json!([{"secret": from, "key": key}]), "{image}");
}

pub(super) fn assert_none(results: &[Value], image: &str) {
    let r = result(results, image);
    assert_eq!(r["found"], false, "{image}: {r}");
    assert_eq!(r["credentials"], json!([]), "{image}: {r}");
}

#[tokio::test]
async fn the_kubelet_keyring_picks_each_providers_credential_from_our_secrets() {
    let s = Scratch::new().await;
    let ns = s.namespace("pullproof", &[], &[]).await;
    let hub_pw = unique("hub:pw");
    let hub_pw_file = s.file("hub-pw", &format!("{hub_pw}\n"));
    let quay_pw = unique("quay@pw");
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:
  - name: ecr
    ecr: {{ region: us-east-1 }}
  - name: gar
    google: {{ hosts: [us-docker.pkg.dev, gcr.io], keyFile: {key} }}
  - name: hub
    static: {{ server: \"https://index.docker.io/v1/\", username: hub-bot, passwordFile: {hub} }}
  - name: quay
    static: {{ server: quay.io, username: quay-bot, passwordEnv: QUAY_PW }}
secrets:
  - name: cloud
    registries: [ecr, gar]
  - name: static
    registries: [hub, quay]
namespaces: {{ include: [{ns}] }}
",
            key = env("REGCRED_TEST_GOOGLE_KEY_FILE"),
            hub = hub_pw_file.display(),
        ),
    );
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[("QUAY_PW", &quay_pw)],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");

    // What the providers produced, as the API server holds it.
    let cloud = auths(&s.secret(&ns, "cloud").await.unwrap());
    let statics = auths(&s.secret(&ns, "static").await.unwrap());
    let acct = env("REGCRED_TEST_AWS_ACCOUNT_ID");
    let ecr_host = format!("{acct}.dkr.ecr.us-east-1.amazonaws.com");
    let hub_key = "https://index.docker.io/v1/";
    assert_eq!(cloud[&ecr_host]["username"], "AWS", "{cloud}");
    assert!(
        cloud[&ecr_host]["password"].as_str().unwrap().len() > 20,
        "{cloud}"
    );
    for host in ["us-docker.pkg.dev", "gcr.io"] {
        assert_eq!(cloud[host]["username"], "oauth2accesstoken", "{cloud}");
        assert!(
            cloud[host]["password"]
                .as_str()
                .unwrap()
                .starts_with("ya29."),
            "{cloud}"
        );
    }
    assert_ne!(cloud[&ecr_host]["password"], cloud["gcr.io"]["password"]);
    assert_eq!(statics[hub_key]["username"], "hub-bot");
    assert_eq!(statics[hub_key]["password"], hub_pw.as_str());
    assert_eq!(statics["quay.io"]["username"], "quay-bot");
    assert_eq!(statics["quay.io"]["password"], quay_pw.as_str());

    let ecr_image = format!("{ecr_host}/app:1");
    let other_region = format!("{acct}.dkr.ecr.eu-west-1.amazonaws.com/app:1");
    let images = [
        ecr_image.as_str(),
        "us-docker.pkg.dev/p/r/img:1",
        "gcr.io/p/img",
        "nginx",
        "docker.io/library/x",
        "myorg/app:1",
        "quay.io/org/img",
        // Nothing of ours serves these: another ECR region (a token is per region), a gcr.io
        // host we were not configured for, unrelated registries.
        other_region.as_str(),
        "eu.gcr.io/p/img",
        "ghcr.io/org/img:1",
        "registry.example.com/team/app:1",
    ];
    let results = keyring(&ns, &["cloud", "static"], &images).await;
    assert_served(
        &results,
        &ecr_image,
        &ns,
        "cloud",
        &ecr_host,
        &cloud[&ecr_host],
    );
    for (image, host) in [
        ("us-docker.pkg.dev/p/r/img:1", "us-docker.pkg.dev"),
        ("gcr.io/p/img", "gcr.io"),
    ] {
        assert_served(&results, image, &ns, "cloud", host, &cloud[host]);
    }
    for image in ["nginx", "docker.io/library/x", "myorg/app:1"] {
        assert_served(&results, image, &ns, "static", hub_key, &statics[hub_key]);
    }
    assert_served(
        &results,
        "quay.io/org/img",
        &ns,
        "static",
        "quay.io",
        &statics["quay.io"],
    );
    assert_eq!(result(&results, "nginx")["repo"], "docker.io/library/nginx");
    for image in &images[7..] {
        assert_none(&results, image);
    }
}

/// ECR Public's one host serves every alias and repository under it, and nothing else: not
/// a private ECR registry (another service, another token), not the gallery's web host.
#[tokio::test]
async fn the_kubelet_keyring_serves_public_ecr_aws_images_from_the_ecr_public_token() {
    let s = Scratch::new().await;
    let ns = s.namespace("pullpub", &[], &[]).await;
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: pub\n    ecrPublic: {{}}\nsecrets:\n  - name: public\n    registries: [pub]\nnamespaces: {{ include: [{ns}] }}\n"
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let public = auths(&s.secret(&ns, "public").await.unwrap());
    let key = "public.ecr.aws";
    assert_eq!(public[key]["username"], "AWS", "{public}");
    assert!(
        public[key]["password"].as_str().unwrap().len() > 20,
        "{public}"
    );
    let private_ecr = format!(
        "{}.dkr.ecr.us-east-1.amazonaws.com/app:1",
        env("REGCRED_TEST_AWS_ACCOUNT_ID")
    );
    let images = [
        "public.ecr.aws/my-alias/app:1",
        "public.ecr.aws/docker/library/nginx:latest",
        private_ecr.as_str(),
        "gallery.ecr.aws/my-alias/app:1",
    ];
    let results = keyring(&ns, &["public"], &images).await;
    for image in &images[..2] {
        assert_served(&results, image, &ns, "public", key, &public[key]);
    }
    for image in &images[2..] {
        assert_none(&results, image);
    }
}

/// Each spelling of Docker Hub our config takes as its own (`docker.io`, `index.docker.io`,
/// the legacy `https://index.docker.io/v1/`) serves official and user images by short name.
#[tokio::test]
async fn every_docker_hub_spelling_serves_docker_hub_images() {
    let s = Scratch::new().await;
    let ns = s.namespace("pullhub", &[], &[]).await;
    let spellings = [
        ("hub-legacy", "https://index.docker.io/v1/"),
        ("hub-short", "docker.io"),
        ("hub-index", "index.docker.io"),
    ];
    let mut cfg = String::from("registries:\n");
    for (name, server) in spellings {
        cfg += &format!(
            "  - name: {name}\n    static: {{ server: \"{server}\", username: {name}-bot, passwordEnv: PW_{} }}\n",
            name.replace('-', "_").to_uppercase()
        );
    }
    cfg += "secrets:\n";
    for (name, _) in spellings {
        cfg += &format!("  - name: {name}\n    registries: [{name}]\n");
    }
    cfg += &format!("namespaces: {{ include: [{ns}] }}\n");
    let cfg = s.file("c.yaml", &cfg);
    let passwords: Vec<(String, String)> = spellings
        .iter()
        .map(|(name, _)| {
            (
                format!("PW_{}", name.replace('-', "_").to_uppercase()),
                unique(name),
            )
        })
        .collect();
    let envs: Vec<(&str, &str)> = passwords
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &envs).await;
    assert_eq!(r.code, 0, "{r:?}");

    let images = [
        "nginx",
        "nginx:1.27",
        "library/nginx",
        "docker.io/library/x",
        "index.docker.io/library/x",
        "myorg/app:1",
        "docker.io/myorg/app:1",
        "quay.io/org/img",
    ];
    for ((name, server), (_, password)) in spellings.iter().zip(&passwords) {
        let a = auths(&s.secret(&ns, name).await.unwrap());
        assert_eq!(a[server]["password"], password.as_str(), "{a}");
        assert_eq!(a[server]["username"], format!("{name}-bot"), "{a}");
        let results = keyring(&ns, &[name], &images).await;
        for image in &images[..7] {
            assert_served(&results, image, &ns, name, server, &a[server]);
        }
        assert_none(&results, "quay.io/org/img");
    }
}

/// A distribution registry on a free port of the world's loopback, htpasswd (bcrypt) basic
/// auth, plain HTTP (crane talks HTTP to 127.0.0.1 and sends basic auth over it); killed on
/// drop.
struct Registry {
    _child: tokio::process::Child,
    host: String,
    dir: PathBuf,
}

impl Registry {
    async fn start(s: &Scratch, users: &[(&str, &str)]) -> Self {
        let dir = s.dir.join(unique("registry"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // bcrypt as `htpasswd -B` writes it (cost 5), users and passwords on stdin.
        let mut py = std::process::Command::new(env("REGCRED_TEST_PYTHON"))
            .args([
                "-c",
                "import bcrypt, sys\nfor line in sys.stdin.read().splitlines():\n    u, p = line.split('\\t', 1)\n    print(u + ':' + bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode())",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("venv python runs");
        {
            use std::io::Write;
            let mut stdin = py.stdin.take().unwrap();
            for (u, p) in users {
                writeln!(stdin, "{u}\t{p}").unwrap();
            }
        }
        let out = py.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, &out.stdout).unwrap();

        let addr = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: regcred-pullproof\n    path: {}\n",
                dir.join("data").display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        let started = Instant::now();
        let child = tokio::process::Command::new(tools().join("registry"))
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::fs::File::create(dir.join("registry.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("registry starts");
        let reg = Self {
            _child: child,
            host: addr.to_string(),
            dir,
        };
        // Up when /v2/ asks for credentials.
        let ok = wait_until(Duration::from_secs(20), || async {
            http_status(addr, "/v2/").await == Some(401)
        })
        .await;
        assert!(ok, "registry never answered 401 on /v2/: {}", reg.logs());
        eprintln!("registry at {addr} ready in {:?}", started.elapsed());
        reg
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = String::new();
    conn.read_to_string(&mut buf).await.ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// crane with `DOCKER_CONFIG` = a folder whose `config.json` is `docker_config`.
async fn crane(s: &Scratch, docker_config: &[u8], args: &[&str]) -> Run {
    let dir = s.dir.join(unique("docker-config"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), docker_config).unwrap();
    output(
        tokio::process::Command::new(tools().join("crane"))
            .args(args)
            .env("DOCKER_CONFIG", &dir)
            .current_dir(&s.dir),
    )
    .await
}

#[tokio::test]
async fn a_real_registry_serves_a_pull_with_our_secret_and_refuses_a_wrong_password() {
    let s = Scratch::new().await;
    let ns = s.namespace("pullreg", &[], &[]).await;
    let admin_pw = unique("admin-pw");
    let pull_pw = unique("pull:pw");
    let reg = Registry::start(&s, &[("admin", &admin_pw), ("puller", &pull_pw)]).await;
    let host = reg.host.clone();
    let image = format!("{host}/proof/app:1");

    // Push a one-layer image from scratch as admin (test setup, not under test).
    let payload = unique("pulled-through-our-secret");
    let layer_dir = s.dir.join("layer");
    std::fs::create_dir_all(&layer_dir).unwrap();
    std::fs::write(layer_dir.join("proof.txt"), &payload).unwrap();
    let layer = s.dir.join("layer.tar");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layer_dir)
        .arg("-cf")
        .arg(&layer)
        .arg("proof.txt")
        .status()
        .unwrap();
    assert!(tar.success());
    let admin_cfg =
        json!({"auths": {&host: {"auth": b64(&format!("admin:{admin_pw}"))}}}).to_string();
    let push = crane(
        &s,
        admin_cfg.as_bytes(),
        &["append", "-f", layer.to_str().unwrap(), "-t", &image],
    )
    .await;
    assert_eq!(push.code, 0, "push: {push:?}");
    let pushed_digest = push.stdout.trim().rsplit('@').next().unwrap().to_string();
    assert!(pushed_digest.starts_with("sha256:"), "{push:?}");

    // Our secrets for that registry: the pull user's password, and a wrong one.
    let good = s.file("good", &pull_pw);
    let bad = s.file("bad", &format!("{pull_pw}-wrong"));
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:
  - name: reg
    static: {{ server: \"{host}\", username: puller, passwordFile: {} }}
  - name: reg-wrong
    static: {{ server: \"{host}\", username: puller, passwordFile: {} }}
secrets:
  - name: pull
    registries: [reg]
  - name: wrong
    registries: [reg-wrong]
namespaces: {{ include: [{ns}] }}
",
            good.display(),
            bad.display()
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let dockerconfig = |secret: k8s_openapi::api::core::v1::Secret| {
        secret.data.unwrap()[".dockerconfigjson"].0.clone()
    };
    let pull_secret = s.secret(&ns, "pull").await.unwrap();
    let pull_auths = auths(&pull_secret);
    let pull_doc = dockerconfig(pull_secret);
    let wrong_doc = dockerconfig(s.secret(&ns, "wrong").await.unwrap());

    // The kubelet would hand the runtime the pull user's credential for this image.
    let results = keyring(&ns, &["pull"], &[&image]).await;
    assert_served(&results, &image, &ns, "pull", &host, &pull_auths[&host]);

    // A pull with our secret as the runtime's config.json: the manifest we pushed, and the
    // layer's content.
    let digest = crane(&s, &pull_doc, &["digest", &image]).await;
    assert_eq!(digest.code, 0, "{digest:?}\n{}", reg.logs());
    assert_eq!(digest.stdout.trim(), pushed_digest);
    let fs_tar = s.dir.join("fs.tar");
    let export = crane(&s, &pull_doc, &["export", &image, fs_tar.to_str().unwrap()]).await;
    assert_eq!(export.code, 0, "{export:?}");
    let content = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&fs_tar)
        .arg("proof.txt")
        .output()
        .unwrap();
    assert!(content.status.success(), "{content:?}");
    assert_eq!(String::from_utf8_lossy(&content.stdout), payload);

    // A wrong password: the registry refuses, crane fails with 401.
    for args in [
        vec!["manifest", image.as_str()],
        vec!["export", image.as_str(), "-"],
    ] {
        let denied = crane(&s, &wrong_doc, &args).await;
        assert_ne!(denied.code, 0, "{args:?}: {denied:?}");
        assert!(
            denied.stderr.contains("UNAUTHORIZED") || denied.stderr.contains("401"),
            "{args:?}: {denied:?}"
        );
        assert!(!denied.stdout.contains(&payload), "{args:?}");
    }
    // And no credentials at all: the same refusal (the registry does not serve anonymously).
    let anonymous = crane(&s, br#"{"auths":{}}"#, &["manifest", &image]).await;
    assert_ne!(anonymous.code, 0, "{anonymous:?}");
}
