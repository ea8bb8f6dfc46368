//! Input the way people write it, and saying who we are: a User-Agent on every Kubernetes
//! request, an empty selector, brace globs, the opt-out annotation's spellings, credential
//! files with a byte-order mark, blank or oversized credentials, one host written twice.

use super::common::*;

/// A server that answers every request with a 500 (one that stayed silent would hold a run
/// until the client's read timeout), and the request heads it received.
struct Answers500 {
    addr: std::net::SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Answers500 {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = conn
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        Self { addr, heads, task }
    }

    fn heads(self) -> Vec<String> {
        self.task.abort();
        self.heads.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn every_kubernetes_request_says_who_we_are() {
    let s = Scratch::new().await;
    let pw = s.file("pw", "x");
    let cfg = s.file("c.yaml", &static_cfg(&pw, "{ include: [a] }"));
    let api = Answers500::start().await;
    let kc = s.file(
        "kc",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{ server: \"http://{}\" }}\ncontexts:\n- name: c\n  context: {{ cluster: c, user: u }}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n",
            api.addr
        ),
    );
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[("KUBECONFIG", kc.to_str().unwrap())],
    )
    .await;
    assert_eq!(r.code, 1, "no API server answered: {r:?}");
    let heads = api.heads();
    let want = format!(
        "user-agent: regcred-refresher/{}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(heads.len() >= 2, "{heads:?}");
    for head in &heads {
        assert!(
            head.to_ascii_lowercase().contains(&want),
            "{want} missing from:\n{head}"
        );
    }
}

/// The AWS SDK's User-Agent names us too (CloudTrail's userAgent field).
#[tokio::test]
async fn ecr_calls_say_who_we_are() {
    let s = Scratch::new().await;
    let ns = s.namespace("uaecr", &[], &[]).await;
    let cfg = s.file(
        "c.yaml",
        &format!("registries:\n  - name: ecr\n    ecr: {{ region: us-east-1 }}\nsecrets:\n  - name: regcred\n    registries: [ecr]\nnamespaces: {{ include: [{ns}] }}\n"),
    );
    let aws = Answers500::start().await;
    let url = format!("http://{}", aws.addr);
    let r = run_bin(
        &[
            "--once",
            "--provider-timeout",
            "10",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[("AWS_ENDPOINT_URL", url.as_str())],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    let heads = aws.heads();
    assert!(!heads.is_empty());
    for head in &heads {
        let ua = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("user-agent:"))
            .unwrap_or_default();
        assert!(ua.contains("app/regcred-refresher"), "{head}");
    }
}

#[tokio::test]
async fn an_empty_selector_and_brace_globs_select_as_people_expect() {
    let s = Scratch::new().await;
    let p = unique("in");
    let a = s.namespace(&format!("{p}-a"), &[], &[]).await;
    let b = s.namespace(&format!("{p}-b"), &[], &[]).await;
    let c = s.namespace(&format!("{p}-c"), &[], &[]).await;
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(
            &pw,
            &format!("{{ include: [\"{p}-{{a,b}}-*\"], selector: \"\" }}"),
        ),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&a, "regcred").await.is_some());
    assert!(s.secret(&b, "regcred").await.is_some());
    assert!(s.secret(&c, "regcred").await.is_none());
}

#[tokio::test]
async fn the_opt_out_annotation_reads_yes_and_warns_about_nonsense() {
    let s = Scratch::new().await;
    let p = unique("oo");
    let key = "regcred-refresher.io/skip";
    let yes = s.namespace(&p, &[], &[(key, "Yes")]).await;
    let one = s.namespace(&p, &[], &[(key, "1")]).await;
    let no = s.namespace(&p, &[], &[(key, "false")]).await;
    let odd = s.namespace(&p, &[], &[(key, "maybe")]).await;
    let pw = s.file("pw", "x");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [\"{p}-*\"] }}")),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&yes, "regcred").await.is_none());
    assert!(s.secret(&one, "regcred").await.is_none());
    assert!(s.secret(&no, "regcred").await.is_some());
    assert!(s.secret(&odd, "regcred").await.is_some());
    let warning = r
        .stderr
        .lines()
        .find(|l| l.contains("opt-out annotation not understood"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        warning.contains(&odd) && warning.contains("maybe"),
        "{warning}"
    );
}

#[tokio::test]
async fn a_byte_order_mark_is_not_part_of_the_password() {
    let s = Scratch::new().await;
    let ns = s.namespace("bom", &[], &[]).await;
    let pw = s.file("pw", "\u{feff}windows-pass\r\n");
    let cfg = s.file(
        "c.yaml",
        &static_cfg(&pw, &format!("{{ include: [{ns}] }}")),
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let auths = auths(&s.secret(&ns, "regcred").await.unwrap());
    assert_eq!(auths["quay.io"]["password"], "windows-pass");
    assert_eq!(auths["quay.io"]["auth"], b64("bot:windows-pass"));
}

/// Refused at start, exit 2, naming the field and the fix; nothing contacted.
#[tokio::test]
async fn blank_or_oversized_credentials_and_a_host_twice_are_refused_at_start() {
    let s = Scratch::new().await;
    let blank = s.file("blank", " \t\n");
    let big = s.file("big", &"p".repeat(300 * 1024));
    let cases = [
        (static_cfg(&blank, "{}"), "registries[0].static.password", "only whitespace"),
        (static_cfg(&big, "{}"), "registries[0].static.password", "at most 262144 bytes"),
        (
            "registries:\n  - name: g\n    google: { hosts: [gcr.io, \"https://GCR.io/\"] }\nsecrets:\n  - name: s\n    registries: [g]\n".to_string(),
            "registries[0].google.hosts",
            "listed twice",
        ),
    ];
    for (yaml, field, problem) in cases {
        let cfg = s.file(&unique("c.yaml"), &yaml);
        let r = run_bin(
            &["--once", "--config", cfg.to_str().unwrap()],
            &[("KUBECONFIG", "/nonexistent")],
        )
        .await;
        assert_eq!(r.code, 2, "{yaml}: {r:?}");
        assert!(
            r.stderr.contains(field) && r.stderr.contains(problem) && r.stderr.contains("fix"),
            "{yaml}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("pppppppp"), "never quotes the value");
    }
}
