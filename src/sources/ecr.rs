//! AWS ECR: `GetAuthorizationToken` with the default credential chain (env, profile, IRSA web
//! identity, EKS Pod Identity, IMDS) and an optional role assumed through STS (see `aws`).

use std::time::Duration;

use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenOutput;
use serde::Deserialize;

use super::aws::{
    AssumeRole, assume_role, call_error, is_aws_region, sdk_config, token_credentials,
};
use super::{Fetch, Kind, Labelled, SourceError};
use crate::config_error::{Checked, ConfigError};
use crate::credentials::Credentials;

/// `ecr:` as the file holds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EcrFile {
    pub region: String,
    pub account_id: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EcrConfig {
    pub region: String,
    pub account_id: Option<String>,
    pub assume_role: Option<AssumeRole>,
}

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("ECR GetAuthorizationToken failed: {0}")]
    Call(String),
    #[error("ECR answered with an unusable token: {0}")]
    Response(String),
}

impl Labelled for EcrError {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Call(_) => "ecr_call",
            Self::Response(_) => "ecr_response",
        }
    }
}

pub struct Spec;

impl Kind for Spec {
    type File = EcrFile;
    type Config = EcrConfig;
    type Fetcher = EcrProvider;
    type Error = EcrError;

    fn check(field: &str, file: EcrFile) -> Checked<EcrConfig> {
        ecr(field, file)
    }

    fn recipe(e: &EcrConfig) -> String {
        let role = e.assume_role.as_ref();
        format!(
            "ecr region={} account={} role={} external-id={}",
            e.region,
            e.account_id.as_deref().unwrap_or("-"),
            role.map_or("-", |r| r.role_arn.as_str()),
            // Whether one is set, never its value.
            role.is_some_and(|r| r.external_id.is_some()),
        )
    }

    /// Known only when the account is configured (else the caller's own, known at fetch).
    fn known_hosts(e: &EcrConfig) -> Vec<String> {
        e.account_id
            .iter()
            .map(|a| format!("{a}.dkr.ecr.{}.amazonaws.com", e.region))
            .collect()
    }

    async fn fetcher(name: &str, cfg: &EcrConfig, timeout: Duration) -> EcrProvider {
        EcrProvider::new(name, cfg, timeout).await
    }
}

fn ecr(field: &str, e: EcrFile) -> Checked<EcrConfig> {
    if !is_aws_region(&e.region) {
        return Err(ConfigError::invalid(
            &format!("{field}.region"),
            &format!("{:?} is not an AWS region", e.region),
            "use a region code such as us-east-1 or eu-central-1",
        ));
    }
    if let Some(acct) = &e.account_id
        && !(acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ConfigError::invalid(
            &format!("{field}.accountId"),
            &format!("{acct:?} is not a 12-digit AWS account ID"),
            "quote it as a string of 12 digits, e.g. accountId: \"123456789012\"",
        ));
    }
    let assume_role = assume_role(field, e.role_arn, e.external_id, e.session_name)?;
    Ok(EcrConfig {
        region: e.region,
        account_id: e.account_id,
        assume_role,
    })
}

pub struct EcrProvider {
    name: String,
    account_id: Option<String>,
    client: aws_sdk_ecr::Client,
    timeout: Duration,
}

impl EcrProvider {
    pub async fn new(name: &str, cfg: &EcrConfig, timeout: Duration) -> Self {
        let base = sdk_config(&cfg.region, timeout, cfg.assume_role.as_ref()).await;
        Self {
            name: name.to_string(),
            account_id: cfg.account_id.clone(),
            client: aws_sdk_ecr::Client::new(&base),
            timeout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Fetch for EcrProvider {
    async fn fetch(&self) -> Result<Credentials, SourceError> {
        let out = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| call_error(&self.name, self.timeout, &e, EcrError::Call))?;
        credentials_from(&self.name, self.account_id.as_deref(), &out)
    }
}

/// Turns the SDK answer into credentials. One token serves every registry the principal can
/// reach in the region, so for another account's registry only the host changes.
pub fn credentials_from(
    name: &str,
    account_id: Option<&str>,
    out: &GetAuthorizationTokenOutput,
) -> Result<Credentials, SourceError> {
    let bad = |problem: &str| SourceError::failed(name, EcrError::Response(problem.to_string()));
    let data = out
        .authorization_data()
        .first()
        .ok_or_else(|| bad("authorizationData is empty"))?;
    let endpoint = data
        .proxy_endpoint()
        .ok_or_else(|| bad("proxyEndpoint is missing"))?;
    let host = registry_host(endpoint, account_id).map_err(|p| bad(&p))?;
    token_credentials(name, host, data.authorization_token(), data.expires_at())
        .map_err(|p| bad(&p))
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
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

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
