//! Shared helpers of the integration tests.
#![allow(dead_code)]

use aitbc_gpu_agent::agent::{Agent, JobRequest};
use aitbc_gpu_agent::config::{AgentConfig, DeclaredGpu};
use aitbc_gpu_agent::inventory::Inventory;
use aitbc_gpu_agent::nvml::{BackendError, GpuBackend};
use aitbc_protocol::tx::{JobSpec, Runtime};
use aitbc_protocol::{Keypair, PublicKey};
use std::path::Path;
use std::sync::Arc;

pub fn config(dir: &Path, gpus: usize, keys: Vec<PublicKey>) -> AgentConfig {
    let mut c = AgentConfig::new(dir, "aitbc-test", "test-node");
    c.declared_gpus = (0..gpus)
        .map(|_| DeclaredGpu {
            model: "Simulated A100".into(),
            memory_mib: 16_384,
            uuid: None,
        })
        .collect();
    c.disable_nvml = true;
    c.scheduler_keys = keys;
    c.capture_bytes = 1024;
    c.demo_runtime = vec![
        env!("CARGO_BIN_EXE_aitbc-gpu-agent").into(),
        "demo-runtime".into(),
    ];
    c
}

pub fn open(c: AgentConfig, key: Keypair) -> Arc<Agent> {
    let inv = Inventory::detect(&c.agent_id, &c.declared_gpus, c.disable_nvml, || {
        Err::<Box<dyn GpuBackend>, _>(BackendError("no NVML in tests".into()))
    });
    Agent::open(c, key, inv).expect("agent opens")
}

pub fn agent(dir: &Path, gpus: usize) -> Arc<Agent> {
    open(config(dir, gpus, vec![]), Keypair::generate())
}

pub fn customer() -> String {
    Keypair::generate().address().to_string()
}

pub fn shell(script: &str) -> Runtime {
    Runtime {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        image: String::new(),
        env: vec![],
    }
}

pub fn job(id: &str, script: &str, gpus: u32) -> JobRequest {
    JobRequest {
        job_id: id.into(),
        customer: customer(),
        spec: JobSpec {
            gpus,
            memory_mib: 1024,
            time_limit_secs: 60,
            prompt: "a test".into(),
            ..Default::default()
        },
        runtime: shell(script),
        input: Vec::new(),
        lease_id: None,
        provider: None,
        attempt: 1,
    }
}
