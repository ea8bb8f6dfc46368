//! AWS ECR: `GetAuthorizationToken` with the default credential chain (env, profile, IRSA web
//! identity, EKS Pod Identity, IMDS) and an optional role assumed through STS.
//!
//! The SDK is built on rustls with ring only: a second crypto provider in the process makes
//! rustls refuse to pick one and the kube client panic.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenOutput;
use aws_smithy_http_client::tls;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tracing::debug;
use zeroize::Zeroizing;

use super::ProviderError;
use crate::config::EcrConfig;
use crate::credentials::{Credentials, RegistryCredential};

pub struct EcrProvider {
    name: String,
    account_id: Option<String>,
    client: aws_sdk_ecr::Client,
    timeout: Duration,
}

/// The shared SDK configuration for one region, with the ring-only HTTPS client.
pub async fn sdk_config(region: &str, timeout: Duration) -> SdkConfig {
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
    loader
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(timeout)
                .build(),
        )
        .load()
        .await
}

impl EcrProvider {
    pub async fn new(name: &str, cfg: &EcrConfig, timeout: Duration) -> Self {
        let base = sdk_config(&cfg.region, timeout).await;
        let mut ecr_conf = aws_sdk_ecr::config::Builder::from(&base);
        if let Some(role) = &cfg.assume_role {
            let mut b = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
                .session_name(&role.session_name)
                .configure(&base);
            if let Some(id) = &role.external_id {
                b = b.external_id(id);
            }
            ecr_conf = ecr_conf.credentials_provider(b.build().await);
        }
        Self {
            name: name.to_string(),
            account_id: cfg.account_id.clone(),
            client: aws_sdk_ecr::Client::from_conf(ecr_conf.build()),
            timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn fetch(&self) -> Result<Credentials, ProviderError> {
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| call_error(&self.name, self.timeout, &e))?;
        credentials_from(&self.name, self.account_id.as_deref(), &out)
    }
}

/// The SDK's operation timeout and ours have the same length and race; whichever fires, the
/// failure is the same one and is counted and explained as a timeout.
fn call_error<E, R>(
    name: &str,
    timeout: Duration,
    e: &aws_sdk_ecr::error::SdkError<E, R>,
) -> ProviderError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        aws_sdk_ecr::error::SdkError::TimeoutError(_) => ProviderError::Timeout {
            source_name: name.to_string(),
            after: timeout,
        },
        _ => ProviderError::EcrCall {
            source_name: name.to_string(),
            message: explain(e),
        },
    }
}

/// The SDK's error as one line: its chain of causes (without the Debug dump that
/// `DisplayErrorContext` appends). When credentials could not be loaded, the chain says only
/// that, so the source of the SDK's default chain in use is named, with the fix.
fn explain<E, R>(e: &aws_sdk_ecr::error::SdkError<E, R>) -> String
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

/// Turns the SDK answer into credentials. One token serves every registry the principal can
/// reach in the region, so for another account's registry only the host changes.
pub fn credentials_from(
    name: &str,
    account_id: Option<&str>,
    out: &GetAuthorizationTokenOutput,
) -> Result<Credentials, ProviderError> {
    let bad = |problem: &str| ProviderError::EcrResponse {
        source_name: name.to_string(),
        problem: problem.to_string(),
    };
    let data = out
        .authorization_data()
        .first()
        .ok_or_else(|| bad("authorizationData is empty"))?;
    let token = data
        .authorization_token()
        .ok_or_else(|| bad("authorizationToken is missing"))?;
    let (username, password) = decode_token(token).map_err(|p| bad(&p))?;
    let endpoint = data
        .proxy_endpoint()
        .ok_or_else(|| bad("proxyEndpoint is missing"))?;
    let host = registry_host(endpoint, account_id).map_err(|p| bad(&p))?;
    let expires_at = data
        .expires_at()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()));
    debug!(host = %host, expires_at = ?expires_at, "ecr token received");
    Ok(Credentials {
        source: name.to_string(),
        entries: vec![RegistryCredential {
            server: host,
            username,
            password,
            email: None,
        }],
        expires_at,
        issued_at: chrono::Utc::now(),
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

/// `https://123.dkr.ecr.us-east-1.amazonaws.com` → `123.dkr.ecr.us-east-1.amazonaws.com`,
/// with the account swapped for `account_id` when one is configured.
pub fn registry_host(proxy_endpoint: &str, account_id: Option<&str>) -> Result<String, String> {
    let trimmed = proxy_endpoint.trim();
    let host = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "proxyEndpoint {proxy_endpoint:?} is not a registry URL"
        ));
    }
    match (account_id, host.split_once('.')) {
        (Some(acct), Some((_, rest))) => Ok(format!("{acct}.{rest}")),
        _ => Ok(host.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecr::primitives::DateTime as AwsDateTime;
    use aws_sdk_ecr::types::AuthorizationData;

    use super::*;

    #[test]
    fn an_sdk_operation_timeout_is_a_timeout() {
        type E = aws_sdk_ecr::error::SdkError<
            aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError,
            (),
        >;
        let timed_out: E = aws_sdk_ecr::error::SdkError::timeout_error("operation timeout");
        let e = call_error("ecr", Duration::from_secs(2), &timed_out);
        assert_eq!(e.metric_label(), "timeout");
        assert!(e.to_string().contains("no answer within 2s"), "{e}");
        let refused: E = aws_sdk_ecr::error::SdkError::construction_failure("no region");
        assert_eq!(
            call_error("ecr", Duration::from_secs(2), &refused).metric_label(),
            "ecr_call"
        );
    }

    fn output(token: &str) -> GetAuthorizationTokenOutput {
        GetAuthorizationTokenOutput::builder()
            .authorization_data(
                AuthorizationData::builder()
                    .authorization_token(token)
                    .proxy_endpoint("https://111122223333.dkr.ecr.eu-west-1.amazonaws.com")
                    .expires_at(AwsDateTime::from_secs(1_900_000_000))
                    .build(),
            )
            .build()
    }

    #[test]
    fn decodes_host_user_password_and_expiry() {
        let c = credentials_from("e", None, &output(&STANDARD.encode("AWS:pa:ss"))).unwrap();
        let e = &c.entries[0];
        assert_eq!(e.server, "111122223333.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!((e.username.as_str(), e.password()), ("AWS", "pa:ss"));
        assert_eq!(c.expires_at.unwrap().timestamp(), 1_900_000_000);
    }

    #[test]
    fn account_id_selects_the_other_registry() {
        let c = credentials_from(
            "e",
            Some("444455556666"),
            &output(&STANDARD.encode("AWS:p")),
        )
        .unwrap();
        assert_eq!(
            c.entries[0].server,
            "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn endpoints_are_trimmed_before_the_scheme_is_stripped() {
        for e in [
            " http://1.dkr.ecr.r.amazonaws.com/ ",
            "https://1.dkr.ecr.r.amazonaws.com",
            "\t1.dkr.ecr.r.amazonaws.com/\n",
        ] {
            assert_eq!(
                registry_host(e, None).unwrap(),
                "1.dkr.ecr.r.amazonaws.com",
                "{e:?}"
            );
        }
        for bad in ["", "https://", "https://h/path", " / "] {
            assert!(registry_host(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decoded_password_is_a_secret() {
        let (user, pass) = decode_token(&STANDARD.encode("AWS:tok-en")).unwrap();
        assert_eq!(user, "AWS");
        assert!(!format!("{pass:?}").contains("tok-en"));
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pass), "tok-en");
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        for (token, want) in [
            ("not base64!!", "not base64"),
            (&STANDARD.encode("nocolonsecret") as &str, "user:password"),
            (&STANDARD.encode(":secret"), "empty"),
            (&STANDARD.encode([0xff, 0xfe, b':', b'x']), "UTF-8"),
        ] {
            let err = credentials_from("e", None, &output(token))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let empty = GetAuthorizationTokenOutput::builder().build();
        assert!(
            credentials_from("e", None, &empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
