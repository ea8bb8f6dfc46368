//! The world's kube-controller-manager, as every cluster runs it: a namespace gets its `default`
//! ServiceAccount a moment AFTER it is created, so the refresher meets the namespace first and
//! the ServiceAccount later; and deleted namespaces finalize.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams};

use super::common::*;

/// SIGSTOPs the world's kube-controller-manager (its pid from the world's `pids` file) until
/// dropped, also on a panic, so no other test waits on it for long.
struct PausedControllerManager(String);

impl PausedControllerManager {
    fn new() -> Self {
        let pids =
            std::fs::read_to_string(format!("{}/pids", env("REGCRED_TEST_WORLD_DIR"))).unwrap();
        let pid = pids
            .lines()
            .find_map(|l| l.strip_prefix("kube-controller-manager "))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("kube-controller-manager in the world's pids")
            .to_string();
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        Self(pid)
    }
}

impl Drop for PausedControllerManager {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

fn static_config(s: &Scratch, prefix: &str) -> std::path::PathBuf {
    let pw = s.file(&unique("pw"), "world-controllers-pw");
    s.file(
        &unique("wc.yaml"),
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces:\n  include: [\"{prefix}-*\"]\nserviceAccounts: [default]\n",
            pw.display()
        ),
    )
}

#[tokio::test]
async fn the_default_service_account_of_a_new_namespace_gets_its_reference_when_it_appears() {
    let s = Scratch::new().await;
    let p = unique("wc");
    let cfg = static_config(&s, &p);
    let d = DaemonProc::start(&s, &["--config", cfg.to_str().unwrap()], &[]).await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            d.get("/readyz").await.is_some_and(|(c, _)| c == 200)
        })
        .await,
        "{}",
        d.logs()
    );

    // A slow controller-manager: the refresher meets the namespace without its ServiceAccount
    // for certain (with a running one, either may come first).
    let paused = PausedControllerManager::new();
    let ns = s.namespace(&p, &[], &[]).await;
    let sas = Api::<ServiceAccount>::namespaced(s.client.clone(), &ns);
    let seen_without = wait_until(Duration::from_secs(10), || async {
        d.logs()
            .lines()
            .any(|l| l.contains("serviceaccount not found") && l.contains(&ns))
    })
    .await;
    assert!(seen_without, "{}", d.logs());
    assert!(s.secret(&ns, "regcred").await.is_some());
    assert!(sas.get_opt("default").await.unwrap().is_none());
    drop(paused);
    let referenced = wait_until(Duration::from_secs(15), || async {
        sas.get_opt("default").await.unwrap().is_some_and(|sa| {
            sa.image_pull_secrets
                .is_some_and(|r| r.iter().any(|r| r.name == "regcred"))
        })
    })
    .await;
    assert!(referenced, "no reference on the default SA: {}", d.logs());
    assert!(s.secret(&ns, "regcred").await.is_some());

    // The ServiceAccount is the controller's (this test never creates one, nor does the
    // refresher): the refresher patched the reference into it.
    let logs = d.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("serviceaccount patched") && l.contains(&ns)),
        "{logs}"
    );
    assert!(
        !logs
            .lines()
            .any(|l| l.contains(&ns) && l.contains("failed")),
        "{logs}"
    );
}

#[tokio::test]
async fn a_deleted_namespace_finalizes_with_its_secrets() {
    let s = Scratch::new().await;
    let p = unique("wcd");
    let ns = s.namespace(&p, &[], &[]).await;
    let cfg = static_config(&s, &p);
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(s.secret(&ns, "regcred").await.is_some());

    let nss = Api::<Namespace>::all(s.client.clone());
    nss.delete(&ns, &DeleteParams::default()).await.unwrap();
    let gone = wait_until(Duration::from_secs(60), || async {
        nss.get_opt(&ns).await.unwrap().is_none()
    })
    .await;
    assert!(
        gone,
        "namespace {ns} never finalized (is kube-controller-manager running?)"
    );
}
