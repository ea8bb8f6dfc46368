//! The Kubernetes client, built from KUBECONFIG or the in-cluster config as kubectl does,
//! with a bounded retry policy of our own.
//!
//! kube's default retry layer retries 429/503/504 up to 15 times with a backoff capped at
//! 1000 s: one throttled namespace could stall a whole cycle for many minutes. Ours retries
//! three times (honouring `Retry-After`), then reports the namespace as failed and moves on;
//! the daemon retries failed writes on its own schedule.

use std::time::Duration;

use kube::client::ClientBuilder;
use kube::client::retry::RetryPolicy;
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no Kubernetes configuration: {}; fix: set KUBECONFIG or run in a pod",
        crate::error_chain::one_line(.0)
    )]
    Config(#[from] kube::config::InferConfigError),
    // One line per cause: an exec plugin's unparsable output (its token) follows the first.
    #[error("cannot build the Kubernetes client: {}", crate::error_chain::one_line(.0))]
    Build(#[from] kube::Error),
}

pub const RETRIES: u32 = 3;

/// Sent on every request, so an API server's audit log and priority-and-fairness rules can
/// tell this refresher from other clients.
pub const USER_AGENT: &str = concat!("regcred-refresher/", env!("CARGO_PKG_VERSION"));

/// How long one request may wait for the API server's answer. kube's default (295 s) is
/// sized for watches; a stuck GET or PATCH would hold a `--once` run or a reconcile that long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for requests (`request_timeout`: a deadline on each answer) or, with `None`, for
/// watches, which stay open for minutes by design.
pub async fn client(request_timeout: Option<Duration>) -> Result<kube::Client, ClientError> {
    let mut config = kube::Config::infer().await?;
    config.default_retry = false;
    if let Some(t) = request_timeout {
        config.read_timeout = Some(t);
        config.write_timeout = Some(t);
    }
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    let policy = RetryPolicy::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        RETRIES,
        true,
    )
    .map_err(|e| kube::Error::Service(Box::new(e)))?;
    // The retry layer clones its inner service; a buffer makes the boxed stack cloneable.
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(policy))
        .build())
}
