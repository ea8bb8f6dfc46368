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

pub mod credential_config;

use credential_config::{ACCESS_TOKEN_TYPE, ExternalAccount, Problem, TOKEN_EXCHANGE};

use super::google::SCOPE;
use super::http::{self, clip, field_str, seconds};

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
    #[error("{step} at {url}: {message}; fix: check network access to the endpoint")]
    Unreachable {
        step: &'static str,
        url: String,
        message: String,
    },
    #[error("{step} at {url} refused (HTTP {status}): {code}: {description}; fix: {fix}")]
    Refused {
        step: &'static str,
        url: String,
        status: u16,
        code: String,
        description: String,
        fix: &'static str,
    },
    #[error("{step} at {url}: unusable answer (HTTP {status}): {problem}")]
    Answer {
        step: &'static str,
        url: String,
        status: u16,
        problem: String,
    },
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
    let text = crate::config::read_small_file(path).map_err(|e| {
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
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", TOKEN_EXCHANGE)
        .append_pair("audience", &account.audience)
        .append_pair("scope", SCOPE)
        .append_pair("requested_token_type", ACCESS_TOKEN_TYPE)
        .append_pair("subject_token", &subject)
        .append_pair("subject_token_type", &account.subject_token_type)
        .finish();
    let answer = call(
        STS,
        &account.token_url,
        "application/x-www-form-urlencoded",
        None,
        Zeroizing::new(form.into_bytes()),
    )
    .await?;
    let sts = parse_answer(STS, &account.token_url, &answer)?;
    let sts_token = Zeroizing::new(field_str(&sts, "access_token").map_err(bad(
        STS,
        &account.token_url,
        &answer,
    ))?);
    let expires_in = seconds(&sts, "expires_in").map_err(bad(STS, &account.token_url, &answer))?;
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
    let answer = call(
        IMPERSONATION,
        &imp.url,
        "application/json",
        Some(&sts_token),
        Zeroizing::new(body.to_string().into_bytes()),
    )
    .await?;
    let iam = parse_answer(IMPERSONATION, &imp.url, &answer)?;
    let access_token = Zeroizing::new(field_str(&iam, "accessToken").map_err(bad(
        IMPERSONATION,
        &imp.url,
        &answer,
    ))?);
    let expire_time =
        field_str(&iam, "expireTime").map_err(bad(IMPERSONATION, &imp.url, &answer))?;
    let expires_at = DateTime::parse_from_rfc3339(&expire_time)
        .map_err(|e| format!("expireTime {expire_time:?} is not an RFC 3339 time: {e}"))
        .map_err(bad(IMPERSONATION, &imp.url, &answer))?
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
    let text = Zeroizing::new(crate::config::read_small_file(path).map_err(fail)?);
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

async fn call(
    step: &'static str,
    url: &str,
    content_type: &str,
    bearer: Option<&str>,
    body: Zeroizing<Vec<u8>>,
) -> Result<http::Answer, FederationError> {
    http::post(url, content_type, bearer, body.to_vec())
        .await
        .map_err(|message| FederationError::Unreachable {
            step,
            url: url.to_string(),
            message,
        })
}

/// Turns a problem with a success answer into the error naming the step and URL.
fn bad<'a>(
    step: &'static str,
    url: &'a str,
    answer: &'a http::Answer,
) -> impl Fn(String) -> FederationError + 'a {
    move |problem| FederationError::Answer {
        step,
        url: url.to_string(),
        status: answer.status.as_u16(),
        problem,
    }
}

/// Google's two error shapes: OAuth's `{"error", "error_description"}` (STS) and the API
/// envelope `{"error": {"code", "message", "status"}}` (IAM).
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorAnswer {
    OAuth {
        error: String,
        error_description: Option<String>,
    },
    Api {
        error: ApiError,
    },
}

#[derive(Deserialize)]
struct ApiError {
    message: Option<String>,
    status: Option<String>,
}

/// A success answer as a JSON object, or Google's refusal as an error.
fn parse_answer(
    step: &'static str,
    url: &str,
    answer: &http::Answer,
) -> Result<serde_json::Value, FederationError> {
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        return match serde_json::from_slice::<serde_json::Value>(&answer.body) {
            Ok(doc) if doc.is_object() => Ok(doc),
            _ => Err(bad(step, url, answer)("not a JSON object".to_string())),
        };
    }
    let (code, description) = match serde_json::from_slice::<ErrorAnswer>(&answer.body) {
        Ok(ErrorAnswer::OAuth {
            error,
            error_description,
        }) => (error, error_description.unwrap_or_default()),
        Ok(ErrorAnswer::Api { error }) => (
            error.status.unwrap_or_default(),
            error.message.unwrap_or_default(),
        ),
        Err(_) => (
            "-".to_string(),
            "an answer that is not Google's error JSON".to_string(),
        ),
    };
    Err(FederationError::Refused {
        step,
        url: url.to_string(),
        status,
        fix: fix_for(step, &code, status),
        code: clip(&code),
        description: clip(&description),
    })
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

    fn answer(status: u16, body: &str) -> http::Answer {
        http::Answer {
            status: ::http::StatusCode::from_u16(status).unwrap(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn google_error_shapes_become_code_and_description() {
        let e = parse_answer(
            STS,
            "u",
            &answer(400, r#"{"error":"invalid_grant","error_description":"The audience in ID Token [x] does not match the expected audience."}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid_grant: The audience in ID Token"), "{e}");
        assert!(e.contains("fix: the subject token must come from"), "{e}");
        let e = parse_answer(
            IMPERSONATION,
            "u",
            &answer(403, r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PERMISSION_DENIED: Permission"), "{e}");
        assert!(e.contains("roles/iam.workloadIdentityUser"), "{e}");
    }

    #[test]
    fn a_token_never_reaches_the_message_of_a_bad_answer() {
        let a = answer(
            200,
            r#"{"access_token":"ya29.secret","expires_in":"ya29.secret"}"#,
        );
        let doc = parse_answer(STS, "u", &a).unwrap();
        assert!(field_str(&doc, "access_token").is_ok());
        let e = seconds(&doc, "expires_in").unwrap_err();
        assert!(!e.contains("ya29.secret"), "{e}");
        let e = parse_answer(STS, "u", &answer(200, "ya29.secret"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("ya29.secret"), "{e}");
    }
}
