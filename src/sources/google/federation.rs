//! Google Workload Identity Federation (`external_account` credential configurations): the
//! pod's projected ServiceAccount token is exchanged at Google's STS for a federated access
//! token, which is used as is or, with `service_account_impersonation_url`, exchanged once
//! more for a service account's access token (IAM `generateAccessToken`).
//!
//! gcp_auth 0.12 has no external accounts, and the official google-cloud-auth crate would
//! add a second HTTP stack (reqwest) and ~30 crates for two POSTs; this is those two POSTs
//! over the hyper/rustls client already in the binary.
//!
//! Everything is read again on each fetch: the configuration (a ConfigMap may change) and the
//! subject token (the kubelet rotates projected tokens). Tokens never reach a message: errors
//! carry Google's error code and description, the URL and the step, nothing sent.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::SCOPE;
use super::credential_config;
use super::credential_config::{ACCESS_TOKEN_TYPE, ExternalAccount, Problem, TOKEN_EXCHANGE};
use crate::sources::http::{self, EndpointError, Step, field_str, seconds};

const STS: &str = "STS token exchange";
const IMPERSONATION: &str = "service account impersonation";

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("credential configuration {}: {problem}", path.display())]
    Config { path: PathBuf, problem: Problem },
    #[error(
        "subject token {}: {problem}; fix: mount the pod's projected ServiceAccount token there (a serviceAccountToken volume with the pool provider's audience)",
        path.display()
    )]
    SubjectToken { path: PathBuf, problem: String },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

/// An access token and when it stops working.
pub struct Token {
    pub access_token: Zeroizing<String>,
    pub expires_at: DateTime<Utc>,
}

impl std::error::Error for Problem {}

/// Reads and checks the configuration at `path`, then runs the exchange.
pub async fn fetch(path: &Path) -> Result<Token, FederationError> {
    let config_error = |problem| FederationError::Config {
        path: path.to_path_buf(),
        problem,
    };
    let text = crate::input::read_small_file(path).map_err(|e| {
        config_error(Problem {
            field: "(file)",
            problem: e,
            fix: "mount the credential configuration there (a ConfigMap), or fix the path",
        })
    })?;
    let account = credential_config::parse(&text).map_err(config_error)?;
    exchange(&account).await
}

async fn exchange(account: &ExternalAccount) -> Result<Token, FederationError> {
    let subject = subject_token(account)?;
    let started = Utc::now();
    let form = Zeroizing::new(
        form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", TOKEN_EXCHANGE)
            .append_pair("audience", &account.audience)
            .append_pair("scope", SCOPE)
            .append_pair("requested_token_type", ACCESS_TOKEN_TYPE)
            .append_pair("subject_token", &subject)
            .append_pair("subject_token_type", &account.subject_token_type)
            .finish(),
    );
    let sts_step = Step {
        name: STS,
        url: &account.token_url,
    };
    let answer = sts_step
        .post("application/x-www-form-urlencoded", None, form.as_bytes())
        .await?;
    let sts = parse_answer(sts_step, &answer)?;
    let sts_token = Zeroizing::new(field_str(&sts, "access_token").map_err(sts_step.bad(&answer))?);
    let expires_in = seconds(&sts, "expires_in").map_err(sts_step.bad(&answer))?;
    let Some(imp) = &account.impersonation else {
        return Ok(Token {
            // Bounded so a nonsense answer cannot overflow the addition.
            expires_at: started
                + chrono::Duration::seconds(expires_in.min(u64::from(u32::MAX)) as i64),
            access_token: sts_token,
        });
    };
    let body = serde_json::json!({
        "scope": [SCOPE],
        "lifetime": format!("{}s", imp.lifetime_secs),
    });
    let step = Step {
        name: IMPERSONATION,
        url: &imp.url,
    };
    let answer = step
        .post(
            "application/json",
            Some(&sts_token),
            body.to_string().as_bytes(),
        )
        .await?;
    let iam = parse_answer(step, &answer)?;
    let access_token = Zeroizing::new(field_str(&iam, "accessToken").map_err(step.bad(&answer))?);
    let expire_time = field_str(&iam, "expireTime").map_err(step.bad(&answer))?;
    let expires_at = DateTime::parse_from_rfc3339(&expire_time)
        .map_err(|e| format!("expireTime {expire_time:?} is not an RFC 3339 time: {e}"))
        .map_err(step.bad(&answer))?
        .with_timezone(&Utc);
    Ok(Token {
        access_token,
        expires_at,
    })
}

/// The subject token as the file holds it now (text, or one field of a JSON object).
fn subject_token(account: &ExternalAccount) -> Result<Zeroizing<String>, FederationError> {
    let path = &account.subject_token_file;
    let fail = |problem: String| FederationError::SubjectToken {
        path: path.clone(),
        problem,
    };
    let text = Zeroizing::new(crate::input::read_small_file(path).map_err(fail)?);
    let token = match &account.subject_token_field {
        None => Zeroizing::new(text.trim().to_string()),
        Some(field) => {
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| fail("not a JSON object (format type json)".into()))?;
            let value = doc.get(field).and_then(|v| v.as_str()).ok_or_else(|| {
                fail(format!(
                    "no string field {field:?} (subject_token_field_name)"
                ))
            })?;
            Zeroizing::new(value.trim().to_string())
        }
    };
    if token.is_empty() {
        return Err(fail("empty".into()));
    }
    Ok(token)
}

/// IAM's error envelope `{"error": {"code", "message", "status"}}`.
#[derive(Deserialize)]
struct ApiEnvelope {
    error: ApiError,
}

#[derive(Deserialize)]
struct ApiError {
    message: Option<String>,
    status: Option<String>,
}

/// A success answer as a JSON object, or Google's refusal as an error: OAuth's shape (STS) or
/// the API envelope (IAM).
fn parse_answer(step: Step, answer: &http::Answer) -> Result<serde_json::Value, EndpointError> {
    step.json(
        answer,
        |body| {
            http::oauth_error(body).or_else(|| {
                let e = serde_json::from_slice::<ApiEnvelope>(body).ok()?.error;
                Some((e.status.unwrap_or_default(), e.message.unwrap_or_default()))
            })
        },
        |code, _, status| fix_for(step.name, code, status),
    )
}

fn fix_for(step: &str, code: &str, status: u16) -> &'static str {
    match (step, code, status) {
        (STS, "invalid_grant", _) => {
            "the subject token must come from the issuer the pool provider trusts, for an audience it allows (the token volume's audience; by default https://iam.googleapis.com/ followed by the provider's resource name), and be unexpired"
        }
        (STS, "invalid_target", _) => {
            "`audience` in the credential configuration must name an existing, enabled workload identity pool provider"
        }
        (STS, _, _) => "check the credential configuration against the pool provider",
        (_, _, 401) => "the federated token was refused; check the STS step and the clock",
        (_, _, 403) => {
            "grant the pool's principal roles/iam.workloadIdentityUser on the service account (gcloud iam service-accounts add-iam-policy-binding)"
        }
        (_, _, 404) => "check the service account's email in service_account_impersonation_url",
        _ => "check the service account impersonation settings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_error_shapes_become_code_and_description() {
        let e = parse_answer(
            Step { name: STS, url: "u" },
            &http::Answer::of(400, r#"{"error":"invalid_grant","error_description":"The audience in ID Token [x] does not match the expected audience."}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid_grant: The audience in ID Token"), "{e}");
        assert!(e.contains("fix: the subject token must come from"), "{e}");
        let e = parse_answer(
            Step {
                name: IMPERSONATION,
                url: "u",
            },
            &http::Answer::of(403, r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PERMISSION_DENIED: Permission"), "{e}");
        assert!(e.contains("roles/iam.workloadIdentityUser"), "{e}");
    }

    #[test]
    fn a_token_never_reaches_the_message_of_a_bad_answer() {
        let a = http::Answer::of(
            200,
            r#"{"access_token":"ya29.secret","expires_in":"ya29.secret"}"#,
        );
        let sts = Step {
            name: STS,
            url: "u",
        };
        let doc = parse_answer(sts, &a).unwrap();
        assert!(field_str(&doc, "access_token").is_ok());
        let e = seconds(&doc, "expires_in").unwrap_err();
        assert!(!e.contains("ya29.secret"), "{e}");
        let e = parse_answer(sts, &http::Answer::of(200, "ya29.secret"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("ya29.secret"), "{e}");
    }
}
