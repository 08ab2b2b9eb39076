//! GPU agent discovery for the scheduler: the pods of the gpu-agent DaemonSet
//! (`app.kubernetes.io/component=gpu-agent`), reached on their container port named `grpc`.

use aitbc_scheduler::{AgentEndpoint, AgentSource, SourceError};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// Label selector of gpu-agent pods.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/component=gpu-agent";
/// Port used when the pod names none `grpc`.
pub const DEFAULT_GRPC_PORT: i32 = 7070;

/// Pure: the agents among `pods`: running, with an IP; id = the GPU node's name (the pod name
/// when unscheduled), endpoint = `http://<pod IP>:<grpc port>`. Sorted by id.
pub fn endpoints_from_pods(pods: &[Pod]) -> Vec<AgentEndpoint> {
    let mut out: Vec<AgentEndpoint> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip = status.pod_ip.as_ref().filter(|ip| !ip.is_empty())?;
            let spec = p.spec.as_ref()?;
            let port = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|port| port.name.as_deref() == Some("grpc"))
                .map(|port| port.container_port)
                .unwrap_or(DEFAULT_GRPC_PORT);
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.clone()
            };
            let agent_id = spec.node_name.clone().unwrap_or_else(|| p.name_any());
            Some(AgentEndpoint {
                agent_id,
                endpoint: format!("http://{host}:{port}"),
            })
        })
        .collect();
    out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    out
}

/// Lists gpu-agent pods (in one namespace, or all) on every call.
pub struct PodAgents {
    api: Api<Pod>,
    selector: String,
}

impl PodAgents {
    pub fn new(client: Client, namespace: Option<&str>, selector: &str) -> PodAgents {
        let api = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        PodAgents {
            api,
            selector: selector.to_string(),
        }
    }
}

#[async_trait]
impl AgentSource for PodAgents {
    async fn agents(&self) -> Result<Vec<AgentEndpoint>, SourceError> {
        let pods = self
            .api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| SourceError::Discovery(e.to_string()))?;
        Ok(endpoints_from_pods(&pods.items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(name: &str, node: &str, phase: &str, ip: Option<&str>, grpc: Option<i32>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    name: "agent".into(),
                    ports: grpc.map(|p| {
                        vec![ContainerPort {
                            name: Some("grpc".into()),
                            container_port: p,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(String::from),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn running_agent_pods_become_endpoints() {
        let pods = vec![
            pod("agent-b", "gpu-2", "Running", Some("10.0.0.2"), Some(7070)),
            pod("agent-a", "gpu-1", "Running", Some("10.0.0.1"), Some(7171)),
            pod("agent-c", "gpu-3", "Pending", None, Some(7070)),
            pod("agent-d", "gpu-4", "Running", Some("fd00::4"), None),
        ];
        let got = endpoints_from_pods(&pods);
        assert_eq!(
            got,
            vec![
                AgentEndpoint {
                    agent_id: "gpu-1".into(),
                    endpoint: "http://10.0.0.1:7171".into()
                },
                AgentEndpoint {
                    agent_id: "gpu-2".into(),
                    endpoint: "http://10.0.0.2:7070".into()
                },
                AgentEndpoint {
                    agent_id: "gpu-4".into(),
                    endpoint: "http://[fd00::4]:7070".into()
                },
            ]
        );
    }
}
