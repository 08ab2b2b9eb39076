//! The Pod Security Standard `restricted` profile: the security contexts every pod the operator
//! renders carries, and a checker of a pod spec against the profile (used by the tests and by
//! `aitbc-operator render`, which `make chart-check` runs).

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};

/// UID and GID the AITBC images run as (docker/*.Dockerfile).
pub const RUN_AS: i64 = 65532;

fn runtime_default() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    })
}

/// Pod-level context: non-root, RuntimeDefault seccomp, volumes group-owned by `fs_group`
/// (changed only when the volume root does not match, so large ledgers start fast).
pub fn pod_context(fs_group: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(fs_group),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// Container-level context: no privilege escalation, every capability dropped, read-only root.
pub fn container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// Capabilities `restricted` lets a container add back.
const ALLOWED_ADDED_CAPS: [&str; 1] = ["NET_BIND_SERVICE"];

/// Pure: everything in `pod` that the `restricted` profile forbids, plus a writable root
/// filesystem (which the operator never needs). Empty when the pod passes.
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let psc = pod.security_context.clone().unwrap_or_default();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        out.push("uses a host namespace".to_string());
    }
    for v in pod.volumes.iter().flatten() {
        if v.host_path.is_some() {
            out.push(format!("volume {} is a hostPath", v.name));
        }
    }
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    for c in containers {
        let sc = c.security_context.clone().unwrap_or_default();
        let name = &c.name;
        if sc.privileged == Some(true) {
            out.push(format!("{name}: privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            out.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            out.push(format!("{name}: capabilities do not drop ALL"));
        }
        for a in caps.add.iter().flatten() {
            if !ALLOWED_ADDED_CAPS.contains(&a.as_str()) {
                out.push(format!("{name}: adds capability {a}"));
            }
        }
        if sc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
            out.push(format!("{name}: runAsNonRoot is not true"));
        }
        if sc.run_as_user.or(psc.run_as_user) == Some(0) {
            out.push(format!("{name}: runs as UID 0"));
        }
        let seccomp = sc.seccomp_profile.clone().or(psc.seccomp_profile.clone());
        if !seccomp.is_some_and(|s| s.type_ == "RuntimeDefault" || s.type_ == "Localhost") {
            out.push(format!("{name}: seccompProfile is not RuntimeDefault"));
        }
        if sc.read_only_root_filesystem != Some(true) {
            out.push(format!("{name}: readOnlyRootFilesystem is not true"));
        }
        for p in c.ports.iter().flatten() {
            if p.host_port.is_some_and(|h| h != 0) {
                out.push(format!("{name}: hostPort {:?}", p.host_port));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Volume};

    fn pod() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "c".into(),
                security_context: Some(container_context()),
                ..Default::default()
            }],
            security_context: Some(pod_context(10001)),
            ..Default::default()
        }
    }

    #[test]
    fn key_custody_the_restricted_checker_accepts_our_contexts_and_rejects_each_gap() {
        assert_eq!(restricted_violations(&pod()), Vec::<String>::new());
        let mut root = pod();
        root.security_context.as_mut().unwrap().run_as_non_root = None;
        root.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .run_as_non_root = None;
        assert!(!restricted_violations(&root).is_empty());
        let mut seccomp = pod();
        seccomp.security_context.as_mut().unwrap().seccomp_profile = None;
        seccomp.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .seccomp_profile = None;
        assert!(!restricted_violations(&seccomp).is_empty());
        let mut caps = pod();
        caps.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .capabilities = None;
        assert!(!restricted_violations(&caps).is_empty());
        let mut escalate = pod();
        escalate.containers[0]
            .security_context
            .as_mut()
            .unwrap()
            .allow_privilege_escalation = Some(true);
        assert!(!restricted_violations(&escalate).is_empty());
        let mut host = pod();
        host.volumes = Some(vec![Volume {
            name: "state".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/var/lib/x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(restricted_violations(&host), ["volume state is a hostPath"]);
    }
}
