//! The steps of a token exchange (Google federation, Azure): one POST and its JSON answer over
//! the hyper/rustls stack gcp_auth and kube already bring in (no second HTTP client in the
//! binary), and the errors every such step can end in. No retries and no timeout of its own:
//! the scheduler retries a failed fetch, and `--provider-timeout` bounds the whole exchange.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Token answers are a few hundred bytes; a larger body is not one of them.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

#[cfg(test)]
impl Answer {
    /// An answer as a service would send it, for the parsing tests of each exchange.
    pub fn of(status: u16, body: &str) -> Self {
        Self {
            status: http::StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_string()),
        }
    }
}

/// A client for one fetch. The CA bundle is read each time (cheap next to the exchange, and a
/// rotated bundle is picked up); connections are not kept between fetches an hour apart.
fn client() -> Result<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no CA certificates to check the endpoint with: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// POSTs `body` as `content_type` (plus an optional bearer token) and reads the answer.
async fn post(
    url: &str,
    content_type: &str,
    bearer: Option<&str>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let mut req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("regcred-refresher/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = bearer {
        let mut value = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        // Keeps it out of any debug output of the request.
        value.set_sensitive(true);
        req = req.header(http::header::AUTHORIZATION, value);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = client()?.request(req).await.map_err(|e| chain(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer { status, body })
}

/// hyper's top-level message ("client error (Connect)") hides the cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

/// What can go wrong at a token endpoint, whichever cloud runs it. Messages carry the step, the
/// URL and the service's own code and description, never what was sent.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
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

/// One step of an exchange: its name in messages, and its URL.
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub name: &'static str,
    pub url: &'a str,
}

impl<'a> Step<'a> {
    pub async fn post(
        self,
        content_type: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Answer, EndpointError> {
        post(self.url, content_type, bearer, body.to_vec())
            .await
            .map_err(|message| EndpointError::Unreachable {
                step: self.name,
                url: self.url.to_string(),
                message,
            })
    }

    /// Turns a problem with a success answer into the error naming this step.
    pub fn bad(self, answer: &Answer) -> impl Fn(String) -> EndpointError + 'a {
        let status = answer.status.as_u16();
        move |problem| EndpointError::Answer {
            step: self.name,
            url: self.url.to_string(),
            status,
            problem,
        }
    }

    /// A success answer as a JSON object, or the service's refusal: `refusal` reads its error
    /// JSON into a code and a description, `fix` says what to do about them.
    pub fn json(
        self,
        answer: &Answer,
        refusal: impl Fn(&[u8]) -> Option<(String, String)>,
        fix: impl Fn(&str, &str, u16) -> &'static str,
    ) -> Result<serde_json::Value, EndpointError> {
        let status = answer.status.as_u16();
        if answer.status.is_success() {
            return match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                Ok(doc) if doc.is_object() => Ok(doc),
                _ => Err(self.bad(answer)("not a JSON object".to_string())),
            };
        }
        let (code, description) = refusal(&answer.body).unwrap_or_else(|| {
            (
                "-".to_string(),
                "an answer that is not the service's error JSON".to_string(),
            )
        });
        Err(EndpointError::Refused {
            step: self.name,
            url: self.url.to_string(),
            status,
            fix: fix(&code, &description, status),
            code: clip(&code),
            description: clip(&description),
        })
    }
}

/// OAuth 2's error answer (RFC 6749 §5.2), which Google's STS and Entra ID both send: its code
/// and description.
pub fn oauth_error(body: &[u8]) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    let e: OAuthError = serde_json::from_slice(body).ok()?;
    Some((e.error, e.error_description.unwrap_or_default()))
}

/// A non-empty string field of a success answer. Checked by hand, not by serde, whose
/// messages quote the offending value (which could be a token).
pub fn field_str(doc: &serde_json::Value, name: &str) -> Result<String, String> {
    match doc.get(name).and_then(serde_json::Value::as_str) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(format!("no {name} (a non-empty string)")),
    }
}

pub fn seconds(doc: &serde_json::Value, name: &str) -> Result<u64, String> {
    doc.get(name)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("no {name} (a number of seconds)"))
}

/// Descriptions come from the network: one line, bounded.
pub fn clip(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_one_bounded_line() {
        assert_eq!(clip("a\nb\rc"), "a b c");
        assert_eq!(clip(&"x".repeat(1000)).len(), 300);
    }
}
