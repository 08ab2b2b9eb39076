//! Prometheus metrics (`/metrics`, `/healthz`) and the figures behind `GetMetrics`.

use crate::state::Phase;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// How many recent placement latencies the percentiles are computed over.
const LATENCY_WINDOW: usize = 10_000;

pub struct Metrics {
    registry: Registry,
    pub queue_length: Gauge,
    pub jobs_by_phase: Family<PhaseLabels, Gauge>,
    pub placement_latency: Histogram,
    pub dispatched: Counter,
    pub dispatch_failures: Counter,
    pub retries: Counter,
    pub settled: Counter,
    pub refunds: Counter,
    pub agents_total: Gauge,
    pub agents_healthy: Gauge,
    pub last_height: Gauge,
    latencies_ms: Mutex<VecDeque<f64>>,
    started: std::time::Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("aitbc_scheduler");
        let m = Metrics {
            registry: Registry::default(),
            queue_length: Gauge::default(),
            jobs_by_phase: Family::default(),
            placement_latency: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            dispatched: Counter::default(),
            dispatch_failures: Counter::default(),
            retries: Counter::default(),
            settled: Counter::default(),
            refunds: Counter::default(),
            agents_total: Gauge::default(),
            agents_healthy: Gauge::default(),
            last_height: Gauge::default(),
            latencies_ms: Mutex::new(VecDeque::new()),
            started: std::time::Instant::now(),
        };
        registry.register(
            "queue_length",
            "Jobs waiting for placement",
            m.queue_length.clone(),
        );
        registry.register(
            "jobs",
            "Jobs known to the scheduler by phase",
            m.jobs_by_phase.clone(),
        );
        registry.register(
            "placement_latency_seconds",
            "From the job's submission being seen to its AssignJob being committed",
            m.placement_latency.clone(),
        );
        registry.register(
            "dispatched",
            "Jobs started on an agent",
            m.dispatched.clone(),
        );
        registry.register(
            "dispatch_failures",
            "Attempts that failed (agent refused, failed, lost)",
            m.dispatch_failures.clone(),
        );
        registry.register(
            "retries",
            "Re-placements after a failed attempt",
            m.retries.clone(),
        );
        registry.register(
            "settled",
            "SettleJob transactions committed by the scheduler",
            m.settled.clone(),
        );
        registry.register(
            "refunds",
            "RefundJob transactions committed by the scheduler",
            m.refunds.clone(),
        );
        registry.register("agents", "Agents discovered", m.agents_total.clone());
        registry.register(
            "agents_healthy",
            "Agents answering health checks",
            m.agents_healthy.clone(),
        );
        registry.register(
            "last_height",
            "Last chain height processed",
            m.last_height.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn observe_placement(&self, ms: f64) {
        self.placement_latency.observe(ms / 1000.0);
        let mut l = self.latencies_ms.lock();
        if l.len() == LATENCY_WINDOW {
            l.pop_front();
        }
        l.push_back(ms);
    }

    /// (p50, p99) of the recent placement latencies in ms; zeros when none.
    pub fn placement_percentiles(&self) -> (f64, f64) {
        let mut v: Vec<f64> = self.latencies_ms.lock().iter().copied().collect();
        if v.is_empty() {
            return (0.0, 0.0);
        }
        v.sort_by(|a, b| a.total_cmp(b));
        (percentile(&v, 50.0), percentile(&v, 99.0))
    }

    pub fn set_phases(&self, counts: &[(Phase, u64)]) {
        for (p, c) in counts {
            self.jobs_by_phase
                .get_or_create(&PhaseLabels {
                    phase: p.as_str().into(),
                })
                .set(*c as i64);
        }
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) = encode(&mut s, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        s
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `/metrics` (OpenMetrics text) and `/healthz` (`ok`).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_render() {
        let m = Metrics::new();
        assert_eq!(m.placement_percentiles(), (0.0, 0.0));
        for i in 1..=100 {
            m.observe_placement(i as f64);
        }
        assert_eq!(m.placement_percentiles(), (50.0, 99.0));
        m.queue_length.set(3);
        m.set_phases(&[(Phase::Pending, 3)]);
        let text = m.render();
        assert!(text.contains("aitbc_scheduler_queue_length 3"), "{text}");
        assert!(
            text.contains("aitbc_scheduler_placement_latency_seconds"),
            "{text}"
        );
        assert!(text.contains("phase=\"pending\""), "{text}");
    }
}
