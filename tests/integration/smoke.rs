//! Proof that the world is real: the API server validates and authorizes, moto hands out ECR
//! tokens, and the Google fixture checks signed assertions.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use regcred_refresher::config::{EcrConfig, GoogleConfig, SourceConfig, SourceKind};
use regcred_refresher::sources::Source;

use super::common::*;

#[tokio::test]
async fn api_server_rejects_invalid_dockerconfigjson_with_422() {
    let s = Scratch::new().await;
    let ns = s.namespace("smoke", &[], &[]).await;
    let bad = Secret {
        metadata: ObjectMeta {
            name: Some("bad".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_string(),
                ByteString(b"not json".to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let err = Api::<Secret>::namespaced(s.client.clone(), &ns)
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 422, "{status:?}"),
        other => panic!("expected a 422, got {other:?}"),
    }
}

#[tokio::test]
async fn restricted_identity_is_forbidden() {
    let s = Scratch::new().await;
    let ns = s.namespace("smoke", &[], &[]).await;
    let restricted = client_from(Path::new(&env("REGCRED_TEST_RESTRICTED_KUBECONFIG"))).await;
    let err = Api::<Secret>::namespaced(restricted, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[tokio::test]
async fn moto_gives_an_ecr_token_and_the_fixture_a_google_token() {
    let timeout = Duration::from_secs(20);
    let ecr = Source::new(
        &SourceConfig {
            name: "ecr".into(),
            kind: SourceKind::Ecr(EcrConfig {
                region: "us-east-1".into(),
                account_id: None,
                assume_role: None,
            }),
        },
        timeout,
    )
    .await;
    let c = ecr.fetch(timeout).await.expect("ecr token from moto");
    let acct = env("REGCRED_TEST_AWS_ACCOUNT_ID");
    assert_eq!(
        c.entries[0].server,
        format!("{acct}.dkr.ecr.us-east-1.amazonaws.com")
    );
    assert_eq!(c.entries[0].username, "AWS");
    assert!(!c.entries[0].password().is_empty());

    let google = Source::new(
        &SourceConfig {
            name: "gar".into(),
            kind: SourceKind::Google(GoogleConfig {
                hosts: vec!["gcr.io".into()],
                key_file: Some(env("REGCRED_TEST_GOOGLE_KEY_FILE").into()),
                external_account: None,
            }),
        },
        timeout,
    )
    .await;
    let g = google
        .fetch(timeout)
        .await
        .expect("google token from the fixture");
    assert_eq!(g.entries[0].username, "oauth2accesstoken");
    assert!(
        g.entries[0].password().starts_with("ya29."),
        "fixture token shape"
    );
    let left = g.expires_at.unwrap() - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(50) && left <= chrono::Duration::minutes(61),
        "{left}"
    );
}
