//! Health, readiness, status and Prometheus metrics over plain HTTP (for probes and scrapers).

use crate::chain::Chain;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub async fn serve(listener: tokio::net::TcpListener, chain: Arc<Chain>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .route(
            "/metrics",
            get(|State(c): State<Arc<Chain>>| async move { c.metrics.render() }),
        )
        .with_state(chain);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

/// Ready once the node has committed state to serve and is not catching up.
async fn ready(State(c): State<Arc<Chain>>) -> (StatusCode, &'static str) {
    if c.syncing.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "syncing")
    } else if c.committed_height().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no block committed yet")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn status(State(c): State<Arc<Chain>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "chain_id": c.params.chain_id,
        "height": c.committed_height(),
        "view": c.view(),
        "syncing": c.syncing.load(std::sync::atomic::Ordering::Relaxed),
        "mempool": c.mempool.len(),
    }))
}
