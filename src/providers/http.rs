//! One POST and its answer (for the token exchanges of Google federation and Azure), over the hyper/rustls stack gcp_auth and kube already bring in
//! (no second HTTP client in the binary). No retries and no timeout of its own: the
//! scheduler retries a failed fetch, and `--provider-timeout` bounds the whole exchange.

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
pub async fn post(
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
