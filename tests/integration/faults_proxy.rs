//! The per-test fault proxy (`tests/fixtures/fault_proxy.py`) as the tests drive it: one
//! process in front of one upstream, rules set at start or later, and the log of every request
//! it saw. Killed when dropped. For the API server it terminates TLS with a certificate for
//! 127.0.0.1 minted from the world's CA and forwards with the admin identity; impersonation
//! headers pass through, so `Scratch::kubeconfig_as` users keep their own rights.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::common::*;

pub struct FaultProxy {
    _child: tokio::process::Child,
    pub port: u16,
    control: u16,
    tls: bool,
}

impl FaultProxy {
    async fn spawn(args: &[String], rules: &Value, tls: bool) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fault_proxy.py");
        let mut child = tokio::process::Command::new(env("REGCRED_TEST_PYTHON"))
            .arg(script)
            .args(args)
            .args(["--rules", &rules.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("fault proxy starts");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("fault proxy ready in time")
        .unwrap();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("READY"), "fault proxy: {line}");
        let port = words.next().unwrap().parse().unwrap();
        let control = words.next().unwrap().parse().unwrap();
        Self {
            _child: child,
            port,
            control,
            tls,
        }
    }

    /// Plain HTTP in front of `upstream` (moto, the Google fixture).
    pub async fn http(upstream: &str, rules: Value) -> Self {
        Self::spawn(&["--upstream".into(), upstream.into()], &rules, false).await
    }

    /// HTTPS in front of the world's API server.
    pub async fn api_server(s: &Scratch, rules: Value) -> Self {
        let (cert, key) = serving_cert(s);
        let args: Vec<String> = [
            "--upstream",
            &env("REGCRED_TEST_API_SERVER"),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--upstream-ca",
            &env("REGCRED_TEST_CA_CERT"),
            "--upstream-cert",
            &env("REGCRED_TEST_ADMIN_CERT"),
            "--upstream-key",
            &env("REGCRED_TEST_ADMIN_KEY"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        Self::spawn(&args, &rules, true).await
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `kubeconfig` with every cluster's server swapped for this proxy.
    pub fn kubeconfig(&self, s: &Scratch, kubeconfig: &std::path::Path) -> PathBuf {
        kubeconfig_via(s, kubeconfig, &self.url())
    }

    async fn control(&self, method: &str, path: &str, body: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.control))
            .await
            .unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.0 200"),
            "fault proxy control: {out}"
        );
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    /// Replaces the rules; `json!([])` forwards everything again.
    pub async fn set_rules(&self, rules: Value) {
        self.control("POST", "/rules", &rules.to_string()).await;
    }

    /// Every request seen so far: `{"method", "path", "rule", "status", "t"}`.
    pub async fn log(&self) -> Vec<Value> {
        serde_json::from_str(&self.control("GET", "/log", "").await).unwrap()
    }

    /// Requests seen whose method is `method` and whose path contains `path`.
    pub async fn seen(&self, method: &str, path: &str) -> Vec<Value> {
        self.log()
            .await
            .into_iter()
            .filter(|e| e["method"] == method && e["path"].as_str().unwrap().contains(path))
            .collect()
    }
}

/// A serving certificate for 127.0.0.1 signed by the world's CA (which every test kubeconfig
/// already trusts).
fn serving_cert(s: &Scratch) -> (PathBuf, PathBuf) {
    let (key, csr, cert, ext) = (
        s.dir.join("proxy.key"),
        s.dir.join("proxy.csr"),
        s.dir.join("proxy.crt"),
        s.file(
            "proxy.ext",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
    );
    if cert.exists() {
        return (cert, key);
    }
    let ok = std::process::Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .args(["-subj", "/CN=fault-proxy", "-out"])
        .arg(&csr)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl req");
    let ok = std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(&csr)
        .args(["-CA", &env("REGCRED_TEST_CA_CERT")])
        .args(["-CAkey", &env("REGCRED_TEST_CA_KEY")])
        .args(["-set_serial", &format!("{}", std::process::id())])
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl x509");
    (cert, key)
}

/// A Kubernetes `Status` error body, as the API server (or a webhook) sends it.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}
