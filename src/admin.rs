//! The admin server: `/healthz` (the process runs), `/readyz` (a complete cycle has run and no
//! managed credential has expired; a standby replica is ready), `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the admin server: {source}; fix: choose a free --admin-addr")]
pub struct AdminError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// What the admin server reports on; the daemon implements it. The admin server knows nothing
/// else of the daemon.
pub trait Health: Send + Sync + 'static {
    /// `Err(why)` while not ready.
    fn readiness(&self) -> Result<(), String>;
    /// The metrics in OpenMetrics text, sampled now.
    fn metrics_text(&self) -> String;
}

/// Binds now (so a taken port fails at start), serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<dyn Health>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let listener = listen(addr).map_err(|source| AdminError { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "admin server listening");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "admin server stopped");
        }
    }))
}

/// A listener on `addr`. The unspecified IPv6 address (`[::]`, the default) takes IPv4 too
/// (dual stack, whatever the node's `bindv6only`), so probes work on IPv4, IPv6 and dual-stack
/// clusters alike; where the pod has no IPv6 at all it falls back to `0.0.0.0`.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    let std = match bind(addr) {
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            tracing::warn!(error = %e, fallback = %v4, "no IPv6 here; the admin server listens on IPv4 only");
            bind(v4)?
        }
        other => other?,
    };
    tokio::net::TcpListener::from_std(std)
}

async fn readyz(State(health): State<Arc<dyn Health>>) -> impl IntoResponse {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(health): State<Arc<dyn Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics_text(),
    )
}
