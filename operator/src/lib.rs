//! The AITBC operator: one kube-runtime controller per custom resource, the scheduler running
//! in-process over GPU agents discovered from the gpu-agent DaemonSet, leader election, health
//! probes and Prometheus metrics.

pub mod agents;
pub mod chain;
pub mod context;
pub mod controllers;
pub mod error;
pub mod http;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod podsecurity;
pub mod run;
pub mod scheduler;
pub mod txflow;

pub use error::{Error, Result};
