//! The two POSTs of an ACR fetch: the Entra token for the client (proven by a federated token
//! or a client secret), then the registry's `/oauth2/exchange` for a refresh token, and what
//! their answers and errors say.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{AcrConfig, AzureCredential};
use crate::input::is_guid;
use crate::sources::http::{self, EndpointError, Step, field_str};

const FORM: &str = "application/x-www-form-urlencoded";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

const ENTRA: &str = "Entra token request";
const EXCHANGE: &str = "registry token exchange";

#[derive(Debug, thiserror::Error)]
pub enum AcrError {
    #[error("{what} {}: {problem}; fix: {fix}", path.display())]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        problem: String,
        fix: &'static str,
    },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
}

pub(super) async fn refresh_token(
    cfg: &AcrConfig,
) -> Result<(Zeroizing<String>, DateTime<Utc>), AcrError> {
    let access_token = entra_token(cfg).await?;
    let url = format!("https://{}/oauth2/exchange", cfg.login_server);
    let step = Step {
        name: EXCHANGE,
        url: &url,
    };
    let form = Zeroizing::new({
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "access_token")
            .append_pair("service", &cfg.login_server)
            .append_pair("access_token", &access_token);
        // Optional for the registry; the Azure CLI sends the tenant's ID, and a domain is not one.
        if is_guid(&cfg.tenant_id) {
            form.append_pair("tenant", &cfg.tenant_id);
        }
        form.finish()
    });
    let answer = step.post(FORM, None, form.as_bytes()).await?;
    refresh_token_from(step, &answer)
}

/// The refresh token of the exchange's answer and its expiry.
fn refresh_token_from(
    step: Step,
    answer: &http::Answer,
) -> Result<(Zeroizing<String>, DateTime<Utc>), AcrError> {
    let doc = parse_answer(step, answer)?;
    let token = Zeroizing::new(field_str(&doc, "refresh_token").map_err(step.bad(answer))?);
    let expires_at = jwt_expiry(&token).map_err(step.bad(answer))?;
    Ok((token, expires_at))
}

/// An access token for the registry audience (`scope`), by client credentials.
async fn entra_token(cfg: &AcrConfig) -> Result<Zeroizing<String>, AcrError> {
    let url = format!("{}/{}/oauth2/v2.0/token", cfg.authority, cfg.tenant_id);
    let (proof_field, proof) = match &cfg.credential {
        AzureCredential::FederatedToken(path) => (
            "client_assertion",
            read(
                "federated token",
                path,
                "mount the pod's projected ServiceAccount token there (audience api://AzureADTokenExchange; the Workload Identity webhook does this)",
            )?,
        ),
        AzureCredential::ClientSecret(path) => (
            "client_secret",
            read(
                "client secret",
                path,
                "mount the Secret holding the service principal's client secret there",
            )?,
        ),
    };
    let form = Zeroizing::new({
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &cfg.client_id)
            .append_pair("scope", &cfg.scope);
        if proof_field == "client_assertion" {
            form.append_pair("client_assertion_type", ASSERTION_TYPE);
        }
        form.append_pair(proof_field, &proof).finish()
    });
    let step = Step {
        name: ENTRA,
        url: &url,
    };
    let answer = step.post(FORM, None, form.as_bytes()).await?;
    let doc = parse_answer(step, &answer)?;
    Ok(Zeroizing::new(
        field_str(&doc, "access_token").map_err(step.bad(&answer))?,
    ))
}

fn read(
    what: &'static str,
    path: &std::path::Path,
    fix: &'static str,
) -> Result<Zeroizing<String>, AcrError> {
    let fail = |problem| AcrError::File {
        what,
        path: path.to_path_buf(),
        problem,
        fix,
    };
    let text = Zeroizing::new(crate::input::read_small_file(path).map_err(fail)?);
    // As every credential file is read (a byte-order mark, a trailing newline, empty or too
    // large refused); a token or secret has no surrounding whitespace of its own.
    let value = crate::input::clean_value(&text).map_err(fail)?;
    Ok(Zeroizing::new(value.trim().to_string()))
}

/// The `exp` claim of the registry's refresh token (a JWT). The token is ours to use, not to
/// verify: the registry checks it; its expiry is all we read.
fn jwt_expiry(token: &str) -> Result<DateTime<Utc>, String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("the refresh token is not a JWT (no payload)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the refresh token's payload is not base64url")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| "the refresh token's payload is not JSON")?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or("the refresh token has no exp claim (a number)")?;
    DateTime::from_timestamp(exp, 0).ok_or_else(|| "the refresh token's exp is out of range".into())
}

/// The registry's error answer, as Docker registries write it.
#[derive(Deserialize)]
struct RegistryErrors {
    errors: Vec<RegistryError>,
}

#[derive(Deserialize)]
struct RegistryError {
    code: Option<String>,
    message: Option<String>,
}

/// A success answer as a JSON object, or the refusal: Entra's OAuth error or the registry's.
fn parse_answer(step: Step, answer: &http::Answer) -> Result<serde_json::Value, EndpointError> {
    step.json(
        answer,
        |body| {
            http::oauth_error(body)
                .map(|(code, description)| {
                    // Entra appends trace and correlation IDs on further lines.
                    let first = description.lines().next().unwrap_or_default().to_string();
                    (code, first)
                })
                .or_else(|| {
                    let e = serde_json::from_slice::<RegistryErrors>(body)
                        .ok()?
                        .errors
                        .into_iter()
                        .next()?;
                    Some((e.code.unwrap_or_default(), e.message.unwrap_or_default()))
                })
        },
        |_, description, status| fix_for(step.name, description, status),
    )
}

fn fix_for(step: &str, description: &str, status: u16) -> &'static str {
    // Entra's AADSTS codes say which part of the setup is wrong.
    let aadsts = |code: &str| description.starts_with(code);
    match step {
        ENTRA if aadsts("AADSTS700213") || aadsts("AADSTS70021") || aadsts("AADSTS700212") => {
            "add a federated credential to the app registration (or managed identity) with this cluster's issuer, subject system:serviceaccount:<namespace>:<serviceaccount> and audience api://AzureADTokenExchange"
        }
        ENTRA if aadsts("AADSTS700024") => {
            "the federated token has expired: check that the projected token is refreshed (the kubelet rotates it) and the clock"
        }
        ENTRA if aadsts("AADSTS7000215") || aadsts("AADSTS7000222") => {
            "the client secret is wrong or expired: create a new one and update the Secret mounted at clientSecretFile"
        }
        ENTRA if aadsts("AADSTS700016") => {
            "check clientId (AZURE_CLIENT_ID): no such application in the tenant"
        }
        ENTRA if aadsts("AADSTS90002") => "check tenantId (AZURE_TENANT_ID): no such tenant",
        ENTRA => "check tenantId, clientId and the credential against the app registration",
        // The exchange takes any valid Entra token of the tenant; AcrPull is checked later, when
        // a pull asks for a repository token.
        _ if status == 401 || status == 403 => {
            "the registry refused the Entra token: check that the registry is in this tenant, that its Entra authentication is on (an ARM-audience-only policy refuses nothing here; a disabled one refuses all), and the clock (AcrPull is checked at pull time, not here)"
        }
        _ if status == 404 => {
            "check loginServer: the registry must exist and have Entra authentication enabled"
        }
        _ => "check loginServer and the registry's authentication settings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(claims))
    }

    #[test]
    fn a_credential_file_is_cleaned_like_every_other() {
        let path = std::env::temp_dir().join(format!("regcred-acr-read-{}", std::process::id()));
        // A Windows editor's byte-order mark and a trailing newline are not part of it.
        std::fs::write(&path, "\u{feff}s3cret~value\r\n").unwrap();
        assert_eq!(
            read("client secret", &path, "f").unwrap().as_str(),
            "s3cret~value"
        );
        std::fs::write(&path, "\u{feff}\n").unwrap();
        let e = read("client secret", &path, "f").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_expiry_is_the_refresh_tokens_exp_claim() {
        let at = jwt_expiry(&jwt(r#"{"exp":1790000000,"grant_type":"refresh_token"}"#));
        assert_eq!(at.unwrap().timestamp(), 1_790_000_000);
        for (token, problem) in [
            ("opaque", "not a JWT"),
            ("a.!!!.c", "not base64url"),
            (&jwt("[1]") as &str, "no exp claim"),
            (&jwt(r#"{"exp":"soon"}"#), "no exp claim"),
        ] {
            let e = jwt_expiry(token).unwrap_err();
            assert!(e.contains(problem), "{token}: {e}");
        }
    }

    #[test]
    fn entra_and_registry_refusals_become_code_description_and_fix() {
        let e = parse_answer(
            Step {
                name: ENTRA,
                url: "u",
            },
            &http::Answer::of(400, r#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:a:b'.\r\nTrace ID: 1\r\nCorrelation ID: 2","error_codes":[700213]}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("invalid_client: AADSTS700213: No matching federated identity record"),
            "{e}"
        );
        assert!(!e.contains("Trace ID"), "{e}");
        assert!(e.contains("fix: add a federated credential"), "{e}");
        let e = parse_answer(
            Step {
                name: EXCHANGE,
                url: "u",
            },
            &http::Answer::of(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("UNAUTHORIZED: authentication required"), "{e}");
        assert!(
            e.contains("fix: the registry refused the Entra token"),
            "{e}"
        );
    }

    #[test]
    fn a_token_never_reaches_the_message_of_a_bad_answer() {
        let step = Step {
            name: EXCHANGE,
            url: "u",
        };
        // A refresh token without exp, as JSON and as a bare body: refused, never quoted.
        let no_exp = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2lnbmF0dXJl";
        for body in [
            format!(r#"{{"refresh_token":"{no_exp}"}}"#),
            no_exp.to_string(),
        ] {
            let Err(e) = refresh_token_from(step, &http::Answer::of(200, &body)) else {
                panic!("a refresh token without exp was taken");
            };
            let e = e.to_string();
            for part in no_exp.split('.') {
                assert!(!e.contains(part), "{e}");
            }
        }
        let good = jwt(r#"{"exp":1790000000}"#);
        let (token, at) = refresh_token_from(
            step,
            &http::Answer::of(200, &format!(r#"{{"refresh_token":"{good}"}}"#)),
        )
        .unwrap();
        assert_eq!(
            (token.as_str(), at.timestamp()),
            (good.as_str(), 1_790_000_000)
        );
    }
}
