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

use crate::daemon::Shared;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the admin server: {source}; fix: choose a free --admin-addr")]
pub struct AdminError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds now (so a taken port fails at start), serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError { addr, source })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "admin server listening");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "admin server stopped");
        }
    }))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.readiness() {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.update_expiry_gauges();
    shared.metrics.sample_runtime();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
