//! Amazon ECR Public (`public.ecr.aws`): `ecr-public:GetAuthorizationToken` with the same
//! credential chain and optional assumed role as ECR (see `aws`). Anonymous pulls work too;
//! an authenticated one gets the higher pull limits. The token is `AWS:<password>`, valid 12 h.
//!
//! The authorization API exists only in us-east-1, so the client is pinned there whatever
//! AWS_REGION says: signed for another region, the call is refused.

use std::time::Duration;

use aws_sdk_ecrpublic::operation::get_authorization_token::GetAuthorizationTokenOutput;

use serde::Deserialize;

use super::aws::{AssumeRole, assume_role, call_error, sdk_config, token_credentials};
use super::{Fetch, Kind, Labelled, SourceError};
use crate::config_error::{Checked, ConfigError};
use crate::credentials::Credentials;

/// The registry every ECR Public image is pulled from, and the `auths` key we write.
pub const REGISTRY: &str = "public.ecr.aws";

/// The one region ECR Public's authorization API answers in.
pub const REGION: &str = "us-east-1";

/// `ecrPublic:` as the file holds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcrPublicFile {
    /// Accepted only to be refused with the reason (there is one region), where serde would
    /// say no more than "unknown field".
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
}

/// ECR Public (`public.ecr.aws`): no region, its authorization API is in us-east-1 only.
#[derive(Debug, Clone)]
pub struct EcrPublicConfig {
    pub assume_role: Option<AssumeRole>,
}

#[derive(Debug, thiserror::Error)]
pub enum EcrPublicError {
    #[error("ECR Public GetAuthorizationToken (us-east-1) failed: {0}")]
    Call(String),
    #[error("ECR Public answered with an unusable token: {0}")]
    Response(String),
}

impl Labelled for EcrPublicError {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Call(_) => "ecr_public_call",
            Self::Response(_) => "ecr_public_response",
        }
    }
}

pub struct Spec;

impl Kind for Spec {
    type File = EcrPublicFile;
    type Config = EcrPublicConfig;
    type Fetcher = EcrPublicProvider;
    type Error = EcrPublicError;

    fn check(field: &str, file: EcrPublicFile) -> Checked<EcrPublicConfig> {
        ecr_public(field, file)
    }

    fn recipe(p: &EcrPublicConfig) -> String {
        let role = p.assume_role.as_ref();
        format!(
            "ecr-public role={} external-id={}",
            role.map_or("-", |r| r.role_arn.as_str()),
            role.is_some_and(|r| r.external_id.is_some()),
        )
    }

    fn known_hosts(_: &EcrPublicConfig) -> Vec<String> {
        vec![REGISTRY.to_string()]
    }

    async fn fetcher(name: &str, cfg: &EcrPublicConfig, timeout: Duration) -> EcrPublicProvider {
        EcrPublicProvider::new(name, cfg, timeout).await
    }
}

fn ecr_public(field: &str, p: EcrPublicFile) -> Checked<EcrPublicConfig> {
    if let Some(region) = p.region {
        return Err(ConfigError::invalid(
            &format!("{field}.region"),
            &format!(
                "{region:?}: ECR Public has no region setting; its authorization API exists only in us-east-1, which is always used"
            ),
            "remove `region` (a pull from public.ecr.aws works from any region)",
        ));
    }
    Ok(EcrPublicConfig {
        assume_role: assume_role(field, p.role_arn, p.external_id, p.session_name)?,
    })
}

pub struct EcrPublicProvider {
    name: String,
    client: aws_sdk_ecrpublic::Client,
    timeout: Duration,
}

impl EcrPublicProvider {
    pub async fn new(name: &str, cfg: &EcrPublicConfig, timeout: Duration) -> Self {
        let base = sdk_config(REGION, timeout, cfg.assume_role.as_ref()).await;
        Self {
            name: name.to_string(),
            client: aws_sdk_ecrpublic::Client::new(&base),
            timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Fetch for EcrPublicProvider {
    async fn fetch(&self) -> Result<Credentials, SourceError> {
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| {
                call_error(&self.name, self.timeout, &e, |message| {
                    EcrPublicError::Call(with_fix(message))
                })
            })?;
        credentials_from(&self.name, &out)
    }
}

/// The SDK's message with the fix for what went wrong, unless it already names one (a
/// missing identity does). ECR Public needs its own IAM actions: ECR's policy does not cover it.
fn with_fix(message: String) -> String {
    let fix = if message.contains("; fix:") {
        return message;
    } else if message.contains("; credentials from ") {
        // Loading the identity failed (an STS refusal says "not authorized" too): the fix is
        // in that identity's setup, not in ECR Public's permissions.
        "the AWS identity named above could not be loaded: for web identity check the role's trust policy (the token's issuer, audience sts.amazonaws.com and subject) and the token file; for an endpoint, that it answers"
    } else if ["AccessDenied", "not authorized", "UnauthorizedOperation"]
        .iter()
        .any(|k| message.contains(k))
    {
        "allow ecr-public:GetAuthorizationToken and sts:GetServiceBearerToken (Resource \"*\") to the refresher's AWS identity"
    } else if [
        "InvalidSignature",
        "SignatureDoesNotMatch",
        "UnrecognizedClient",
        "InvalidClientTokenId",
        "ExpiredToken",
    ]
    .iter()
    .any(|k| message.contains(k))
    {
        "AWS refused the credentials the call was signed with: check the identity in use (see docs/install.md) and the clock"
    } else {
        "check network access to api.ecr-public.us-east-1.amazonaws.com (ECR Public's API is in us-east-1 only), or raise --provider-timeout"
    };
    format!("{message}; fix: {fix}")
}

/// Turns the SDK answer into credentials for `public.ecr.aws`. Unlike ECR's, the answer is
/// one `authorizationData` object with no endpoint: the registry is always the same host.
pub fn credentials_from(
    name: &str,
    out: &GetAuthorizationTokenOutput,
) -> Result<Credentials, SourceError> {
    let bad =
        |problem: &str| SourceError::failed(name, EcrPublicError::Response(problem.to_string()));
    let data = out
        .authorization_data()
        .ok_or_else(|| bad("authorizationData is missing"))?;
    token_credentials(
        name,
        REGISTRY.to_string(),
        data.authorization_token(),
        data.expires_at(),
    )
    .map_err(|p| bad(&p))
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecrpublic::primitives::DateTime as AwsDateTime;
    use aws_sdk_ecrpublic::types::AuthorizationData;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn output(token: &str) -> GetAuthorizationTokenOutput {
        GetAuthorizationTokenOutput::builder()
            .authorization_data(
                AuthorizationData::builder()
                    .authorization_token(token)
                    .expires_at(AwsDateTime::from_secs(1_900_000_000))
                    .build(),
            )
            .build()
    }

    #[test]
    fn decodes_user_password_and_expiry_for_public_ecr_aws() {
        let c = credentials_from("pub", &output(&STANDARD.encode("AWS:pa:ss"))).unwrap();
        assert_eq!(c.source, "pub");
        let e = &c.entries[0];
        assert_eq!(e.server, "public.ecr.aws");
        assert_eq!((e.username.as_str(), e.password()), ("AWS", "pa:ss"));
        assert_eq!(c.expires_at.unwrap().timestamp(), 1_900_000_000);
    }

    #[test]
    fn unusable_answers_are_ecr_public_response_errors_without_the_token() {
        for (out, want) in [
            (output("not base64!!"), "not base64"),
            (output(&STANDARD.encode("nocolonsecret")), "user:password"),
            (output(&STANDARD.encode("AWS:")), "empty"),
            (
                GetAuthorizationTokenOutput::builder().build(),
                "authorizationData is missing",
            ),
            (
                GetAuthorizationTokenOutput::builder()
                    .authorization_data(AuthorizationData::builder().build())
                    .build(),
                "authorizationToken is missing",
            ),
        ] {
            let err = credentials_from("pub", &out).unwrap_err();
            assert_eq!(err.metric_label(), "ecr_public_response");
            let text = err.to_string();
            assert!(text.contains(want), "{text}");
            assert!(text.contains("source pub: ECR Public"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn call_failures_name_the_fix_once() {
        let denied =
            with_fix("service error: AccessDeniedException: User x is not authorized".into());
        assert!(
            denied.ends_with(
                "sts:GetServiceBearerToken (Resource \"*\") to the refresher's AWS identity"
            ),
            "{denied}"
        );
        let signed = with_fix("service error: InvalidSignatureException: Credential should be scoped to a valid region".into());
        assert!(
            signed.contains("fix: AWS refused the credentials"),
            "{signed}"
        );
        let net = with_fix("dispatch failure: io error: Connection refused".into());
        assert!(
            net.contains("fix: check network access to api.ecr-public.us-east-1"),
            "{net}"
        );
        let named = "no credentials found in chain; fix: give the refresher an AWS identity";
        assert_eq!(with_fix(named.into()), named);
        // An STS refusal while loading the identity is about its trust policy, not ECR Public.
        let sts = with_fix("failed to load credentials: AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity; credentials from web identity (IRSA): STS AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role/x with the token in /t".into());
        assert!(
            sts.contains("fix: the AWS identity named above could not be loaded"),
            "{sts}"
        );
        assert!(!sts.contains("ecr-public:GetAuthorizationToken"), "{sts}");
    }

    #[tokio::test]
    async fn the_client_is_pinned_to_us_east_1() {
        let p = EcrPublicProvider::new(
            "pub",
            &EcrPublicConfig { assume_role: None },
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(
            p.client.config().region().map(|r| r.as_ref()),
            Some("us-east-1")
        );
    }
}
