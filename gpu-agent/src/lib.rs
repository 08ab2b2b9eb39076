//! AITBC GPU agent: serves a node's GPUs to the AITBC marketplace.
//!
//! The agent reports its GPUs (NVML, or declared devices flagged `simulated`), leases them,
//! runs jobs with only their assigned GPUs visible, hashes the outputs, signs a
//! [`aitbc_protocol::receipt::SignedJobReceipt`] and serves all of it over gRPC
//! (`aitbc.agent.v1.Agent`). Pure logic (allocation, digests, capture, auth) lives apart from
//! the I/O around it and is unit-tested without hardware.

pub mod agent;
pub mod api;
pub mod auth;
pub mod capture;
pub mod client;
pub mod config;
pub mod demo_runtime;
pub mod digest;
pub mod history;
pub mod identity;
pub mod inventory;
pub mod isolation;
pub mod jobs;
pub mod leases;
pub mod metrics;
pub mod nvml;
pub mod persist;
pub mod pod;
pub mod runner;
pub mod sandbox;
pub mod stress;
pub mod time;

pub use agent::{Agent, AgentError};
pub use auth::{sign_request, Authenticator};
pub use client::AgentClient;
pub use config::AgentConfig;
