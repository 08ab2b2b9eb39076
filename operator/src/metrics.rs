//! Prometheus metrics of the operator: reconciles, errors and durations by controller.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub durations: Family<ControllerLabels, Histogram>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("aitbc_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciliations by controller",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by controller and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconciliation duration by controller",
            durations.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            leader,
        }
    }

    pub fn reconciled(&self, controller: &str, took: Duration) {
        let l = ControllerLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.durations.get_or_create(&l).observe(took.as_secs_f64());
    }

    pub fn failed(&self, controller: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_controller() {
        let m = Metrics::new();
        m.reconciled("bid", Duration::from_millis(3));
        m.failed("bid", "WalletNotFound");
        let text = m.render();
        assert!(
            text.contains(r#"aitbc_operator_reconciles_total{controller="bid"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"aitbc_operator_reconcile_errors_total{controller="bid",reason="WalletNotFound"} 1"#), "{text}");
        assert!(
            text.contains("aitbc_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
