//! `resource allocate | status | utilization | deallocate | test`, through the scheduler (which
//! signs the agent calls).

use crate::cli::ResourceCmd;
use crate::context::Ctx;
use crate::output::Report;
use aitbc_protocol::scheduler_pb as spb;
use anyhow::{anyhow, bail, Result};
use serde_json::json;

fn st(e: tonic::Status) -> anyhow::Error {
    anyhow!("{}", e.message())
}

fn lease_line(l: &spb::Lease) -> String {
    format!(
        "allocation_id: {} agent: {} holder: {} gpus: {:?} memory_mib: {} expires_at_ms: {}",
        l.lease_id, l.agent_id, l.holder, l.gpu_indexes, l.memory_mib, l.expires_at_ms
    )
}

fn lease_json(l: &spb::Lease) -> serde_json::Value {
    json!({"allocation_id": l.lease_id, "agent_id": l.agent_id, "holder": l.holder, "gpu_indexes": l.gpu_indexes, "memory_mib": l.memory_mib, "created_at_ms": l.created_at_ms, "expires_at_ms": l.expires_at_ms})
}

/// The agent `id` names: its name (`gpu-worker-1`) or its key (hex, any case).
pub fn find_agent<'a>(agents: &'a [spb::AgentInfo], id: &str) -> Option<&'a spb::AgentInfo> {
    let id = id.trim();
    agents.iter().find(|a| a.agent_id == id).or_else(|| {
        agents
            .iter()
            .find(|a| !a.agent_key.is_empty() && a.agent_key.eq_ignore_ascii_case(id))
    })
}

/// The error for an agent nobody knows, naming the ones the scheduler does know.
pub fn unknown_agent(agents: &[spb::AgentInfo], id: &str) -> anyhow::Error {
    let names: Vec<&str> = agents.iter().map(|a| a.agent_id.as_str()).collect();
    anyhow!(
        "unknown agent {id}; give an agent's name or key (see `aitbc-cli resource status`); the scheduler knows: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// The scheduler's agent named by `id` (name or key).
pub async fn known_agent(
    s: &mut spb::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    id: &str,
) -> Result<spb::AgentInfo> {
    let agents = s
        .list_agents(spb::ListAgentsRequest {})
        .await
        .map_err(st)?
        .into_inner()
        .agents;
    find_agent(&agents, id)
        .cloned()
        .ok_or_else(|| unknown_agent(&agents, id))
}

/// The agent's name for `id` (name or key), or "" (all agents) for none.
async fn agent_name(
    s: &mut spb::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    id: Option<&String>,
) -> Result<String> {
    match id {
        Some(id) => Ok(known_agent(s, id).await?.agent_id),
        None => Ok(String::new()),
    }
}

pub async fn run(ctx: &Ctx, cmd: &ResourceCmd) -> Result<Report> {
    let mut s = ctx.scheduler().await?;
    let mut r = ctx.report();
    match cmd {
        ResourceCmd::Allocate {
            agent_id,
            gpu,
            memory,
            duration,
            wallet,
            allocation_id,
        } => {
            if *gpu == 0 || *duration == 0 {
                bail!("--gpu and --duration must be at least 1");
            }
            let a = known_agent(&mut s, agent_id).await?;
            let agent_id = &a.agent_id;
            let holder = match wallet {
                Some(w) => ctx.resolve_address(w)?.to_string(),
                None if !a.owner.is_empty() => a.owner.clone(),
                None => bail!("agent {agent_id} has no registered owner; name the lease holder with --wallet W"),
            };
            let req = spb::AllocateResourcesRequest {
                agent_id: agent_id.clone(),
                holder,
                gpus: *gpu,
                memory_mib: *memory,
                duration_secs: *duration,
                lease_id: allocation_id.clone().unwrap_or_default(),
            };
            let lease = s
                .allocate_resources(req)
                .await
                .map_err(st)?
                .into_inner()
                .lease
                .ok_or_else(|| anyhow!("the scheduler returned no lease"))?;
            r.field("allocation_id", &lease.lease_id)
                .field("agent_id", &lease.agent_id)
                .field("holder", &lease.holder);
            r.field("gpus", format!("{:?}", lease.gpu_indexes))
                .field("memory_mib", lease.memory_mib)
                .field("expires_at_ms", lease.expires_at_ms);
        }
        ResourceCmd::Status { agent_id } => {
            let known = s
                .list_agents(spb::ListAgentsRequest {})
                .await
                .map_err(st)?
                .into_inner()
                .agents;
            let agent_id = match agent_id {
                Some(id) => find_agent(&known, id)
                    .ok_or_else(|| unknown_agent(&known, id))?
                    .agent_id
                    .clone(),
                None => String::new(),
            };
            let resp = s
                .resource_status(spb::ResourceStatusRequest { agent_id })
                .await
                .map_err(st)?
                .into_inner();
            for a in &resp.agents {
                let inv = a.inventory.clone().unwrap_or_default();
                let key = find_agent(&known, &a.agent_id)
                    .map(|k| k.agent_key.as_str())
                    .filter(|k| !k.is_empty())
                    .unwrap_or("-");
                r.row(
                    "agents",
                    format!("agent: {} healthy: {} gpus: {} free: {} memory_mib: {} simulated: {} key: {key}{}", a.agent_id, a.healthy, inv.gpus_total, inv.gpus_free, inv.memory_total_mib, inv.simulated, if a.error.is_empty() { String::new() } else { format!(" error: {}", a.error) }),
                    json!({"agent_id": a.agent_id, "agent_key": key, "healthy": a.healthy, "gpus_total": inv.gpus_total, "gpus_free": inv.gpus_free, "memory_total_mib": inv.memory_total_mib, "simulated": inv.simulated, "error": a.error}),
                );
                for g in &a.gpus {
                    let state = if g.busy {
                        "busy"
                    } else if g.leased {
                        "leased"
                    } else {
                        "free"
                    };
                    r.row(
                        "gpus",
                        format!("  gpu: {}/{} model: {} memory_used_mib: {}/{} utilization: {}% state: {state}", a.agent_id, g.index, g.model.replace(' ', "_"), g.memory_used_mib, g.memory_total_mib, g.utilization_percent),
                        json!({"agent_id": a.agent_id, "index": g.index, "uuid": g.uuid, "model": g.model, "memory_used_mib": g.memory_used_mib, "memory_total_mib": g.memory_total_mib, "utilization_percent": g.utilization_percent, "state": state, "simulated": g.simulated}),
                    );
                }
                for l in &a.leases {
                    r.row("allocations", format!("  {}", lease_line(l)), lease_json(l));
                }
            }
            let m = s
                .get_metrics(spb::GetMetricsRequest {})
                .await
                .map_err(st)?
                .into_inner();
            for p in &m.jobs_by_phase {
                r.row(
                    "jobs_by_phase",
                    format!("jobs_{}: {}", p.phase, p.count),
                    json!({"phase": p.phase, "count": p.count}),
                );
            }
        }
        ResourceCmd::Utilization {
            period, agent_id, ..
        } => {
            let agent_id = agent_name(&mut s, agent_id.as_ref()).await?;
            let up = match period {
                crate::period::Period::D7 | crate::period::Period::D30 => {
                    bail!("agents keep GPU utilization samples for 24h; use --period 5m, 1h or 24h (period {period} asked)")
                }
                p => p.as_str(),
            };
            let resp = s
                .resource_utilization(spb::ResourceUtilizationRequest {
                    agent_id,
                    period: up.into(),
                    max_points: 0,
                })
                .await
                .map_err(st)?
                .into_inner();
            r.field("period", period.as_str());
            for a in &resp.agents {
                if !a.error.is_empty() {
                    r.row(
                        "agents",
                        format!("agent: {} error: {}", a.agent_id, a.error),
                        json!({"agent_id": a.agent_id, "error": a.error}),
                    );
                    continue;
                }
                for g in &a.gpus {
                    let series: Vec<String> = g
                        .samples
                        .iter()
                        .rev()
                        .take(12)
                        .rev()
                        .map(|x| x.utilization_percent.to_string())
                        .collect();
                    r.row(
                        "gpus",
                        format!("agent: {} gpu: {} avg_utilization: {:.1}% samples: {} recent: {} simulated: {}", a.agent_id, g.index, g.average_utilization_percent, g.samples.len(), series.join(","), a.simulated),
                        json!({"agent_id": a.agent_id, "index": g.index, "average_utilization_percent": g.average_utilization_percent, "samples": g.samples.iter().map(|x| json!({"at_ms": x.at_ms, "utilization_percent": x.utilization_percent, "memory_used_mib": x.memory_used_mib})).collect::<Vec<_>>()}),
                    );
                }
            }
        }
        ResourceCmd::Deallocate {
            agent_id,
            allocation_id,
        } => {
            let agent_id = &known_agent(&mut s, agent_id).await?.agent_id;
            let ids: Vec<String> = match allocation_id {
                Some(id) => vec![id.clone()],
                None => {
                    let st_resp = s
                        .resource_status(spb::ResourceStatusRequest {
                            agent_id: agent_id.clone(),
                        })
                        .await
                        .map_err(st)?
                        .into_inner();
                    st_resp
                        .agents
                        .iter()
                        .flat_map(|a| a.leases.iter().map(|l| l.lease_id.clone()))
                        .collect()
                }
            };
            if ids.is_empty() {
                r.field("released", 0);
            }
            for id in ids {
                let rel = s
                    .deallocate_resources(spb::DeallocateResourcesRequest {
                        agent_id: agent_id.clone(),
                        lease_id: id.clone(),
                    })
                    .await
                    .map_err(st)?
                    .into_inner()
                    .released;
                if allocation_id.is_some() && !rel {
                    bail!("allocation {id} is unknown on agent {agent_id} (expired or already released)");
                }
                r.row(
                    "released",
                    format!("allocation_id: {id} released: {rel}"),
                    json!({"allocation_id": id, "released": rel}),
                );
            }
        }
        ResourceCmd::Test {
            memory_stress,
            duration,
            agent_id,
            memory,
            ..
        } => {
            if !memory_stress {
                bail!("resource test needs --memory-stress (the only GPU test there is)");
            }
            let name = agent_name(&mut s, agent_id.as_ref()).await?;
            let st_resp = s
                .resource_status(spb::ResourceStatusRequest { agent_id: name })
                .await
                .map_err(st)?
                .into_inner();
            if st_resp.agents.is_empty() {
                bail!(
                    "no agents to test{}",
                    agent_id
                        .as_ref()
                        .map(|a| format!(" (unknown agent {a})"))
                        .unwrap_or_default()
                );
            }
            let real: Vec<&spb::AgentResources> = st_resp
                .agents
                .iter()
                .filter(|a| a.gpus.iter().any(|g| !g.simulated))
                .collect();
            if real.is_empty() {
                bail!(
                    "cannot run a GPU memory stress test: the agents ({}) serve simulated GPUs only (no NVIDIA driver/NVML found); run it on a node with real GPUs",
                    st_resp.agents.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            // Size passes to roughly fill the requested duration (~1 s per pass per GiB).
            for a in real {
                for g in a.gpus.iter().filter(|g| !g.simulated) {
                    let mib = memory.unwrap_or(g.memory_total_mib / 4).max(1);
                    let passes = (*duration).clamp(1, 1000) as u32;
                    let res = s
                        .stress_test(spb::StressTestRequest {
                            agent_id: a.agent_id.clone(),
                            gpu_index: g.index,
                            memory_mib: mib,
                            passes,
                        })
                        .await
                        .map_err(st)?
                        .into_inner();
                    r.row(
                        "results",
                        format!("agent: {} gpu: {} uuid: {} allocated_mib: {} passes: {} fill_seconds: {:.3} bandwidth_gib_per_s: {:.2} verified: {}", res.agent_id, res.gpu_index, res.uuid, res.allocated_mib, res.passes, res.fill_seconds, res.bandwidth_gib_per_s, res.verified),
                        json!({"agent_id": res.agent_id, "gpu_index": res.gpu_index, "uuid": res.uuid, "allocated_mib": res.allocated_mib, "passes": res.passes, "fill_seconds": res.fill_seconds, "bandwidth_gib_per_s": res.bandwidth_gib_per_s, "verified": res.verified, "message": res.message}),
                    );
                    r.check(
                        &format!("gpu {}/{} memory", res.agent_id, res.gpu_index),
                        res.verified,
                        if res.message.is_empty() {
                            "pattern read back intact".to_string()
                        } else {
                            res.message.clone()
                        },
                    );
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, key: &str) -> spb::AgentInfo {
        spb::AgentInfo {
            agent_id: name.into(),
            agent_key: key.into(),
            ..Default::default()
        }
    }

    #[test]
    fn agent_id_takes_a_name_or_a_key() {
        let agents = vec![agent("gpu-worker-1", "ab12"), agent("gpu-worker-2", "cd34")];
        let name = |id: &str| find_agent(&agents, id).map(|a| a.agent_id.as_str());
        assert_eq!(name("gpu-worker-2"), Some("gpu-worker-2"));
        assert_eq!(name("cd34"), Some("gpu-worker-2"));
        assert_eq!(name("AB12"), Some("gpu-worker-1"));
        assert_eq!(name("gpu-worker-3"), None);
        assert_eq!(name(""), None);
        let e = unknown_agent(&agents, "agent-0").to_string();
        assert!(
            e.contains("gpu-worker-1, gpu-worker-2") && e.contains("name or key"),
            "{e}"
        );
    }
}
