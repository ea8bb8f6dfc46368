//! The `external_account` credential configuration file (what `gcloud iam
//! workload-identity-pools create-cred-config` writes), parsed and checked. Pure: the caller
//! reads the file, so the same check runs at start (exit 2, naming the field) and at every
//! fetch (the file is read again, as a mounted ConfigMap may change).
//!
//! Only what a Kubernetes pod needs is accepted: a subject token from a file (the projected
//! ServiceAccount token). URL, executable and AWS-sourced subject tokens are refused by name
//! rather than ignored, so a config made for another platform fails at start, not at 3 a.m.

use std::path::PathBuf;

use serde::Deserialize;

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Google's own default for impersonated tokens; the IAM API allows at most one hour unless an
/// organisation policy extends it.
const DEFAULT_LIFETIME_SECS: u32 = 3600;
const MAX_LIFETIME_SECS: u32 = 43_200;

/// A checked credential configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAccount {
    /// The workload identity pool provider, `//iam.googleapis.com/projects/…/providers/…`.
    pub audience: String,
    pub subject_token_type: String,
    pub token_url: String,
    pub subject_token_file: PathBuf,
    /// `format.type: json`: the field of the file's JSON object that holds the token.
    pub subject_token_field: Option<String>,
    pub impersonation: Option<Impersonation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// `…/serviceAccounts/<email>:generateAccessToken`.
    pub url: String,
    pub lifetime_secs: u32,
}

/// What is wrong, in the configuration file's own field names, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field {}: {}; fix: {}",
            self.field, self.problem, self.fix
        )
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    service_account_impersonation: Option<RawImpersonation>,
    credential_source: Option<RawSource>,
}

#[derive(Deserialize)]
struct RawImpersonation {
    token_lifetime_seconds: Option<u32>,
}

#[derive(Deserialize)]
struct RawSource {
    file: Option<PathBuf>,
    url: Option<String>,
    executable: Option<serde_json::Value>,
    environment_id: Option<String>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawFormat {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

fn problem(field: &'static str, problem: impl Into<String>, fix: &'static str) -> Problem {
    Problem {
        field,
        problem: problem.into(),
        fix,
    }
}

/// The `type` of a Google credentials JSON, if it is one.
pub fn credential_type(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("type")?
        .as_str()
        .map(str::to_string)
}

pub fn parse(text: &str) -> Result<ExternalAccount, Problem> {
    let raw: RawFile = serde_json::from_str(text).map_err(|e| {
        problem(
            "(file)",
            format!("not an external_account credential configuration: {e}"),
            "regenerate it with gcloud iam workload-identity-pools create-cred-config",
        )
    })?;
    if raw.kind.as_deref() != Some("external_account") {
        return Err(problem(
            "type",
            format!(
                "{:?} is not \"external_account\"",
                raw.kind.unwrap_or_default()
            ),
            "regenerate it with gcloud iam workload-identity-pools create-cred-config",
        ));
    }
    let audience = required(
        raw.audience,
        "audience",
        "set it to the pool provider, //iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>",
    )?;
    let subject_token_type = required(
        raw.subject_token_type,
        "subject_token_type",
        "set it to urn:ietf:params:oauth:token-type:jwt for a Kubernetes ServiceAccount token",
    )?;
    let token_url = required(
        raw.token_url,
        "token_url",
        "set it to https://sts.googleapis.com/v1/token",
    )?;
    endpoint(
        "token_url",
        &token_url,
        "use https://sts.googleapis.com/v1/token",
    )?;
    let source = raw.credential_source.ok_or_else(|| {
        problem(
            "credential_source",
            "missing",
            "add {\"file\": \"<path of the projected ServiceAccount token>\"}",
        )
    })?;
    let (subject_token_file, subject_token_field) = file_source(source)?;
    let impersonation = match raw.service_account_impersonation_url {
        None => None,
        Some(url) => {
            endpoint(
                "service_account_impersonation_url",
                &url,
                "use https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/<email>:generateAccessToken",
            )?;
            if !url.ends_with(":generateAccessToken") {
                return Err(problem(
                    "service_account_impersonation_url",
                    format!("{url:?} does not end in :generateAccessToken"),
                    "use https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/<email>:generateAccessToken",
                ));
            }
            let lifetime_secs = raw
                .service_account_impersonation
                .and_then(|i| i.token_lifetime_seconds)
                .unwrap_or(DEFAULT_LIFETIME_SECS);
            if !(600..=MAX_LIFETIME_SECS).contains(&lifetime_secs) {
                return Err(problem(
                    "service_account_impersonation.token_lifetime_seconds",
                    format!("{lifetime_secs} is outside 600..=43200"),
                    "use 600 to 3600 seconds (up to 43200 where an organisation policy allows it), or leave it out for 3600",
                ));
            }
            Some(Impersonation { url, lifetime_secs })
        }
    };
    Ok(ExternalAccount {
        audience,
        subject_token_type,
        token_url,
        subject_token_file,
        subject_token_field,
        impersonation,
    })
}

fn required(v: Option<String>, field: &'static str, fix: &'static str) -> Result<String, Problem> {
    match v {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(problem(field, "missing or empty", fix)),
    }
}

fn file_source(s: RawSource) -> Result<(PathBuf, Option<String>), Problem> {
    let other = [
        (s.url.is_some(), "credential_source.url"),
        (s.executable.is_some(), "credential_source.executable"),
        (
            s.environment_id.is_some(),
            "credential_source.environment_id",
        ),
    ];
    if let Some((_, field)) = other.iter().find(|(set, _)| *set) {
        return Err(problem(
            field,
            "this subject token source is not supported",
            "use credential_source.file with the pod's projected ServiceAccount token (create-cred-config --credential-source-file)",
        ));
    }
    let Some(file) = s.file.filter(|f| !f.as_os_str().is_empty()) else {
        return Err(problem(
            "credential_source.file",
            "missing",
            "set it to the path of the projected ServiceAccount token, e.g. /var/run/secrets/google/token",
        ));
    };
    let field = match s.format {
        None => None,
        Some(f) => match f.kind.as_deref() {
            None | Some("text") => None,
            Some("json") => Some(
                f.subject_token_field_name
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        problem(
                            "credential_source.format.subject_token_field_name",
                            "missing with format type json",
                            "name the JSON field that holds the token, or use format type text",
                        )
                    })?,
            ),
            Some(other) => {
                return Err(problem(
                    "credential_source.format.type",
                    format!("{other:?} is neither \"text\" nor \"json\""),
                    "use text (the file is the token) or json with subject_token_field_name",
                ));
            }
        },
    };
    Ok((file, field))
}

/// https anywhere; plain http only to this machine (a test fixture or a local proxy): a
/// subject token must never cross a network in clear text.
fn endpoint(field: &'static str, value: &str, fix: &'static str) -> Result<(), Problem> {
    // User info would ride along in every request line we log and in the daemon's Events;
    // refused without quoting the value, which then holds a password.
    let userinfo = || {
        problem(
            field,
            "the URL holds user info (user:password@ before the host)",
            fix,
        )
    };
    let url = url::Url::parse(value).map_err(|e| {
        if value.contains('@') {
            userinfo()
        } else {
            problem(field, format!("{value:?} is not a URL: {e}"), fix)
        }
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(userinfo());
    }
    let loopback = matches!(
        url.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(problem(
            field,
            format!("{value:?} is not an https URL (plain http is allowed only to localhost)"),
            fix,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k";

    fn doc(extra: serde_json::Value) -> String {
        let mut v = serde_json::json!({
            "type": "external_account",
            "audience": AUD,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "credential_source": {"file": "/var/run/secrets/google/token"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    }

    #[test]
    fn a_gcloud_file_config_parses() {
        let ea = parse(&doc(serde_json::json!({}))).unwrap();
        assert_eq!(ea.audience, AUD);
        assert_eq!(
            ea.subject_token_file,
            PathBuf::from("/var/run/secrets/google/token")
        );
        assert_eq!(ea.subject_token_field, None);
        assert_eq!(ea.impersonation, None);
        let ea = parse(&doc(serde_json::json!({
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateAccessToken",
            "service_account_impersonation": {"token_lifetime_seconds": 1800},
            "credential_source": {"file": "/t", "format": {"type": "json", "subject_token_field_name": "id_token"}},
        })))
        .unwrap();
        assert_eq!(ea.subject_token_field.as_deref(), Some("id_token"));
        assert_eq!(ea.impersonation.unwrap().lifetime_secs, 1800);
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases = [
            (serde_json::json!({"type": "service_account"}), "type"),
            (serde_json::json!({"audience": ""}), "audience"),
            (
                serde_json::json!({"token_url": "http://sts.example.com/v1/token"}),
                "token_url",
            ),
            (serde_json::json!({"token_url": "file:///x"}), "token_url"),
            (
                serde_json::json!({"credential_source": {}}),
                "credential_source.file",
            ),
            (
                serde_json::json!({"credential_source": {"url": "http://169.254.169.254/x"}}),
                "credential_source.url",
            ),
            (
                serde_json::json!({"credential_source": {"environment_id": "aws1"}}),
                "credential_source.environment_id",
            ),
            (
                serde_json::json!({"credential_source": {"file": "/t", "format": {"type": "json"}}}),
                "credential_source.format.subject_token_field_name",
            ),
            (
                serde_json::json!({"credential_source": {"file": "/t", "format": {"type": "xml"}}}),
                "credential_source.format.type",
            ),
            (
                serde_json::json!({"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/x"}),
                "service_account_impersonation_url",
            ),
            (
                serde_json::json!({"service_account_impersonation_url": "https://i/x:generateAccessToken", "service_account_impersonation": {"token_lifetime_seconds": 60}}),
                "service_account_impersonation.token_lifetime_seconds",
            ),
        ];
        for (extra, field) in cases {
            let p = parse(&doc(extra.clone())).unwrap_err();
            assert_eq!(p.field, field, "{extra}: {p}");
        }
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "http://127.0.0.1:8085/v1/token",
            "http://localhost/v1/token",
            "http://[::1]:1/t",
        ] {
            assert!(endpoint("token_url", ok, "").is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/t",
            "http://127.0.0.1.nip.io/t",
            "ftp://localhost/t",
        ] {
            assert!(endpoint("token_url", bad, "").is_err(), "{bad}");
        }
    }
}
