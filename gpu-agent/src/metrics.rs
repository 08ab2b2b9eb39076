//! Prometheus metrics and the HTTP endpoint serving them (`/metrics`, `/healthz`).

use crate::agent::Agent;
use crate::inventory::InventorySnapshot;
use crate::jobs::JobPhase;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    pub index: String,
    pub uuid: String,
    pub model: String,
    pub simulated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    utilization: Family<GpuLabels, Gauge>,
    memory_used: Family<GpuLabels, Gauge>,
    memory_total: Family<GpuLabels, Gauge>,
    temperature: Family<GpuLabels, Gauge>,
    power: Family<GpuLabels, Gauge>,
    jobs_started: Counter,
    jobs_finished: Family<PhaseLabels, Counter>,
    jobs_running: Gauge,
    leases_active: Gauge,
    gpus_free: Gauge,
    gpus_total: Gauge,
    simulated: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aitbc_agent");
        let m = Metrics {
            utilization: Family::default(),
            memory_used: Family::default(),
            memory_total: Family::default(),
            temperature: Family::default(),
            power: Family::default(),
            jobs_started: Counter::default(),
            jobs_finished: Family::default(),
            jobs_running: Gauge::default(),
            leases_active: Gauge::default(),
            gpus_free: Gauge::default(),
            gpus_total: Gauge::default(),
            simulated: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "gpu_utilization_percent",
            "GPU utilization (simulated devices: derived from running jobs)",
            m.utilization.clone(),
        );
        registry.register(
            "gpu_memory_used_mib",
            "GPU memory in use, MiB",
            m.memory_used.clone(),
        );
        registry.register(
            "gpu_memory_total_mib",
            "GPU memory installed, MiB",
            m.memory_total.clone(),
        );
        registry.register(
            "gpu_temperature_celsius",
            "GPU temperature (NVML only)",
            m.temperature.clone(),
        );
        registry.register(
            "gpu_power_milliwatts",
            "GPU power draw (NVML only)",
            m.power.clone(),
        );
        registry.register(
            "jobs_started",
            "Jobs whose process started",
            m.jobs_started.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs finished, by final phase",
            m.jobs_finished.clone(),
        );
        registry.register("jobs_running", "Jobs running now", m.jobs_running.clone());
        registry.register("leases_active", "Unexpired leases", m.leases_active.clone());
        registry.register(
            "gpus_free",
            "GPUs neither leased nor running a job",
            m.gpus_free.clone(),
        );
        registry.register("gpus_total", "GPUs served", m.gpus_total.clone());
        registry.register(
            "simulated",
            "1 when the GPUs are declared (simulated), not read from NVML",
            m.simulated.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn job_started(&self) {
        self.jobs_started.inc();
    }

    pub fn job_finished(&self, phase: JobPhase) {
        self.jobs_finished
            .get_or_create(&PhaseLabels {
                phase: phase.as_str().into(),
            })
            .inc();
    }

    /// Records one inventory reading and the agent's counts.
    pub fn observe(&self, snap: &InventorySnapshot, running: usize, leases: usize, free: usize) {
        for g in &snap.gpus {
            let r = &g.reading;
            let l = GpuLabels {
                index: r.index.to_string(),
                uuid: r.uuid.clone(),
                model: r.model.clone(),
                simulated: g.simulated.to_string(),
            };
            self.utilization
                .get_or_create(&l)
                .set(r.utilization_percent as i64);
            self.memory_used
                .get_or_create(&l)
                .set(r.memory_used_mib as i64);
            self.memory_total
                .get_or_create(&l)
                .set(r.memory_total_mib as i64);
            if let Some(t) = r.temperature_celsius {
                self.temperature.get_or_create(&l).set(t as i64);
            }
            if let Some(p) = r.power_milliwatts {
                self.power.get_or_create(&l).set(p as i64);
            }
        }
        self.jobs_running.set(running as i64);
        self.leases_active.set(leases as i64);
        self.gpus_free.set(free as i64);
        self.gpus_total.set(snap.gpus.len() as i64);
        self.simulated.set(i64::from(snap.simulated));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Err(e) = encode(&mut s, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        s
    }
}

/// `/metrics` (OpenMetrics text) and `/healthz` (`ok`).
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(agent)
}

async fn metrics_handler(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        agent.metrics().render(),
    )
}
