//! What the AWS sources (`ecr`, `ecr_public`) share: the SDK configuration (default credential
//! chain, optional assumed role, operation timeout, our app name in the User-Agent), the
//! translation of an SDK failure into one line that names the fix, and the `AWS:<password>`
//! token both services hand out. Never logs or quotes a token.
//!
//! The SDK is built on rustls with ring only: a second crypto provider in the process makes
//! rustls refuse to pick one and the kube client panic.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
// Every AWS SDK crate re-exports this one smithy type; ECR's name serves ECR Public too.
use aws_sdk_ecr::config::SharedCredentialsProvider;
use aws_sdk_ecr::error::SdkError;
use aws_sdk_ecr::primitives::DateTime as AwsDateTime;
use aws_smithy_http_client::tls;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tracing::debug;
use zeroize::Zeroizing;

use super::{KindError, SourceError};
use crate::credentials::{Credentials, RegistryCredential};

mod check;

pub use check::AssumeRole;
pub(super) use check::{assume_role, is_aws_region};

/// The SDK configuration for one region, with the ring-only HTTPS client; with `role`, its
/// credentials are that role's, assumed through STS from the default chain's.
pub async fn sdk_config(region: &str, timeout: Duration, role: Option<&AssumeRole>) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .http_client(http);
    // `app/regcred-refresher` in the SDK's User-Agent: CloudTrail's userAgent field tells
    // our calls from other clients of the same role.
    let loader = match aws_config::AppName::new("regcred-refresher") {
        Ok(name) => loader.app_name(name),
        Err(_) => loader,
    };
    let base = loader
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(timeout)
                .build(),
        )
        .load()
        .await;
    let Some(role) = role else {
        return base;
    };
    // Configured from `base`, so STS is reached through the same endpoint, client and timeout.
    let mut b = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
        .session_name(&role.session_name)
        .configure(&base);
    if let Some(id) = &role.external_id {
        b = b.external_id(id);
    }
    let assumed = SharedCredentialsProvider::new(b.build().await);
    base.into_builder().credentials_provider(assumed).build()
}

/// The SDK's operation timeout and ours have the same length and race; whichever fires, the
/// failure is the same one and is counted and explained as a timeout. Any other failure
/// becomes `other(message)`.
pub fn call_error<E, R, K>(
    name: &str,
    timeout: Duration,
    e: &SdkError<E, R>,
    other: impl FnOnce(String) -> K,
) -> SourceError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
    K: Into<KindError>,
{
    match e {
        SdkError::TimeoutError(_) => SourceError::Timeout {
            source_name: name.to_string(),
            after: timeout,
        },
        _ => SourceError::failed(name, other(explain(e))),
    }
}

/// The SDK's error as one line: its chain of causes (without the Debug dump that
/// `DisplayErrorContext` appends). When credentials could not be loaded, the chain says only
/// that, so the source of the SDK's default chain in use is named, with the fix.
fn explain<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    // One line: the chain's "Attempted:" list comes one provider per line.
    let mut msg = parts
        .join(": ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace(":;", ":");
    // aws-credential-types' CredentialsError variants, by their Display.
    let loading = |p: &String| {
        [
            "credentials provider",
            "credential provider",
            "loading credentials",
            "credentials error",
        ]
        .iter()
        .any(|k| p.contains(k))
    };
    if parts.iter().any(loading) {
        if msg.contains("no credentials found in chain") {
            msg.push_str("; fix: give the refresher an AWS identity: IRSA (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity, the node's instance profile (IMDS), or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
        } else {
            msg.push_str("; credentials from ");
            msg.push_str(&credential_source());
        }
    }
    msg
}

/// Which source of the SDK's default chain was in use (it tries, in order: environment,
/// profile, web identity, container endpoint, IMDS, and stops at the first configured one).
fn credential_source() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if var("AWS_ACCESS_KEY_ID").is_some() {
        return "the environment (AWS_ACCESS_KEY_ID)".into();
    }
    if let Some(p) = var("AWS_PROFILE") {
        return format!("profile {p:?} (AWS_PROFILE)");
    }
    if let (Some(role), Some(file)) = (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        return format!(
            "web identity (IRSA): STS AssumeRoleWithWebIdentity for {role} with the token in {file}"
        );
    }
    if let Some(uri) = var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        return format!(
            "the container credentials endpoint {uri} (EKS Pod Identity agent or ECS; AWS_CONTAINER_CREDENTIALS_FULL_URI)"
        );
    }
    if let Some(uri) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return format!("the ECS container credentials endpoint http://169.254.170.2{uri}");
    }
    "EC2 instance metadata (IMDS at 169.254.169.254: the node's instance profile)".into()
}

/// One registry's credentials from an `authorizationToken` and its `expiresAt`, as ECR and ECR
/// Public both answer them. The problem, if any, is for the caller's own response error.
pub fn token_credentials(
    name: &str,
    host: String,
    token: Option<&str>,
    expires_at: Option<&AwsDateTime>,
) -> Result<Credentials, String> {
    let token = token.ok_or_else(|| "authorizationToken is missing".to_string())?;
    let (username, password) = decode_token(token)?;
    let expires_at =
        expires_at.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()));
    debug!(host = %host, expires_at = ?expires_at, "aws token received");
    Ok(Credentials {
        source: name.to_string(),
        entries: vec![RegistryCredential {
            server: host,
            username,
            password,
            email: None,
        }],
        expires_at,
        issued_at: Utc::now(),
    })
}

/// `authorizationToken` is base64 of `AWS:<password>`; anything else is refused. The error
/// never quotes the token, and the decoded buffers are zeroized.
pub fn decode_token(token: &str) -> Result<(String, SecretString), String> {
    let raw = Zeroizing::new(
        STANDARD
            .decode(token.trim())
            .map_err(|_| "authorizationToken is not base64".to_string())?,
    );
    let text =
        std::str::from_utf8(&raw).map_err(|_| "authorizationToken is not UTF-8".to_string())?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| "authorizationToken does not decode to user:password".to_string())?;
    if user.is_empty() || pass.is_empty() {
        return Err("authorizationToken has an empty user or password".into());
    }
    Ok((user.to_string(), SecretString::from(pass)))
}

#[cfg(test)]
mod tests {
    use super::*;

    type E =
        SdkError<aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError, ()>;

    #[test]
    fn an_sdk_operation_timeout_is_a_timeout() {
        let call = crate::sources::ecr::EcrError::Call;
        let timed_out: E = SdkError::timeout_error("operation timeout");
        let e = call_error("ecr", Duration::from_secs(2), &timed_out, call);
        assert_eq!(e.metric_label(), "timeout");
        assert!(e.to_string().contains("no answer within 2s"), "{e}");
        let refused: E = SdkError::construction_failure("no region");
        let e = call_error("ecr", Duration::from_secs(2), &refused, call);
        assert_eq!(e.metric_label(), "ecr_call");
        assert!(e.to_string().contains("no region"), "{e}");
    }

    #[test]
    fn decoded_password_is_a_secret() {
        let (user, pass) = decode_token(&STANDARD.encode("AWS:tok-en")).unwrap();
        assert_eq!(user, "AWS");
        assert!(!format!("{pass:?}").contains("tok-en"));
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pass), "tok-en");
    }

    #[tokio::test]
    async fn the_region_is_the_one_asked_for_and_a_role_replaces_the_chain() {
        let plain = sdk_config("us-east-1", Duration::from_secs(3), None).await;
        assert_eq!(plain.region().map(|r| r.as_ref()), Some("us-east-1"));
        let role = AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/pull".into(),
            external_id: None,
            session_name: "regcred-refresher".into(),
        };
        let assumed = sdk_config("us-east-1", Duration::from_secs(3), Some(&role)).await;
        let debug = format!("{:?}", assumed.credentials_provider());
        assert!(debug.contains("AssumeRole"), "{debug}");
        assert!(
            !format!("{:?}", plain.credentials_provider()).contains("AssumeRole"),
            "no role configured"
        );
    }
}
