//! The refresher under an identity with exactly the rights a deployment would have, and bad
//! configuration refused before the cluster is touched.

use super::common::*;

#[tokio::test]
async fn forbidden_namespace_fails_alone_with_a_clear_message() {
    let s = Scratch::new().await;
    let a = s.namespace("rbac", &[], &[]).await;
    let b = s.namespace("rbac", &[], &[]).await;
    let denied = s.namespace("rbac", &[], &[]).await;
    let user = unique("refresher");
    s.grant(
        &user,
        vec![rule(&[""], &["namespaces"], &["list"])],
        &[&a, &b],
        vec![rule(&[""], &["secrets"], &["get", "create", "patch"])],
    )
    .await;
    let kubeconfig = s.kubeconfig_as(&user);
    let pass = s.file("p", "pw");
    let cfg = s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {} }}\nsecrets:\n  - name: regcred\n    registries: [quay]\nnamespaces: {{ include: [{a}, {b}, {denied}] }}\n",
            pass.display()
        ),
    );
    let r = run_bin(
        &["--once", "--config", cfg.to_str().unwrap()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(s.secret(&a, "regcred").await.is_some());
    assert!(s.secret(&b, "regcred").await.is_some());
    assert!(s.secret(&denied, "regcred").await.is_none());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("forbidden to"))
        .unwrap_or_else(|| panic!("no forbidden line: {}", r.stderr));
    assert!(line.contains(&denied) && line.contains("grant"), "{line}");

    // Server dry run is authorized like the real write: without patch rights it is refused.
    let r = run_bin(
        &[
            "--once",
            "--dry-run=server",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_field() {
    let s = Scratch::new().await;
    let cases = [
        (
            "registries:\n  - name: e\n    ecr: { region: nowhere }\nsecrets:\n  - name: r\n    registries: [e]\n",
            "registries[0].ecr.region",
        ),
        (
            "registries:\n  - name: e\n    ecr: { region: us-east-1 }\nsecrets:\n  - name: r\n    registries: [f]\n",
            "secrets[0].registries[0]",
        ),
        (
            "registries:\n  - name: e\n    ecr: { region: us-east-1 }\nsecrets:\n  - name: R_1\n    registries: [e]\n",
            "secrets[0].name",
        ),
        (
            "registries:\n  - name: h\n    static: { server: quay.io, username: u, passwordFile: /nonexistent/p }\nsecrets:\n  - name: r\n    registries: [h]\n",
            "passwordEnv: the file cannot be read",
        ),
        ("secrts: []\n", "did you mean `secrets`"),
    ];
    for (yaml, want) in cases {
        let cfg = s.file("bad.yaml", yaml);
        // An unreachable cluster proves nothing was contacted before the refusal.
        let r = run_bin(
            &["--once", "--config", cfg.to_str().unwrap()],
            &[("KUBECONFIG", "/nonexistent/kubeconfig")],
        )
        .await;
        assert_eq!(r.code, 2, "{yaml}: {r:?}");
        assert!(r.stderr.contains(want), "want {want:?} in {}", r.stderr);
    }
    let r = run_bin(&["--once"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--config"), "{}", r.stderr);
}
