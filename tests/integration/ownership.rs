//! Whose secret is it: conflicts, adoption, wrong types, ServiceAccount references, and
//! which namespaces are targets.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use super::common::*;

fn static_config(s: &Scratch, secret: &str, namespaces: &str, extra: &str) -> std::path::PathBuf {
    let pass = s.file("p", "static-pw");
    s.file(
        "c.yaml",
        &format!(
            "registries:\n  - name: quay\n    static: {{ server: quay.io, username: bot, passwordFile: {} }}\nsecrets:\n  - name: {secret}\n    registries: [quay]\n{extra}namespaces:\n{namespaces}",
            pass.display()
        ),
    )
}

async fn put_secret(
    s: &Scratch,
    ns: &str,
    name: &str,
    type_: &str,
    labels: &[(&str, &str)],
) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            [(
                ".dockerconfigjson".to_string(),
                ByteString(br#"{"auths":{"mine.example":{"auth":"dTpw"}}}"#.to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(s.client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap()
}

/// The Warning Events regcred-refresher recorded in `ns`: (reason, regarding name).
async fn warnings(s: &Scratch, ns: &str) -> Vec<(String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reporting_controller.as_deref() == Some("regcred-refresher")
        })
        .map(|e| {
            let name = e.regarding.and_then(|r| r.name).unwrap_or_default();
            (e.reason.unwrap_or_default(), name)
        })
        .collect()
}

#[tokio::test]
async fn a_secret_we_do_not_manage_is_left_alone_unless_adopted() {
    let s = Scratch::new().await;
    let (theirs, free) = (
        s.namespace("own", &[], &[]).await,
        s.namespace("own", &[], &[]).await,
    );
    let original = put_secret(
        &s,
        &theirs,
        "regcred",
        "kubernetes.io/dockerconfigjson",
        &[],
    )
    .await;
    let cfg = static_config(
        &s,
        "regcred",
        &format!("  include: [{theirs}, {free}]\n"),
        "",
    );
    // A dry run changes nothing, so it tells the namespace nothing either.
    let dry = run_bin(
        &[
            "--once",
            "--dry-run=server",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(dry.code, 1, "{dry:?}");
    assert_eq!(warnings(&s, &theirs).await, vec![]);
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "a conflict fails the run: {r:?}");
    assert!(
        r.stderr.contains("conflict") && r.stderr.contains(&theirs),
        "{}",
        r.stderr
    );
    let after = s.secret(&theirs, "regcred").await.unwrap();
    assert_eq!(rv(&after), rv(&original), "foreign secret untouched");
    assert!(
        s.secret(&free, "regcred").await.is_some(),
        "the other namespace is still written"
    );
    // The namespace's owners see why in their own namespace, not only in a Job's log.
    assert_eq!(
        warnings(&s, &theirs).await,
        vec![("Conflict".to_string(), "regcred".to_string())]
    );
    assert_eq!(warnings(&s, &free).await, vec![]);

    let adopt = static_config(
        &s,
        "regcred",
        &format!("  include: [{theirs}, {free}]\n"),
        "    adopt: true\n",
    );
    let r = run_bin(&["--once", "--config", adopt.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let adopted = s.secret(&theirs, "regcred").await.unwrap();
    assert_eq!(
        adopted.metadata.labels.clone().unwrap()["app.kubernetes.io/managed-by"],
        "regcred-refresher"
    );
    assert_eq!(auths(&adopted)["quay.io"]["password"], "static-pw");
}

#[tokio::test]
async fn a_managed_name_with_the_wrong_type_is_a_clear_error() {
    let s = Scratch::new().await;
    let (bad, good) = (
        s.namespace("type", &[], &[]).await,
        s.namespace("type", &[], &[]).await,
    );
    put_secret(
        &s,
        &bad,
        "regcred",
        "Opaque",
        &[
            ("app.kubernetes.io/managed-by", "regcred-refresher"),
            ("regcred-refresher.io/instance", "default"),
        ],
    )
    .await;
    let cfg = static_config(&s, "regcred", &format!("  include: [{bad}, {good}]\n"), "");
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("secret {bad}/regcred has type \\\"Opaque\\\""))
            || r.stderr
                .contains(&format!("secret {bad}/regcred has type \"Opaque\"")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("immutable"), "{}", r.stderr);
    assert!(s.secret(&good, "regcred").await.is_some());
    assert_eq!(
        warnings(&s, &bad).await,
        vec![("WriteFailed".to_string(), "regcred".to_string())]
    );
}

#[tokio::test]
async fn service_account_patch_keeps_foreign_entries() {
    let s = Scratch::new().await;
    let (ns, no_sa) = (
        s.namespace("sa", &[], &[]).await,
        s.namespace("sa", &[], &[]).await,
    );
    // Not `default`: kube-controller-manager gives every namespace one, and `no_sa` must lack
    // the ServiceAccount.
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("builder".into()),
            ..Default::default()
        },
        image_pull_secrets: Some(vec![LocalObjectReference {
            name: "someone-elses".into(),
        }]),
        ..Default::default()
    };
    let api = Api::<ServiceAccount>::namespaced(s.client.clone(), &ns);
    api.create(&PostParams::default(), &sa).await.unwrap();
    let cfg = static_config(
        &s,
        "regcred",
        &format!("  include: [{ns}, {no_sa}]\n"),
        "serviceAccounts: [builder]\n",
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    // The namespace without the ServiceAccount is reported (not a failure), not given one.
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("serviceaccount not found"),
        "{}",
        r.stderr
    );
    let names = |sa: ServiceAccount| {
        sa.image_pull_secrets
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    let got = api.get("builder").await.unwrap();
    let version = got.metadata.resource_version.clone();
    assert_eq!(names(got), ["someone-elses", "regcred"]);
    assert!(
        Api::<ServiceAccount>::namespaced(s.client.clone(), &no_sa)
            .get_opt("builder")
            .await
            .unwrap()
            .is_none()
    );

    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert!(
        r.stderr.contains("serviceaccount unchanged"),
        "{}",
        r.stderr
    );
    let again = api.get("builder").await.unwrap();
    assert_eq!(again.metadata.resource_version, version, "no second patch");
}

#[tokio::test]
async fn globs_selector_exclude_opt_out_and_missing() {
    let s = Scratch::new().await;
    let p = unique("m");
    let t1 = s.namespace(&format!("{p}-t"), &[("team", "a")], &[]).await;
    let t2 = s.namespace(&format!("{p}-t"), &[("team", "b")], &[]).await;
    let wrong_label = s.namespace(&format!("{p}-t"), &[("team", "c")], &[]).await;
    let excluded = s.namespace(&format!("{p}-x"), &[("team", "a")], &[]).await;
    let opted_out = s
        .namespace(
            &format!("{p}-t"),
            &[("team", "a")],
            &[("regcred-refresher.io/skip", "true")],
        )
        .await;
    let outside = s.namespace("elsewhere", &[("team", "a")], &[]).await;
    let ghost = format!("{p}-ghost");
    let cfg = static_config(
        &s,
        "regcred",
        &format!(
            "  include: [\"{p}-*\", {ghost}]\n  exclude: [\"{p}-x*\"]\n  selector: \"team in (a,b)\"\n"
        ),
        "",
    );
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    for ns in [&t1, &t2] {
        assert!(
            s.secret(ns, "regcred").await.is_some(),
            "{ns} should be a target: {}",
            r.stderr
        );
    }
    for ns in [&wrong_label, &excluded, &opted_out, &outside] {
        assert!(
            s.secret(ns, "regcred").await.is_none(),
            "{ns} must not be written"
        );
    }
    // With a selector the server filters, so a named namespace absent from the answer may just
    // carry other labels: run again without the selector to see "missing".
    assert_eq!(r.code, 0, "{r:?}");
    let cfg = static_config(&s, "regcred", &format!("  include: [{t1}, {ghost}]\n"), "");
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "a missing named namespace fails the run: {r:?}");
    assert!(
        r.stderr.contains(&ghost) && r.stderr.contains("missing"),
        "{}",
        r.stderr
    );
    let list = std::process::Command::new("kubectl")
        .env("KUBECONFIG", env("REGCRED_TEST_KUBECONFIG"))
        .args(["get", "namespace", &ghost])
        .output()
        .unwrap();
    assert!(
        !list.status.success(),
        "the missing namespace was never created"
    );
}

#[tokio::test]
async fn another_instances_secret_is_foreign() {
    let s = Scratch::new().await;
    let ns = s.namespace("inst", &[], &[]).await;
    let cfg = static_config(&s, "regcred", &format!("  include: [{ns}]\n"), "");
    let r = run_bin(
        &[
            "--once",
            "--instance",
            "team-x",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let written = s.secret(&ns, "regcred").await.unwrap();
    assert_eq!(
        written.metadata.labels.clone().unwrap()["regcred-refresher.io/instance"],
        "team-x"
    );
    // The default instance sees team-x's secret as someone else's and leaves it alone.
    let r = run_bin(&["--once", "--config", cfg.to_str().unwrap()], &[]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("conflict"), "{}", r.stderr);
    assert_eq!(rv(&s.secret(&ns, "regcred").await.unwrap()), rv(&written));
}
