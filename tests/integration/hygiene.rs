//! Secret hygiene: every mode at trace level, with ECR (moto), Google (the token fixture) and
//! static sources, and no password, token, `auth` value or document in any output (the
//! `--dry-run=client` manifest stream on stdout is the one place data may appear). The
//! credentials never touch the disk either: the process runs with a fresh empty cwd, TMPDIR
//! and HOME, which stay empty.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::common::*;

struct Dirs {
    cwd: PathBuf,
    tmp: PathBuf,
    home: PathBuf,
}

impl Dirs {
    fn new(s: &Scratch) -> Self {
        let mk = |n: &str| {
            let p = s.dir.join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        Self {
            cwd: mk("empty-cwd"),
            tmp: mk("empty-tmp"),
            home: mk("empty-home"),
        }
    }

    fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcred-refresher"));
        cmd.args(args)
            .current_dir(&self.cwd)
            .env("TMPDIR", &self.tmp)
            .env("HOME", &self.home)
            .env("REGCRED_LOG", "trace")
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Every file under the three directories (they must stay empty).
    fn leftovers(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                out.push(e.path());
                if e.path().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        for d in [&self.cwd, &self.tmp, &self.home] {
            walk(d, &mut out);
        }
        out
    }
}

struct Output {
    mode: String,
    code: i32,
    /// What must hold no secret: stderr always, stdout unless it is the manifest stream.
    checked: String,
}

async fn http_get(url_base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = super::link::Link::parse(url_base);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn no_mode_leaks_a_credential_at_trace_level_or_writes_to_disk() {
    let s = Scratch::new().await;
    let ns = s.namespace("hygiene", &[], &[]).await;
    let dirs = Dirs::new(&s);
    fixture_control(&serde_json::json!({"mode": "ok", "reset_stats": true})).await;

    let tag = unique("x");
    let static_pw = format!("Hyg1ene-Stat1c-P4ss-{tag}");
    let rotated_pw = format!("Hyg1ene-R0tated-P4ss-{tag}");
    let json_pw = format!("Hyg1ene-D0ckerJs0n-P4ss-{tag}");
    let pw_file = s.file("static-password", &format!("{static_pw}\n"));
    let dcj = format!(
        r#"{{"auths":{{"docker.hygiene.example":{{"auth":"{}"}}}}}}"#,
        STANDARD.encode(format!("json-bot:{json_pw}"))
    );
    let dcj_file = s.file("dockerconfigjson", &dcj);
    let key = env("REGCRED_TEST_GOOGLE_KEY_FILE");
    let cfg = s.file(
        "c.yaml",
        &format!(
            r#"registries:
  - name: ecr
    ecr: {{ region: us-east-1 }}
  - name: gar
    google: {{ hosts: [gcr.io, us-docker.pkg.dev], keyFile: "{key}" }}
  - name: hub
    static:
      server: quay.io
      username: hygiene-bot
      passwordFile: "{}"
  - name: json
    static: {{ dockerConfigJsonFile: "{}" }}
secrets:
  - name: hygiene
    registries: [ecr, gar, hub, json]
  - name: hygiene-argocd
    registries: [ecr]
    format: argocd-repository
  - name: hygiene-basic
    registries: [hub]
    format: basic-auth
namespaces: {{ include: [{ns}] }}
"#,
            pw_file.display(),
            dcj_file.display()
        ),
    );
    let cfg = cfg.to_str().unwrap();

    let mut outputs = Vec::new();
    let mut once = async |mode: &str, args: &[&str], stdout_is_data: bool| {
        // --force: every run fetches every token, so each mode exercises every path that
        // holds one (a run against fresh secrets would fetch nothing).
        let mut all = vec!["--once", "--force", "--config", cfg];
        all.extend_from_slice(args);
        let out = tokio::time::timeout(Duration::from_secs(120), dirs.command(&all, &[]).output())
            .await
            .expect("binary timed out")
            .expect("binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains("TRACE"),
            "{mode}: not at trace level: {stderr}"
        );
        outputs.push(Output {
            mode: mode.to_string(),
            code: out.status.code().unwrap_or(-1),
            checked: if stdout_is_data {
                stderr
            } else {
                format!("{stdout}\n{stderr}")
            },
        });
        stdout
    };

    once("--once", &[], false).await;
    let secret = s.secret(&ns, "hygiene").await.expect("secret written");
    let document = secret.data.as_ref().unwrap()[".dockerconfigjson"].0.clone();
    once("--once --dry-run=server", &["--dry-run=server"], false).await;
    let manifests = once("--once --dry-run=client", &["--dry-run=client"], true).await;
    assert!(
        manifests.contains("kind: Secret"),
        "no manifest on stdout: {manifests}"
    );
    // A rotated password makes the diff non-trivial ("would update: hub").
    std::fs::write(&pw_file, format!("{rotated_pw}\n")).unwrap();
    let diff = once("--once --diff", &["--diff"], false).await;
    assert!(diff.contains("would update"), "diff: {diff}");
    // JSON logs too.
    once("--once --log-format=json", &["--log-format", "json"], false).await;

    // The daemon: a first cycle, a restore of a deleted secret from its cache, SIGTERM.
    let log = s.dir.join("daemon.out");
    let log_err = s.dir.join("daemon.err");
    let admin = free_port().to_string();
    let mut cmd = dirs.command(&["--config", cfg, "--admin-addr", &admin], &[]);
    cmd.stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log_err).unwrap());
    let mut child = cmd.spawn().unwrap();
    let read = || std::fs::read_to_string(&log_err).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            read().contains("cycle finished")
        })
        .await,
        "daemon: no cycle: {}",
        read()
    );
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.client.clone(), &ns)
        .delete("hygiene", &Default::default())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            s.secret(&ns, "hygiene").await.is_some()
        })
        .await,
        "daemon: not restored: {}",
        read()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("daemon stops on SIGTERM")
        .unwrap();
    outputs.push(Output {
        mode: "daemon".into(),
        code: status.code().unwrap_or(-1),
        checked: format!(
            "{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            read()
        ),
    });

    // What must never appear.
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(&env("REGCRED_TEST_GOOGLE_FIXTURE_URL"), "/stats").await)
            .expect("fixture stats");
    let mut google_tokens: Vec<String> = stats["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    google_tokens.extend(stats["last_access_token"].as_str().map(str::to_string));
    assert!(!google_tokens.is_empty(), "no Google token issued: {stats}");
    // ECR hands out a new token on every call: every one the world issued is searched for.
    let ecr_stats = cloud_fixture("GET", "stats", &serde_json::Value::Null).await;
    let ecr_pws: Vec<String> = ecr_stats["ecr"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| STANDARD.decode(t.as_str()?).ok())
        .filter_map(|b| Some(String::from_utf8(b).ok()?.strip_prefix("AWS:")?.to_string()))
        .collect();
    assert!(!ecr_pws.is_empty(), "no ECR token issued: {ecr_stats}");
    let doc_text = String::from_utf8(document.clone()).unwrap();
    let mut forbidden: Vec<(String, String)> = vec![
        ("static password".into(), static_pw.clone()),
        ("rotated static password".into(), rotated_pw.clone()),
        ("dockerconfigjson password".into(), json_pw.clone()),
        (
            "static auth".into(),
            STANDARD.encode(format!("hygiene-bot:{static_pw}")),
        ),
        (
            "rotated static auth".into(),
            STANDARD.encode(format!("hygiene-bot:{rotated_pw}")),
        ),
        (
            "dockerconfigjson auth".into(),
            STANDARD.encode(format!("json-bot:{json_pw}")),
        ),
        ("base64 document".into(), STANDARD.encode(&document)),
        (
            "base64 document of the client dry run".into(),
            STANDARD.encode(
                &serde_saphyr::from_multiple::<k8s_openapi::api::core::v1::Secret>(&manifests)
                    .expect("the client dry run prints Secret manifests")[0]
                    .data
                    .as_ref()
                    .expect("with data")[".dockerconfigjson"]
                    .0,
            ),
        ),
        ("document".into(), doc_text.clone()),
        ("input dockerconfigjson".into(), dcj.clone()),
    ];
    for pw in &ecr_pws {
        forbidden.push(("ECR password".into(), pw.clone()));
        forbidden.push(("ECR auth".into(), STANDARD.encode(format!("AWS:{pw}"))));
    }
    for t in &google_tokens {
        forbidden.push(("Google access token".into(), t.clone()));
        forbidden.push((
            "Google auth".into(),
            STANDARD.encode(format!("oauth2accesstoken:{t}")),
        ));
    }
    // Sanity: the document holds what we search for, so a leak could be seen.
    for needle in [&static_pw, &json_pw] {
        assert!(
            doc_text.contains(needle.as_str()),
            "{needle} not in the document"
        );
    }
    assert!(ecr_pws.iter().any(|p| doc_text.contains(p.as_str())));
    assert!(google_tokens.iter().any(|t| doc_text.contains(t.as_str())));
    assert!(
        manifests.contains(".dockerconfigjson"),
        "the client dry run shows the data: {manifests}"
    );

    assert!(
        forbidden.iter().all(|(_, v)| v.len() >= 16),
        "a forbidden value too short to search for: {:?}",
        forbidden
            .iter()
            .map(|(w, v)| (w, v.len()))
            .collect::<Vec<_>>()
    );

    let mut leaks = Vec::new();
    for o in &outputs {
        assert!(
            o.code == 0,
            "{}: exit {} (want 0): {}",
            o.mode,
            o.code,
            o.checked
        );
        for (what, value) in &forbidden {
            if o.checked.contains(value.as_str()) {
                leaks.push(format!("{}: the {what} appears in the output", o.mode));
            }
        }
        // Even fragments: 16 characters of any password or token.
        for (what, value) in &forbidden[..4] {
            let frag = &value[..16.min(value.len())];
            if o.checked.contains(frag) {
                leaks.push(format!("{}: a fragment of the {what} appears", o.mode));
            }
        }
    }
    eprintln!(
        "hygiene: {} modes, {} forbidden values, {} bytes of output searched",
        outputs.len(),
        forbidden.len(),
        outputs.iter().map(|o| o.checked.len()).sum::<usize>()
    );
    assert!(leaks.is_empty(), "credential leaks:\n{}", leaks.join("\n"));
    let left = dirs.leftovers();
    assert!(
        left.is_empty(),
        "the process wrote to its cwd/TMPDIR/HOME: {left:?}"
    );
}

/// A kubeconfig exec plugin whose output does not parse: kube's error quotes that output,
/// token included, in a snippet after the message's first line, and each layer of the error
/// chain repeats it. The log must name the failure once and quote nothing.
#[tokio::test]
async fn an_exec_plugins_unparsable_output_is_never_quoted() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new().await;
    let dirs = Dirs::new(&s);
    let token = format!("Ex3c-Pl4gin-T0ken-{}", unique("x"));
    let plugin = s.file(
        "plugin.sh",
        &format!(
            "#!/bin/sh\nprintf '%s' '{{\"kind\":\"ExecCredential\",\"apiVersion\":\"client.authentication.k8s.io/v1\",\"status\":{{\"token\":\"{token}\"'\n"
        ),
    );
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubeconfig = s.file(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{ name: c, cluster: {{ server: \"https://127.0.0.1:1\" }} }}]\n\
             users: [{{ name: u, user: {{ exec: {{ apiVersion: client.authentication.k8s.io/v1, command: {}, interactiveMode: Never }} }} }}]\n\
             contexts: [{{ name: c, context: {{ cluster: c, user: u }} }}]\ncurrent-context: c\n",
            plugin.display()
        ),
    );
    for format in ["text", "json"] {
        let out = dirs
            .command(
                &[
                    "--once",
                    "--ecr-region",
                    "us-east-1",
                    "--log-format",
                    format,
                ],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
            .output()
            .await
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{format}: {all}");
        assert!(
            !all.contains(&token),
            "{format}: the plugin's token was printed: {all}"
        );
        assert_eq!(
            all.matches("failed to parse auth exec output").count(),
            1,
            "{format}: each cause once: {all}"
        );
    }
}

/// A secret pasted where a path, a variable name or a URL belongs (issue 26, item 9): start-up
/// refuses it (exit 2, naming the field) and never quotes it, in either log format.
#[tokio::test]
async fn a_secret_pasted_where_a_path_variable_or_url_belongs_is_refused_unquoted() {
    let s = Scratch::new().await;
    let pw = s.file("password", "pw\n");
    let pw = pw.to_str().unwrap().to_string();
    let token = s.file("token", "a.b.c\n");
    let token = token.to_str().unwrap().to_string();
    let secret = |i: u32| format!("S3cr3t-Pasted-{i}-{}", unique("x"));
    let static_reg = |body: &str| {
        format!(
            "registries:\n  - name: hub\n    static:\n{body}secrets:\n  - name: regcred\n    registries: [hub]\nnamespaces:\n  include: [team-a]\n"
        )
    };
    let wif = |token_url: &str, impersonation: Option<&str>| {
        let mut doc = serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": token_url,
            "credential_source": { "file": token },
        });
        if let Some(url) = impersonation {
            doc["service_account_impersonation_url"] = url.into();
        }
        let path = s.file(&format!("wif-{}.json", unique("f")), &doc.to_string());
        format!(
            "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: \"{}\" }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [team-a]\n",
            path.display()
        )
    };
    let acr = |extra: &str| {
        format!(
            "registries:\n  - name: acr\n    acr: {{ loginServer: example.azurecr.io, tenantId: 11111111-1111-1111-1111-111111111111, clientId: 22222222-2222-2222-2222-222222222222, federatedTokenFile: \"{token}\"{extra} }}\nsecrets:\n  - name: regcred\n    registries: [acr]\nnamespaces:\n  include: [team-a]\n"
        )
    };
    let docker_config_keyed = |key: &str| {
        let auth = STANDARD.encode("bot:pw");
        let path = s.file(
            &format!("dc-{}.json", unique("f")),
            &format!(r#"{{"auths":{{"{key}":{{"auth":"{auth}"}}}}}}"#),
        );
        static_reg(&format!(
            "      dockerConfigJsonFile: \"{}\"\n",
            path.display()
        ))
    };

    let mut cases: Vec<(&str, String, String)> = Vec::new();
    let mut add = |field: &'static str, make: &dyn Fn(&str) -> String, i: u32| {
        let v = secret(i);
        cases.push((field, make(&v), v));
    };
    add(
        "static.passwordFile",
        &|v| {
            static_reg(&format!(
                "      server: quay.io\n      username: bot\n      passwordFile: \"{v}\"\n"
            ))
        },
        1,
    );
    add(
        "static.passwordFile/passwordEnv",
        &|v| {
            static_reg(&format!(
                "      server: quay.io\n      username: bot\n      passwordEnv: \"{v}\"\n"
            ))
        },
        2,
    );
    add(
        "static.username/usernameFile/usernameEnv",
        &|v| {
            static_reg(&format!(
                "      server: quay.io\n      usernameFile: \"{v}\"\n      passwordFile: \"{pw}\"\n"
            ))
        },
        3,
    );
    add(
        "static.server",
        &|v| {
            static_reg(&format!(
                "      server: \"https://bot:{v}@quay.io\"\n      username: bot\n      passwordFile: \"{pw}\"\n"
            ))
        },
        4,
    );
    add(
        "static.dockerConfigJsonFile",
        &|v| static_reg(&format!("      dockerConfigJsonFile: \"{v}\"\n")),
        5,
    );
    add(
        "static.dockerConfigJsonFile",
        &|v| docker_config_keyed(&format!("https://bot:{v}@quay.io")),
        6,
    );
    add(
        "google.keyFile",
        &|v| {
            format!(
                "registries:\n  - name: gar\n    google: {{ hosts: [gcr.io], keyFile: \"{v}\" }}\nsecrets:\n  - name: regcred\n    registries: [gar]\nnamespaces:\n  include: [team-a]\n"
            )
        },
        7,
    );
    add(
        "google.keyFile",
        &|v| {
            wif(
                &format!("https://sts:{v}@sts.googleapis.com/v1/token"),
                None,
            )
        },
        8,
    );
    add(
        "google.keyFile",
        &|v| {
            wif(
                "https://sts.googleapis.com/v1/token",
                Some(&format!(
                    "https://iam:{v}@iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateAccessToken"
                )),
            )
        },
        9,
    );
    add(
        "acr.authorityHost",
        &|v| {
            acr(&format!(
                ", authorityHost: \"https://u:{v}@login.microsoftonline.com\""
            ))
        },
        10,
    );
    add(
        "acr",
        &|v| {
            acr(&format!(", clientSecretFile: \"{v}\""))
                .replace(&format!(", federatedTokenFile: \"{token}\""), "")
        },
        11,
    );

    let mut failures = Vec::new();
    for (field, yaml, secret) in &cases {
        let path = s.file(&format!("case-{}.yaml", unique("c")), yaml);
        for format in ["text", "json"] {
            let run = run_bin(
                &[
                    "--once",
                    "--config",
                    path.to_str().unwrap(),
                    "--log-format",
                    format,
                ],
                &[("KUBECONFIG", "/nonexistent")],
            )
            .await;
            let all = format!("{}{}", run.stdout, run.stderr);
            if run.code != 2 || !all.contains(field) || all.contains(secret.as_str()) {
                failures.push(format!(
                    "{field} ({format}): exit {} (want 2), field named: {}, value quoted: {}\n  {}",
                    run.code,
                    all.contains(field),
                    all.contains(secret.as_str()),
                    all.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs failed:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}
