//! /healthz, /readyz and /metrics on the operator's HTTP port.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the probes report.
#[derive(Default)]
pub struct Health {
    /// Set once this replica has started: as leader with its controllers running, or as a
    /// standby waiting for the Lease (a standby is ready: it can take over).
    pub ready: AtomicBool,
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render() }),
        )
        .with_state(AppState { health, metrics })
}

async fn ready(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    if let Err(e) = axum::serve(listener, router(health, metrics)).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
