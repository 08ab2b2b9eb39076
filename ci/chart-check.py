#!/usr/bin/env python3
"""Static checks of the aitbc Helm chart, with no cluster.

Run by `make chart-check` (which builds a venv from ci/requirements.txt):

  1. versions: Chart.yaml version/appVersion equal the Cargo workspace version;
  2. Helm's own engine (helm-python-sdk, Helm's Go SDK through a C ABI: no helm binary)
     renders the chart with the default values and each profile in charts/aitbc/ci/*-values.yaml,
     and Helm's lint reports no error for each;
  3. values.schema.json rejects bad values (unknown key, bad enum, negative count);
  4. every rendered manifest validates against the Kubernetes OpenAPI schemas of
     $AITBC_K8S_VERSION (default 1.34.0) in strict mode (unknown fields are errors) with
     kubernetes-validate; aitbc.io resources validate against the generated CRDs;
  5. every document of examples/*.yaml validates against the generated CRD schemas in
     charts/aitbc/crds/ (or the Kubernetes schemas for core kinds); missing CRDs FAIL;
  6. RBAC review: the rendered ClusterRole/Role grant nothing beyond ci/rbac-allowed.yaml
     (a built-in self-test first proves the review rejects a too-broad role);
  7. security defaults of every container, and the gpu-agent contract (ports, labels,
     simulated vs real GPUs);
  8. key custody: every rendered pod, and every pod `aitbc-operator render` produces for the
     chart's and the examples' Nodes, meets the restricted Pod Security Standard (no hostPath
     unless a profile opts in), each chain pod mounts one key, no role lists/watches/deletes
     Secrets, watchNamespaces renders Roles only, NetworkPolicies are on;
  9. job isolation (issue 17): in pod mode (profile pod-values.yaml) the agent's only RBAC is a
     Role in the job namespace with exactly the verbs of rbac-allowed.yaml's agentRole, nothing
     cluster-wide, its token mounted, API-server egress, the job Namespace's Pod Security labels,
     and the rendered command line reaches the agent's Kubernetes client; the template refuses
     pod mode without the hostPath state dir; other modes mount no agent token and render no
     agent RBAC.

Exit status 0 only when every check passed; a summary is printed last.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CHART = os.path.join(ROOT, "charts", "aitbc")
CRD_DIR = os.path.join(CHART, "crds")
EXAMPLES = os.path.join(ROOT, "examples")
ALLOWED_RBAC = os.path.join(ROOT, "ci", "rbac-allowed.yaml")
K8S_VERSION = os.environ.get("AITBC_K8S_VERSION", "1.34.0")
RELEASE = "aitbc"
NAMESPACE = "aitbc-system"
EXPECTED_KINDS = {"Node", "Wallet", "ServiceListing", "Bid", "AIJob"}


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Report:
    passed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ok(self, name: str) -> None:
        self.passed.append(name)
        print(f"  PASS {name}")

    def fail(self, name: str, why: str) -> None:
        self.failed.append((name, why))
        print(f"  FAIL {name}: {why}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  NOTE {text}")

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except CheckError as e:
            self.fail(name, str(e))
        except Exception as e:  # a crash in a check is a failure, never a pass
            self.fail(name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        else:
            self.ok(name)


class CheckError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# RBAC review (pure: tested by ci/test_chart_check.py)

ESCALATION_VERBS = {"escalate", "bind", "impersonate", "*"}


def allowed_triples(rules: Iterable[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


def rbac_violations(role: dict, allowed: set[tuple[str, str, str]]) -> list[str]:
    """Everything `role` (a rendered Role or ClusterRole) grants beyond `allowed`."""
    problems = []
    name = f"{role.get('kind')}/{role.get('metadata', {}).get('name')}"
    if role.get("aggregationRule"):
        problems.append(f"{name}: aggregationRule pulls in other roles' rules")
    for i, rule in enumerate(role.get("rules") or []):
        where = f"{name} rule {i}"
        if rule.get("nonResourceURLs"):
            problems.append(f"{where}: nonResourceURLs {rule['nonResourceURLs']} not declared")
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        verbs = rule.get("verbs") or []
        if not verbs:
            problems.append(f"{where}: no verbs")
        if (groups or resources) and not (groups and resources):
            problems.append(f"{where}: apiGroups and resources must both be given")
        for g in groups:
            for res in resources:
                for v in verbs:
                    if "*" in (g, res, v) or (g, res, v) not in allowed:
                        problems.append(f"{where}: grants {v} on {res or '-'} in group {g or 'core'!r} (not declared)")
    return problems


def is_user_role(m: dict) -> bool:
    return m.get("kind") == "ClusterRole" and (m.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component") == "user-role"


def is_agent_rbac(m: dict) -> bool:
    return m.get("kind") in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding") and \
        (m.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component") == "gpu-agent"


def review_rbac(manifests: list[dict], allowed_doc: dict) -> list[str]:
    """Rendered ClusterRoles against allowed_doc['clusterRole'] (the people's roles against
    allowed_doc['userRoles']), Roles against clusterRole+role, the gpu-agent's Role (pod mode)
    against allowed_doc['agentRole'] alone and never a ClusterRole for it, bindings only to the
    chart's own roles."""
    cluster_allowed = allowed_triples(allowed_doc.get("clusterRole", []))
    ns_allowed = cluster_allowed | allowed_triples(allowed_doc.get("role", []))
    user_allowed = allowed_triples(allowed_doc.get("userRoles", []))
    agent_allowed = allowed_triples(allowed_doc.get("agentRole", []))
    problems = []
    roles = {(m["kind"], m["metadata"]["name"]) for m in manifests if m.get("kind") in ("Role", "ClusterRole")}
    operator_roles = [m for m in manifests if m.get("kind") in ("Role", "ClusterRole") and not is_user_role(m) and not is_agent_rbac(m)]
    if not operator_roles:
        problems.append("no ClusterRole or Role rendered for the operator")
    for m in manifests:
        kind = m.get("kind")
        if is_user_role(m):
            problems += rbac_violations(m, user_allowed)
        elif is_agent_rbac(m) and kind in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{kind}/{m['metadata']['name']}: the gpu-agent gets nothing cluster-wide")
        elif is_agent_rbac(m) and kind == "Role":
            problems += rbac_violations(m, agent_allowed)
        elif kind == "ClusterRole":
            problems += rbac_violations(m, cluster_allowed)
        elif kind == "Role":
            problems += rbac_violations(m, ns_allowed)
        elif kind in ("ClusterRoleBinding", "RoleBinding"):
            ref = m.get("roleRef", {})
            if (ref.get("kind"), ref.get("name")) not in roles:
                problems.append(f"{kind}/{m['metadata']['name']} binds {ref.get('kind')}/{ref.get('name')}, not a role of this chart")
            if kind == "RoleBinding" and ref.get("kind") == "ClusterRole":
                problems.append(f"RoleBinding/{m['metadata']['name']} binds a ClusterRole")
    return problems


TOO_BROAD_ROLES = [
    # each must be rejected: proves the review can fail
    {"kind": "ClusterRole", "metadata": {"name": "wild"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "pods-delete"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "nodes-core"}, "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "urls"}, "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [{}]}, "rules": []},
    {"kind": "ClusterRole", "metadata": {"name": "leases-cluster"}, "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "bind"}, "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind", "escalate"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "secrets-list"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "secrets-delete"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]}]},
]


# The gpu-agent's pod mode (gpu-agent/src/pod.rs): what its job-namespace Role grants, exactly.
AGENT_JOB_TRIPLES = {
    ("", "pods", "create"), ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "delete"),
    ("", "pods/log", "get"),
    ("networking.k8s.io", "networkpolicies", "create"), ("networking.k8s.io", "networkpolicies", "list"),
    ("networking.k8s.io", "networkpolicies", "delete"),
}

TOO_BROAD_AGENT_ROLES = [
    {"kind": "Role", "metadata": {"name": "agent-exec"}, "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]},
    {"kind": "Role", "metadata": {"name": "agent-secrets"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
    {"kind": "Role", "metadata": {"name": "agent-pods-patch"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch", "update", "watch"]}]},
    {"kind": "Role", "metadata": {"name": "agent-deletecollection"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["deletecollection"]}]},
    {"kind": "Role", "metadata": {"name": "agent-wild"}, "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]},
]


def rbac_self_test(allowed_doc: dict) -> None:
    cluster_allowed = allowed_triples(allowed_doc["clusterRole"])
    for role in TOO_BROAD_ROLES:
        if not rbac_violations(role, cluster_allowed):
            raise CheckError(f"the RBAC review accepted the too-broad role {role['metadata']['name']}")
    exact = {"kind": "ClusterRole", "metadata": {"name": "exact"}, "rules": allowed_doc["clusterRole"]}
    if rbac_violations(exact, cluster_allowed):
        raise CheckError("the RBAC review rejected the declared list itself")
    agent_allowed = allowed_triples(allowed_doc.get("agentRole", []))
    if agent_allowed != AGENT_JOB_TRIPLES:
        raise CheckError(f"ci/rbac-allowed.yaml agentRole is not exactly the pod-mode verbs: {sorted(agent_allowed ^ AGENT_JOB_TRIPLES)}")
    for role in TOO_BROAD_AGENT_ROLES:
        if not rbac_violations(role, agent_allowed):
            raise CheckError(f"the RBAC review accepted the too-broad agent role {role['metadata']['name']}")
    if rbac_violations({"kind": "Role", "metadata": {"name": "agent-exact"}, "rules": allowed_doc["agentRole"]}, agent_allowed):
        raise CheckError("the RBAC review rejected the declared agent list itself")


# --------------------------------------------------------------------------------------------
# Key custody (pure: tested by ci/test_chart_check.py, tests named test_key_custody_*)

SECRET_VERBS_NEVER = {"list", "watch", "delete", "deletecollection", "*"}


def key_custody_secret_problems(manifests: list[dict]) -> list[str]:
    """No role of the chart may list, watch or delete Secrets; people's roles no Secrets at all."""
    problems = []
    for m in manifests:
        if m.get("kind") not in ("Role", "ClusterRole"):
            continue
        name = f"{m['kind']}/{m['metadata']['name']}"
        for rule in m.get("rules") or []:
            if not ({"", "*"} & set(rule.get("apiGroups") or [])) or not ({"secrets", "*"} & set(rule.get("resources") or [])):
                continue
            verbs = set(rule.get("verbs") or [])
            if is_user_role(m):
                problems.append(f"{name}: a role for people grants {sorted(verbs)} on Secrets")
            elif verbs & SECRET_VERBS_NEVER:
                problems.append(f"{name}: grants {sorted(verbs & SECRET_VERBS_NEVER)} on Secrets")
    return problems


def key_custody_scope_problems(manifests: list[dict], watch_namespaces: list[str], release_ns: str = NAMESPACE,
                               job_namespace: str | None = None) -> list[str]:
    """A namespace-scoped install (watchNamespaces) renders no ClusterRole or ClusterRoleBinding
    for the operator, only Roles in the watched namespaces and the release namespace; an
    all-namespaces install binds its ClusterRole once."""
    problems = []
    op = [m for m in manifests if m.get("kind") in ("ClusterRole", "ClusterRoleBinding") and not is_user_role(m)]
    if watch_namespaces:
        problems += [f"{m['kind']}/{m['metadata']['name']}: cluster-wide although watchNamespaces={watch_namespaces}" for m in op]
        allowed = set(watch_namespaces) | {release_ns}
        for m in manifests:
            if is_agent_rbac(m) and job_namespace and m["metadata"].get("namespace") == job_namespace:
                continue  # pod mode: the agent's Role in the job namespace (job_isolation_problems)
            if m.get("kind") in ("Role", "RoleBinding") and m["metadata"].get("namespace") not in allowed:
                problems.append(f"{m['kind']}/{m['metadata']['name']} in namespace {m['metadata'].get('namespace')} not watched")
        covered = {m["metadata"].get("namespace") for m in manifests if m.get("kind") == "Role" and not is_agent_rbac(m)}
        problems += [f"no Role for the operator in watched namespace {ns}" for ns in watch_namespaces if ns not in covered]
    elif not any(m["kind"] == "ClusterRole" for m in op):
        problems.append("watchNamespaces is empty but no ClusterRole lets the operator watch every namespace")
    return problems


def key_custody_restricted_problems(obj: dict, allow_host_path: bool = False) -> list[str]:
    """The Pod Security Standard `restricted` profile on a workload's pod spec: everything
    security_problems checks, plus no hostPath volume, no hostPort, no UID 0, only
    NET_BIND_SERVICE may be added. `allow_host_path`: a profile that opted in to the agent's
    hostPath state directory (its documented chown init container is then the one exception)."""
    ps = pod_spec(obj)
    if ps is None:
        return []
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    # requests/limits are the chart's own rule (security_problems), not part of `restricted`
    errs = [e for e in security_problems(obj)
            if (allow_host_path or "state-dir-owner" not in e) and not re.search(r": no (requests|limits)\.", e)]
    for v in ps.get("volumes") or []:
        if "hostPath" in v and not allow_host_path:
            errs.append(f"{name}: volume {v['name']} is a hostPath")
    psc = ps.get("securityContext") or {}
    for c in (ps.get("initContainers") or []) + ps.get("containers", []):
        if allow_host_path and c["name"] in ROOT_EXCEPTIONS:
            continue
        sc = c.get("securityContext") or {}
        cn = f"{name} container {c['name']}"
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            errs.append(f"{cn}: runs as UID 0")
        if not allow_host_path and c["name"] in ROOT_EXCEPTIONS:
            errs.append(f"{cn}: a root init container in the default install")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                errs.append(f"{cn}: hostPort {p['hostPort']}")
        added = set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        if added and c["name"] not in ROOT_EXCEPTIONS:
            errs.append(f"{cn}: adds {sorted(added)}")
    return errs


def operator_binary() -> str | None:
    if os.environ.get("AITBC_OPERATOR_BIN"):
        return os.environ["AITBC_OPERATOR_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("debug", "release"):
        p = os.path.join(target, profile, "aitbc-operator")
        if os.access(p, os.X_OK):
            return p
    return None


def operator_rendered(binary: str, node: dict, operator_ns: str = NAMESPACE) -> list[dict]:
    """What the operator creates for `node` to run pods: `aitbc-operator render`."""
    import json
    import subprocess

    out = subprocess.run([binary, "render", "--node", "-", "--operator-namespace", operator_ns],
                         input=json.dumps(strip_source(node)), capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise CheckError(f"aitbc-operator render failed: {out.stderr.strip()[:500]}")
    return json.loads(out.stdout)["items"]


def key_custody_operator_pod_problems(items: list[dict]) -> list[str]:
    """Operator-rendered objects: each chain pod meets restricted and mounts exactly one Secret
    (its own key); when a NetworkPolicy is rendered, its peer port admits the chain's pods only."""
    errs = []
    for o in items:
        errs += key_custody_restricted_problems(o)
        ps = pod_spec(o)
        if ps is not None:
            secrets = [v["secret"]["secretName"] for v in ps.get("volumes") or [] if "secret" in v]
            secrets += [s["secret"]["name"] for v in ps.get("volumes") or [] for s in (v.get("projected") or {}).get("sources") or [] if "secret" in s]
            if len(secrets) != 1:
                errs.append(f"{o['kind']}/{o['metadata']['name']}: mounts Secrets {secrets}, not exactly its own key")
        if o.get("kind") == "NetworkPolicy":
            for rule in o["spec"].get("ingress") or []:
                ports = {p.get("port") for p in rule.get("ports") or []}
                if 9200 in ports and (ports != {9200} or any("namespaceSelector" in f for f in rule.get("from") or [])):
                    errs.append(f"NetworkPolicy/{o['metadata']['name']}: the peer port is open beyond the chain's pods")
    return errs


# --------------------------------------------------------------------------------------------
# Job isolation (issue 17; pure: tested by ci/test_chart_check.py, tests named test_job_isolation_*)

JOB_NS_LABELS = {
    "pod-security.kubernetes.io/enforce": "privileged",  # the job Pods' hostPath inputs/outputs
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}
API_SERVER_PORTS = {443, 6443}


def job_isolation_settings(vals: dict, release: str = RELEASE) -> tuple[bool, str, bool]:
    """(pod mode, job namespace, createNamespace) of a values dict as the chart defaults them."""
    a = vals.get("gpuAgent") or {}
    jobs = a.get("jobs") or {}
    return (a.get("isolation", "auto") == "pod", jobs.get("namespace") or f"{release}-jobs",
            jobs.get("createNamespace", True))


def _agent_container(ps: dict) -> dict:
    return next(c for c in ps["containers"] if c["name"] == "gpu-agent")


def job_isolation_problems(manifests: list[dict], pod_mode: bool, job_ns: str, create_ns: bool = True,
                           release_ns: str = NAMESPACE) -> list[str]:
    """Pod mode: the agent's ServiceAccount token is mounted and its RBAC is one Role in the job
    namespace with exactly AGENT_JOB_TRIPLES, bound to the agent's own ServiceAccount only, and
    nothing cluster-wide; the DaemonSet tells the agent its job namespace, node name and host
    state dir; the agent NetworkPolicy lets it reach the API server; the job Namespace carries the
    Pod Security labels. Other modes: no token, no agent RBAC, no job Namespace."""
    errs: list[str] = []
    ds = find(manifests, "DaemonSet", "gpu-agent")
    if len(ds) != 1:
        return [f"expected one gpu-agent DaemonSet, got {len(ds)}"]
    ps = ds[0]["spec"]["template"]["spec"]
    c = _agent_container(ps)
    args = c.get("args") or []
    env = {e["name"]: e for e in c.get("env") or []}
    sa_name = ps.get("serviceAccountName")
    sas = [m for m in manifests if m.get("kind") == "ServiceAccount" and m["metadata"]["name"] == sa_name
           and m["metadata"].get("namespace") == release_ns]
    if not sa_name or not sas:
        errs.append(f"the agent pods run as ServiceAccount {sa_name!r}, which the chart does not create")
    elif (sas[0]["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "gpu-agent":
        errs.append(f"ServiceAccount/{sa_name} is not the agent's own")
    want_iso = "pod" if pod_mode else None
    iso = args[args.index("--isolation") + 1] if "--isolation" in args else None
    if iso is None:
        errs.append("--isolation missing from the agent's args")
    elif want_iso and iso != want_iso:
        errs.append(f"--isolation {iso}, want pod")
    elif not want_iso and iso == "pod":
        errs.append("--isolation pod rendered outside pod mode")
    agent_rbac = [m for m in manifests if is_agent_rbac(m)]
    bound_to_agent = [m for m in manifests if m.get("kind") in ("RoleBinding", "ClusterRoleBinding")
                      and any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                              and s.get("namespace") == release_ns for s in m.get("subjects") or [])]
    for m in agent_rbac + bound_to_agent:
        if m["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            errs.append(f"{m['kind']}/{m['metadata']['name']}: cluster-wide RBAC for the gpu-agent")
    namespaces = [m for m in manifests if m.get("kind") == "Namespace"]
    automount = ps.get("automountServiceAccountToken")
    if not pod_mode:
        if automount is not False:
            errs.append("the agent pods mount a ServiceAccount token outside pod mode")
        errs += [f"{m['kind']}/{m['metadata']['name']}: agent RBAC outside pod mode" for m in agent_rbac + bound_to_agent]
        errs += [f"Namespace/{m['metadata']['name']} rendered outside pod mode" for m in namespaces]
        return errs
    if automount is not True:
        errs.append("pod mode: the agent pods do not mount their ServiceAccount token")
    roles = [m for m in agent_rbac if m["kind"] == "Role"]
    if len(roles) != 1:
        errs.append(f"pod mode: expected one agent Role, got {[m['metadata']['name'] for m in roles]}")
    for r in roles:
        if r["metadata"].get("namespace") != job_ns:
            errs.append(f"Role/{r['metadata']['name']} is in namespace {r['metadata'].get('namespace')}, not the job namespace {job_ns}")
        got = allowed_triples(r.get("rules") or [])
        if got != AGENT_JOB_TRIPLES or any(rule.get("resourceNames") or rule.get("nonResourceURLs") for rule in r.get("rules") or []):
            errs.append(f"Role/{r['metadata']['name']} grants {sorted(got)}, want exactly {sorted(AGENT_JOB_TRIPLES)}")
    role_names = {r["metadata"]["name"] for r in roles}
    bindings = [m for m in bound_to_agent if m["kind"] == "RoleBinding"]
    if len(bindings) != 1:
        errs.append(f"pod mode: expected one RoleBinding for the agent, got {[m['metadata']['name'] for m in bindings]}")
    for b in bindings:
        ref = b.get("roleRef") or {}
        if b["metadata"].get("namespace") != job_ns:
            errs.append(f"RoleBinding/{b['metadata']['name']} is in namespace {b['metadata'].get('namespace')}, not {job_ns}")
        if ref.get("kind") != "Role" or ref.get("name") not in role_names:
            errs.append(f"RoleBinding/{b['metadata']['name']} binds {ref.get('kind')}/{ref.get('name')}, not the agent's job Role")
        others = [s for s in b.get("subjects") or [] if not (s.get("kind") == "ServiceAccount" and s.get("name") == sa_name)]
        if others:
            errs.append(f"RoleBinding/{b['metadata']['name']} also binds {others}")
    for m in agent_rbac:
        if m["kind"] == "RoleBinding" and m not in bindings:
            errs.append(f"RoleBinding/{m['metadata']['name']}: an agent binding to someone else")
    if env.get("AITBC_JOB_NAMESPACE", {}).get("value") != job_ns:
        errs.append(f"AITBC_JOB_NAMESPACE is {env.get('AITBC_JOB_NAMESPACE', {}).get('value')!r}, want {job_ns!r}")
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        errs.append("pod mode: NODE_NAME does not come from spec.nodeName")
    if not env.get("AITBC_AGENT_IMAGE", {}).get("value"):
        errs.append("pod mode: AITBC_AGENT_IMAGE (the demo runtime's image) missing")
    state = next((v for v in ps.get("volumes") or [] if v["name"] == "state"), {})
    host = (state.get("hostPath") or {}).get("path")
    if not host:
        errs.append("pod mode: the agent's state dir is not a hostPath")
    elif env.get("AITBC_HOST_STATE_DIR", {}).get("value") != host:
        errs.append(f"AITBC_HOST_STATE_DIR is {env.get('AITBC_HOST_STATE_DIR', {}).get('value')!r}, the state hostPath is {host!r}")
    for flag in ("--job-cpu-limit", "--job-memory-limit"):
        if flag not in args:
            errs.append(f"pod mode: {flag} missing from args")
    nps = find(manifests, "NetworkPolicy", "gpu-agent")
    for np in nps:
        spec = np["spec"]
        if "Egress" in (spec.get("policyTypes") or []):
            ports = {p.get("port") for rule in spec.get("egress") or [] for p in rule.get("ports") or []
                     if p.get("protocol", "TCP") == "TCP"}
            open_all = any(not rule.get("ports") for rule in spec.get("egress") or [])
            if not open_all and not API_SERVER_PORTS <= ports:
                errs.append(f"NetworkPolicy/{np['metadata']['name']}: egress to the API server (TCP {sorted(API_SERVER_PORTS)}) not allowed, only {sorted(ports, key=str)}")
    if create_ns:
        ns = [m for m in namespaces if m["metadata"]["name"] == job_ns]
        if len(ns) != 1:
            errs.append(f"pod mode: Namespace {job_ns} not rendered")
        for m in ns:
            labels = m["metadata"].get("labels") or {}
            bad = {k: labels.get(k) for k, v in JOB_NS_LABELS.items() if labels.get(k) != v}
            if bad:
                errs.append(f"Namespace/{job_ns}: Pod Security labels {bad}, want {JOB_NS_LABELS}")
    if job_ns == release_ns:
        errs.append("the job namespace is the release namespace")
    return errs


POD_MODE_BASE = {"gpuAgent": {"isolation": "pod", "simulated": {"enabled": True}, "stateDir": {"type": "hostPath"}}}

# values the template must refuse, and a word its message must carry
JOB_ISOLATION_REFUSED = [
    ("pod mode with the emptyDir state dir", {"gpuAgent": {"isolation": "pod", "stateDir": {"type": "emptyDir"}}}, "hostPath"),
    ("pod mode with the default values' state dir", {"gpuAgent": {"isolation": "pod"}}, "hostPath"),
    ("pod mode, real GPUs held by the agent and job Pods asking the device plugin",
     {"gpuAgent": {"isolation": "pod", "stateDir": {"type": "hostPath"}, "gpuRequest": 1}}, "gpuRequest"),
    ("pod mode with the job namespace = the release namespace",
     {"gpuAgent": {**POD_MODE_BASE["gpuAgent"], "jobs": {"namespace": NAMESPACE}}}, "namespace"),
    ("process mode serving other providers", {"gpuAgent": {"isolation": "process", "serves": "any"}}, "serves"),
]


def job_isolation_guard_problems(render_fn: Callable[[dict], list[dict]]) -> list[str]:
    """Each of JOB_ISOLATION_REFUSED fails to render with a message naming the cause; the same
    pod-mode values with hostPath render."""
    import helm_python as helm

    errs = []
    for what, vals, word in JOB_ISOLATION_REFUSED:
        try:
            render_fn(vals)
        except helm.HelmError as e:
            if word not in str(e):
                errs.append(f"{what}: refused, but the message does not say {word!r}: {str(e)[:300]}")
            continue
        errs.append(f"{what}: rendered")
    try:
        render_fn(POD_MODE_BASE)
    except helm.HelmError as e:
        errs.append(f"pod mode with the hostPath state dir does not render: {str(e)[:300]}")
    return errs


# --------------------------------------------------------------------------------------------
# CRD schemas (OpenAPI v3 structural schema -> JSON Schema, strict like kubectl's field validation)


def crd_schema_to_jsonschema(s: Any) -> Any:
    if isinstance(s, list):
        return [crd_schema_to_jsonschema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k in ("properties", "patternProperties"):
            out[k] = {pk: crd_schema_to_jsonschema(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = crd_schema_to_jsonschema(v) if isinstance(v, (dict, list)) else v
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [crd_schema_to_jsonschema(x) for x in v]
        elif k.startswith("x-kubernetes-") or k in ("nullable", "format", "description", "example", "default"):
            continue
        else:
            out[k] = v
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else list(out["type"]) + ["null"]
    is_object = out.get("type") == "object" or (isinstance(out.get("type"), list) and "object" in out["type"])
    if s.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for key in ("apiVersion", "kind"):
            props.setdefault(key, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if is_object and "properties" in out and "additionalProperties" not in out and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


METADATA_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "generateName": {"type": "string"},
    },
    "additionalProperties": False,
}


def load_crds(crd_dir: str = CRD_DIR) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema of the whole object. Raises CheckError when absent."""
    files = sorted(glob.glob(os.path.join(crd_dir, "*.yaml")) + glob.glob(os.path.join(crd_dir, "*.yml")))
    if not files:
        raise CheckError(f"no CRD files in {os.path.relpath(crd_dir, ROOT)} (the operator's crdgen writes them): "
                         "examples cannot be validated, which is a failure, not a skip")
    out = {}
    for f in files:
        for doc in yaml.safe_load_all(open(f)):
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise CheckError(f"{f}: not a CustomResourceDefinition: {doc.get('kind')}")
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for v in spec["versions"]:
                if not v.get("served", False):
                    continue
                schema = v.get("schema", {}).get("openAPIV3Schema")
                if not schema:
                    raise CheckError(f"{f}: {kind} {v['name']} has no openAPIV3Schema")
                js = crd_schema_to_jsonschema(schema)
                js.setdefault("properties", {})
                js["properties"]["apiVersion"] = {"const": f"{group}/{v['name']}"}
                js["properties"]["kind"] = {"const": kind}
                js["properties"]["metadata"] = METADATA_SCHEMA
                js["additionalProperties"] = False
                js.setdefault("required", [])
                js["required"] = sorted(set(js["required"]) | {"apiVersion", "kind", "metadata"})
                out[(f"{group}/{v['name']}", kind)] = js
    return out


def validate_custom(obj: dict, crds: dict[tuple[str, str], dict]) -> list[str]:
    import jsonschema

    key = (obj.get("apiVersion"), obj.get("kind"))
    schema = crds.get(key)
    if schema is None:
        return [f"no CRD serves {key[1]} in {key[0]}"]
    v = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in sorted(v.iter_errors(obj), key=str)]


# --------------------------------------------------------------------------------------------
# Kubernetes schemas


def validate_k8s(obj: dict, version: str = K8S_VERSION) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


SERVICEMONITOR_REQUIRED = ("selector", "endpoints")


def validate_servicemonitor(obj: dict) -> list[str]:
    """prometheus-operator's CRD is not vendored: check its required shape by hand."""
    spec = obj.get("spec") or {}
    errs = [f"spec.{k} missing" for k in SERVICEMONITOR_REQUIRED if k not in spec]
    for i, ep in enumerate(spec.get("endpoints") or []):
        if not ep.get("port"):
            errs.append(f"spec.endpoints[{i}].port missing")
    return errs


# --------------------------------------------------------------------------------------------
# rendering


def render(values: dict) -> list[dict]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                d.setdefault("metadata", {}).setdefault("annotations", {})
                d["metadata"]["annotations"].setdefault("chart-check/source", path)
                docs.append(d)
    return docs


def strip_source(obj: dict) -> dict:
    o = copy.deepcopy(obj)
    ann = o.get("metadata", {}).get("annotations", {})
    ann.pop("chart-check/source", None)
    if not ann:
        o["metadata"].pop("annotations", None)
    return o


def notes(values: dict) -> str:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next((v for k, v in out.items() if k.endswith("NOTES.txt")), "")


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"):
        return obj["spec"]["template"]["spec"]
    if obj.get("kind") == "Pod":
        return obj["spec"]
    return None


ROOT_EXCEPTIONS = {"state-dir-owner"}  # documented: chowns the agent's hostPath, CAP_CHOWN only


def security_problems(obj: dict) -> list[str]:
    ps = pod_spec(obj)
    if ps is None:
        return []
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    psc = ps.get("securityContext") or {}
    errs = []
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errs.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    if ps.get("hostNetwork") or ps.get("hostPID") or ps.get("hostIPC"):
        errs.append(f"{name}: uses host namespaces")
    for c in (ps.get("initContainers") or []) + ps.get("containers", []):
        sc = c.get("securityContext") or {}
        cn = f"{name} container {c['name']}"
        if sc.get("readOnlyRootFilesystem") is not True:
            errs.append(f"{cn}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{cn}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            errs.append(f"{cn}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errs.append(f"{cn}: capabilities do not drop ALL")
        added = set(caps.get("add") or [])
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if c["name"] in ROOT_EXCEPTIONS:
            if added - {"CHOWN"}:
                errs.append(f"{cn}: adds capabilities beyond CHOWN: {sorted(added)}")
        else:
            if added:
                errs.append(f"{cn}: adds capabilities {sorted(added)}")
            if non_root is not True:
                errs.append(f"{cn}: runAsNonRoot is not true")
        if ((sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")) != "RuntimeDefault":
            errs.append(f"{cn}: seccompProfile is not RuntimeDefault")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    errs.append(f"{cn}: no {part}.{r}")
    return errs


def find(docs: list[dict], kind: str, component: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and (component is None or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]


def agent_contract(docs: list[dict], simulated: bool) -> list[str]:
    errs = []
    ds = find(docs, "DaemonSet", "gpu-agent")
    if len(ds) != 1:
        return [f"expected one gpu-agent DaemonSet, got {len(ds)}"]
    ps = ds[0]["spec"]["template"]["spec"]
    labels = ds[0]["spec"]["template"]["metadata"]["labels"]
    if labels.get("app.kubernetes.io/component") != "gpu-agent":
        errs.append("pod label app.kubernetes.io/component=gpu-agent missing")
    c = next(c for c in ps["containers"] if c["name"] == "gpu-agent")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports != {"grpc": 7070, "metrics": 9102}:
        errs.append(f"ports are {ports}, want grpc 7070 and metrics 9102")
    args = c.get("args", [])
    for flag, want in (("--listen", "0.0.0.0:7070"), ("--metrics-listen", "0.0.0.0:9102"), ("--state-dir", "/var/lib/aitbc-agent")):
        if flag not in args or args[args.index(flag) + 1] != want:
            errs.append(f"{flag} {want} missing from args")
    for flag in ("--chain-id", "--scheduler-key", "--isolation"):
        if flag not in args:
            errs.append(f"{flag} missing from args")
    env = {e["name"]: e for e in c.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        errs.append("NODE_NAME does not come from the downward API (spec.nodeName)")
    if ps.get("nodeSelector", {}).get("nvidia.com/gpu.present") != "true":
        errs.append("nodeSelector nvidia.com/gpu.present=true missing")
    if not any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in ps.get("tolerations", [])):
        errs.append("toleration for nvidia.com/gpu NoSchedule missing")
    chain_id = args[args.index("--chain-id") + 1] if "--chain-id" in args else None
    for node in find(docs, "Node"):
        if node["spec"].get("chainId") != chain_id:
            errs.append(f"agents sign for chain id {chain_id}, the chain Node is {node['spec'].get('chainId')}")
    if not chain_id:
        errs.append("empty --chain-id")
    gpu_req = (c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu")
    if simulated:
        if gpu_req is not None:
            errs.append("simulated agents must not request nvidia.com/gpu")
        for flag in ("--no-nvml", "--simulate-gpus", "--simulated-gpu-memory-mib"):
            if flag not in args:
                errs.append(f"simulated agents need {flag}")
    else:
        sees_all = env.get("NVIDIA_VISIBLE_DEVICES", {}).get("value") == "all" and ps.get("runtimeClassName")
        if not gpu_req and not sees_all:
            errs.append("real-GPU agents must request nvidia.com/gpu (or see every GPU: NVIDIA_VISIBLE_DEVICES=all with a runtimeClassName)")
        if "--no-nvml" in args:
            errs.append("real-GPU agents must not pass --no-nvml")
    return errs


def lint_errors(chart_dir: str, values: dict, k8s_version: str = K8S_VERSION) -> list:
    """Helm's lint, strict (warnings count as errors): the findings of severity >= warning."""
    import helm_python as helm

    res = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE, kube_version=f"v{k8s_version}")
    return [m for m in res.get("messages", []) if m.get("severity", 0) >= 2] + list(res.get("errors") or [])


# --------------------------------------------------------------------------------------------
# images: docker/<component>.Dockerfile builds the workspace binary aitbc-<component>


DOCKER_DIR = os.path.join(ROOT, "docker")


def workspace_bins() -> set[str]:
    import json
    import subprocess

    out = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise CheckError(f"cargo metadata failed: {out.stderr.strip()[-500:]}")
    meta = json.loads(out.stdout)
    return {t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}


def dockerfile_problems(path: str, bins: set[str] | None) -> list[str]:
    name = os.path.basename(path)
    component = name[: -len(".Dockerfile")]
    binary = f"aitbc-{component}"
    text = open(path).read()
    errs = []
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    if len(stages) < 2:
        errs.append(f"{name}: not multi-stage")
    if "ARG RUST_IMAGE=rust:1.95-bookworm" not in text or not stages or stages[0] != "${RUST_IMAGE}":
        errs.append(f"{name}: builder is not rust:1.95-bookworm")
    if not re.search(r"apt-get install[^\n]*clang libclang-dev protobuf-compiler", text):
        errs.append(f"{name}: builder lacks clang, libclang-dev, protobuf-compiler")
    if "ARG RUNTIME_IMAGE=debian:bookworm-slim" not in text and "distroless/cc" not in text:
        errs.append(f"{name}: runtime is neither debian:bookworm-slim nor distroless/cc")
    if not re.search(r"^USER 65532(:65532)?$", text, re.M):
        errs.append(f"{name}: does not run as user 65532")
    if f"cargo build --release --locked --bin {binary}" not in text:
        errs.append(f"{name}: does not build --bin {binary}")
    final = text.split(f"FROM ${{RUNTIME_IMAGE}}")[-1]
    copies = re.findall(r"^COPY\s+(.*)$", final, re.M)
    if not any(f"/out/{binary} /usr/local/bin/{binary}" in c for c in copies):
        errs.append(f"{name}: runtime stage does not copy the binary")
    if any("/out/home" not in c and f"/out/{binary}" not in c for c in copies):
        errs.append(f"{name}: runtime stage copies more than the binary: {copies}")
    if re.search(r"^RUN\b", final, re.M):
        errs.append(f"{name}: runtime stage runs commands (only the binary belongs there)")
    if f'ENTRYPOINT ["/usr/local/bin/{binary}"]' not in text:
        errs.append(f"{name}: ENTRYPOINT is not the binary")
    if bins is not None and binary not in bins:
        errs.append(f"{name}: the workspace has no binary {binary}")
    return errs


# --------------------------------------------------------------------------------------------
# the rendered gpu-agent command line, run by the real binary


def agent_binary() -> str | None:
    if os.environ.get("AITBC_GPU_AGENT_BIN"):
        return os.environ["AITBC_GPU_AGENT_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    for profile in ("debug", "release"):
        p = os.path.join(target, profile, "aitbc-gpu-agent")
        if os.access(p, os.X_OK):
            return p
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendered_agent_command(binary: str, docs: list[dict], workdir: str) -> tuple[list[str], dict, int, int] | str:
    """The DaemonSet's exact command and args (addresses moved to loopback ports, the state dir
    to workdir, $(VAR) expanded from the rendered env), its env, and the two ports; or a problem."""
    import subprocess

    ds = find(docs, "DaemonSet", "gpu-agent")[0]
    c = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "gpu-agent")
    ident = subprocess.run([binary, "identity", "--state-dir", os.path.join(workdir, "scheduler")],
                           capture_output=True, text=True, timeout=30)
    m = re.search(r"^agent_key:\s*([0-9a-f]{64})", ident.stdout, re.M)
    if not m:
        return f"cannot make a test key with `{binary} identity`: {ident.stderr[-500:]}"
    env = {"PATH": "/usr/bin:/bin", "NODE_NAME": "chart-check-node", "POD_NAMESPACE": NAMESPACE}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e["name"] == "AITBC_SCHEDULER_KEY":
            env[e["name"]] = m.group(1)  # from the Secret in a cluster
        elif e["name"] == "AITBC_AGENT_KEY":
            env[e["name"]] = "11" * 32  # from the Secret in a cluster
    grpc, metrics = free_port(), free_port()
    state = os.path.join(workdir, "state")
    args = []
    for a in c["args"]:
        a = re.sub(r"\$\((\w+)\)", lambda mm: env.get(mm.group(1), mm.group(0)), a)
        a = {"0.0.0.0:7070": f"127.0.0.1:{grpc}", "0.0.0.0:9102": f"127.0.0.1:{metrics}",
             "/var/lib/aitbc-agent": state}.get(a, a)
        args.append(a)
    if "$(" in " ".join(args):
        return f"unexpanded variable in args: {args}"
    if c.get("command") != ["aitbc-gpu-agent"]:
        return f"container command is {c.get('command')}, not the agent binary"
    return [binary] + args, env, grpc, metrics  # command is ["aitbc-gpu-agent"], the image's binary


POD_MODE_NO_API = "no Kubernetes client"


def run_rendered_agent_pod_mode(binary: str, docs: list[dict], workdir: str, timeout: float = 30.0) -> list[str]:
    """Pod mode without a cluster: the rendered command line and env must get the agent past its
    flags, NODE_NAME and the host state dir to the point where it looks for the Kubernetes API
    (and, finding none, exits saying so)."""
    import subprocess

    got = rendered_agent_command(binary, docs, workdir)
    if isinstance(got, str):
        return [got]
    cmd, env, _, _ = got
    env = {**env, "HOME": workdir, "KUBECONFIG": os.path.join(workdir, "no-kubeconfig")}
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"pod-mode agent still running after {timeout}s without a Kubernetes API"]
    text = out.stdout + out.stderr
    if out.returncode == 0 or POD_MODE_NO_API not in text:
        return [f"pod-mode agent exited {out.returncode} without reaching the Kubernetes client: {text[-1500:]}"]
    return []


def run_rendered_agent(binary: str, docs: list[dict], workdir: str, timeout: float = 30.0) -> list[str]:
    """Start the agent with the DaemonSet's exact command and args (rendered_agent_command) and
    check that it serves /healthz and gRPC. Returns problems."""
    import subprocess
    import time
    import urllib.request

    got = rendered_agent_command(binary, docs, workdir)
    if isinstance(got, str):
        return [got]
    cmd, env, grpc, metrics = got
    log = open(os.path.join(workdir, "agent.log"), "w")
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    problems: list[str] = []
    try:
        deadline = time.time() + timeout
        while True:
            if p.poll() is not None:
                problems.append(f"agent exited {p.returncode} with the rendered args: {open(log.name).read()[-1500:]}")
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                problems.append(f"agent did not serve /healthz within {timeout}s: {open(log.name).read()[-1500:]}")
                break
            time.sleep(0.2)
        if not problems:
            import socket

            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", grpc)) != 0:
                    problems.append("agent does not listen on its gRPC port")
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
                if r.status != 200:
                    problems.append(f"/metrics answered {r.status}")
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
    return problems


# --------------------------------------------------------------------------------------------
# main


def cargo_version() -> str:
    text = open(os.path.join(ROOT, "Cargo.toml")).read()
    m = re.search(r"^\[workspace\.package\][^\[]*?^version\s*=\s*\"([^\"]+)\"", text, re.M | re.S)
    if not m:
        raise CheckError("no [workspace.package] version in Cargo.toml")
    return m.group(1)


def profiles() -> list[tuple[str, dict]]:
    out = [("default", {})]
    for f in sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml"))):
        out.append((os.path.basename(f), yaml.safe_load(open(f)) or {}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-version", default=K8S_VERSION)
    args = ap.parse_args(argv)
    rep = Report()

    import helm_python as helm
    import kubernetes_validate

    print(f"chart-check: Helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"Kubernetes schemas {args.k8s_version} (kubernetes-validate {kubernetes_validate.__version__}, strict)")

    print("[versions]")

    def versions() -> None:
        chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
        cv = cargo_version()
        if str(chart["version"]) != cv or str(chart["appVersion"]) != cv:
            raise CheckError(f"Chart.yaml version {chart['version']} / appVersion {chart['appVersion']} != Cargo workspace version {cv}")

    rep.check("Chart.yaml version == appVersion == Cargo workspace version", versions)

    print("[images]")
    components = ["node", "operator", "gpu-agent", "cli"]

    def dockerfiles() -> None:
        bins = workspace_bins()
        errs = []
        for c in components:
            path = os.path.join(DOCKER_DIR, f"{c}.Dockerfile")
            if not os.path.exists(path):
                errs.append(f"docker/{c}.Dockerfile missing")
                continue
            errs += dockerfile_problems(path, bins)
        if errs:
            raise CheckError("; ".join(errs))

    rep.check(f"docker/{{{','.join(components)}}}.Dockerfile: multi-stage, rust:1.95-bookworm, non-root 65532, only the workspace binary", dockerfiles)

    def chart_images() -> None:
        vals = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
        repos = {vals["operator"]["image"]["repository"], vals["gpuAgent"]["image"]["repository"], vals["chain"]["image"]["repository"]}
        want = {"aitbc-operator", "aitbc-gpu-agent", "aitbc-node"}
        if repos != want or vals["image"]["registry"] != "ghcr.io/aitbc" or vals["image"]["tag"]:
            raise CheckError(f"chart images {vals['image']['registry']}/{sorted(repos)}:{vals['image']['tag'] or 'appVersion'} are not what make images tags")

    rep.check("chart image names == make images tags (ghcr.io/aitbc/aitbc-<component>:<version>)", chart_images)

    allowed_doc = yaml.safe_load(open(ALLOWED_RBAC))
    def schema_fresh() -> None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("gen_values_schema", os.path.join(ROOT, "ci", "gen-values-schema.py"))
        gen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gen)
        if open(os.path.join(CHART, "values.schema.json")).read() != gen.TEXT:
            raise CheckError("charts/aitbc/values.schema.json differs from ci/gen-values-schema.py: run python3 ci/gen-values-schema.py")

    rep.check("values.schema.json is what ci/gen-values-schema.py writes", schema_fresh)

    def schema_covers_values() -> None:
        import helm_python as helm

        with helm.Chart.load(CHART) as chart:
            chart.validate_schema(chart.values)
            for name, vals in profiles():
                chart.validate_schema(chart.merge_values(vals))

    rep.check("default values and every profile satisfy values.schema.json", schema_covers_values)

    print("[rbac self-test]")
    rep.check("RBAC review rejects too-broad roles and accepts the declared list", lambda: rbac_self_test(allowed_doc))

    crds: dict = {}
    print("[crds]")

    def crd_load() -> None:
        crds.update(load_crds())
        kinds = {k for _, k in crds}
        missing = EXPECTED_KINDS - kinds
        if missing:
            raise CheckError(f"CRDs missing for {sorted(missing)}")
        for av, kind in sorted(crds):
            if not av.startswith("aitbc.io/"):
                raise CheckError(f"unexpected CRD group: {av} {kind}")

    rep.check(f"generated CRDs in charts/aitbc/crds serve {sorted(EXPECTED_KINDS)}", crd_load)

    def crds_valid_k8s() -> None:
        errs = []
        for f in sorted(glob.glob(os.path.join(CRD_DIR, "*.y*ml"))):
            for d in yaml.safe_load_all(open(f)):
                if d:
                    errs += [f"{os.path.basename(f)}: {e}" for e in validate_k8s(d, args.k8s_version)]
        if errs:
            raise CheckError("; ".join(errs))

    if crds:
        rep.check("CRD manifests are valid CustomResourceDefinitions", crds_valid_k8s)

    print("[schema negative tests]")
    bad_values = [
        ("unknown top-level key", {"operatr": {}}),
        ("unknown nested key", {"gpuAgent": {"simulated": {"enabled": True, "gpu": 2}}}),
        ("bad enum", {"image": {"pullPolicy": "Sometimes"}}),
        ("negative minimum", {"chain": {"create": True, "validators": 0}}),
        ("wrong type", {"gpuAgent": {"gpuRequest": "all"}}),
        ("bad hex key", {"scheduler": {"publicKey": "not-hex"}}),
        ("bad chain id", {"chainId": "Bad_Chain"}),
        ("bad isolation mode", {"gpuAgent": {"isolation": "container"}}),
        ("bad job namespace", {"gpuAgent": {"jobs": {"namespace": "Jobs_NS"}}}),
        ("unknown jobs key", {"gpuAgent": {"jobs": {"cpu": "4"}}}),
    ]
    for what, vals in bad_values:
        def reject(vals: dict = vals) -> None:
            try:
                render(vals)
            except helm.HelmError:
                return
            raise CheckError(f"values.schema.json accepted {vals}")

        rep.check(f"values.schema.json rejects {what}", reject)

    def fail_guard() -> None:
        try:
            render({"operator": {"replicas": 2, "leaderElection": False}})
        except helm.HelmError:
            return
        raise CheckError("replicas=2 without leader election rendered")

    rep.check("template refuses operator.replicas>1 without leader election", fail_guard)

    def chain_id_guard() -> None:
        try:
            render({"chainId": "aitbc-a", "chain": {"create": True, "chainId": "aitbc-b"}})
        except helm.HelmError:
            return
        raise CheckError("agents' chainId differing from the chain's rendered")

    rep.check("template refuses agents signing for another chain id", chain_id_guard)

    def pod_mode_guard() -> None:
        errs = job_isolation_guard_problems(render)
        if errs:
            raise CheckError("; ".join(errs))

    rep.check("job_isolation: template refuses pod mode without the hostPath state dir (and other unsafe pod-mode values)", pod_mode_guard)

    for pname, vals in profiles():
        print(f"[profile {pname}]")
        docs: list[dict] = []

        def do_render(vals: dict = vals) -> None:
            docs.extend(render(vals))
            if not docs:
                raise CheckError("rendered nothing")

        rep.check(f"{pname}: helm render", do_render)
        if not docs:
            continue

        def lint(vals: dict = vals) -> None:
            errs = lint_errors(CHART, vals, args.k8s_version)
            if errs:
                raise CheckError(f"helm lint errors: {errs}")

        rep.check(f"{pname}: helm lint --strict (no errors, no warnings)", lint)

        def k8s_schemas(docs: list[dict] = docs) -> None:
            errs = []
            for d in docs:
                obj = strip_source(d)
                ident = f"{d['kind']}/{d['metadata']['name']}"
                if d["apiVersion"].startswith("aitbc.io/"):
                    if not crds:
                        errs.append(f"{ident}: no CRDs to validate against")
                    else:
                        errs += [f"{ident}: {e}" for e in validate_custom(obj, crds)]
                elif d["apiVersion"].startswith("monitoring.coreos.com/"):
                    errs += [f"{ident}: {e}" for e in validate_servicemonitor(obj)]
                else:
                    errs += [f"{ident}: {e}" for e in validate_k8s(obj, args.k8s_version)]
            if errs:
                raise CheckError("; ".join(errs))

        kinds = sorted({d["kind"] for d in docs})
        if any(d["apiVersion"].startswith("monitoring.coreos.com/") for d in docs):
            rep.note(f"{pname}: ServiceMonitor checked for its required fields only (prometheus-operator CRD not vendored)")
        rep.check(f"{pname}: {len(docs)} manifests valid ({', '.join(kinds)})", k8s_schemas)

        def rbac(docs: list[dict] = docs) -> None:
            problems = review_rbac([strip_source(d) for d in docs], allowed_doc)
            if problems:
                raise CheckError("; ".join(problems))

        if vals.get("operator", {}).get("enabled", True):
            rep.check(f"{pname}: RBAC grants nothing beyond ci/rbac-allowed.yaml", rbac)

        def security(docs: list[dict] = docs) -> None:
            errs = [e for d in docs for e in security_problems(d)]
            if errs:
                raise CheckError("; ".join(errs))

        rep.check(f"{pname}: security defaults of every container", security)

        host_path = (vals.get("gpuAgent", {}).get("stateDir", {}).get("type")) == "hostPath"

        def restricted(docs: list[dict] = docs, host_path: bool = host_path) -> None:
            errs = [e for d in docs for e in key_custody_restricted_problems(d, allow_host_path=host_path)]
            if errs:
                raise CheckError("; ".join(errs))

        rep.check(f"{pname}: key_custody: every rendered pod meets Pod Security restricted"
                  + (" (but the opted-in agent hostPath)" if host_path else ", no hostPath"), restricted)

        def secrets_rbac(docs: list[dict] = docs) -> None:
            errs = key_custody_secret_problems([strip_source(d) for d in docs])
            if errs:
                raise CheckError("; ".join(errs))

        rep.check(f"{pname}: key_custody: no role lists, watches or deletes Secrets", secrets_rbac)

        wns = vals.get("watchNamespaces") or []

        def scope(docs: list[dict] = docs, wns: list = wns, vals: dict = vals) -> None:
            errs = key_custody_scope_problems([strip_source(d) for d in docs], wns, job_namespace=job_isolation_settings(vals)[1])
            if errs:
                raise CheckError("; ".join(errs))

        rep.check(f"{pname}: key_custody: RBAC scope ({'Roles in ' + ','.join(wns) if wns else 'one ClusterRole'})", scope)

        pod_mode, job_ns, create_ns = job_isolation_settings(vals)

        def job_isolation(docs: list[dict] = docs, pod_mode: bool = pod_mode, job_ns: str = job_ns, create_ns: bool = create_ns) -> None:
            errs = job_isolation_problems([strip_source(d) for d in docs], pod_mode, job_ns, create_ns)
            if errs:
                raise CheckError("; ".join(errs))

        if vals.get("gpuAgent", {}).get("enabled", True):
            rep.check(f"{pname}: job_isolation: " + (f"pod mode, the agent's Role only in {job_ns} with exactly its verbs, no ClusterRole, API server egress, Pod Security labels"
                                                   if pod_mode else "no agent token, no agent RBAC, no job namespace"), job_isolation)

        def policies_on(docs: list[dict] = docs, vals: dict = vals) -> None:
            if vals.get("gpuAgent", {}).get("enabled", True) and not find(docs, "NetworkPolicy", "gpu-agent"):
                raise CheckError("no gpu-agent NetworkPolicy")
            for n in find(docs, "Node"):
                if not n["spec"].get("networkPolicy", {}).get("enabled", True):
                    raise CheckError(f"Node/{n['metadata']['name']}: networkPolicy disabled")

        rep.check(f"{pname}: key_custody: NetworkPolicies on", policies_on)

        op_bin = operator_binary()
        for node in find(docs, "Node"):
            if op_bin:
                def op_pods(node: dict = node, op_bin: str = op_bin) -> None:
                    errs = key_custody_operator_pod_problems(operator_rendered(op_bin, node))
                    if errs:
                        raise CheckError("; ".join(errs))

                rep.check(f"{pname}: key_custody: every pod the operator renders for Node/{node['metadata']['name']} meets restricted, one key each", op_pods)
            else:
                rep.note(f"{pname}: operator-rendered pods NOT checked: no aitbc-operator binary "
                         "(build it, or set AITBC_OPERATOR_BIN / CARGO_TARGET_DIR); its Rust tests check them too")

        def namespaced(docs: list[dict] = docs, wns: list = wns, job_ns: str = job_ns, pod_mode: bool = pod_mode) -> None:
            cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
            errs = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
                    if d["kind"] not in cluster_scoped and d["metadata"].get("namespace") != NAMESPACE
                    and not (d["kind"] in ("Role", "RoleBinding") and d["metadata"].get("namespace") in wns)
                    and not (pod_mode and is_agent_rbac(d) and d["metadata"].get("namespace") == job_ns)]
            if errs:
                raise CheckError(f"namespaced objects without the release namespace: {errs}")

        rep.check(f"{pname}: every namespaced object carries the release namespace", namespaced)

        sim = bool(vals.get("gpuAgent", {}).get("simulated", {}).get("enabled", False))

        def agent(docs: list[dict] = docs, sim: bool = sim) -> None:
            errs = agent_contract(docs, sim)
            if errs:
                raise CheckError("; ".join(errs))

        rep.check(f"{pname}: gpu-agent contract ({'simulated' if sim else 'real'} GPUs)", agent)

        binary = agent_binary()
        if binary and pod_mode:
            def agent_pod_mode(docs: list[dict] = docs, binary: str = binary) -> None:
                import tempfile

                with tempfile.TemporaryDirectory(prefix="chart-check-agent-") as d:
                    errs = run_rendered_agent_pod_mode(binary, docs, d)
                if errs:
                    raise CheckError("; ".join(errs))

            rep.check(f"{pname}: job_isolation: the real aitbc-gpu-agent accepts the rendered pod-mode command line "
                      "and env (stops at the missing Kubernetes API)", agent_pod_mode)
        elif binary:
            def agent_runs(docs: list[dict] = docs, binary: str | None = binary) -> None:
                import tempfile

                with tempfile.TemporaryDirectory(prefix="chart-check-agent-") as d:
                    errs = run_rendered_agent(binary, docs, d)
                if errs:
                    raise CheckError("; ".join(errs))

            rep.check(f"{pname}: the real aitbc-gpu-agent ({binary}) starts with the rendered command line and serves", agent_runs)
        else:
            rep.note(f"{pname}: rendered agent command line NOT run: no aitbc-gpu-agent binary "
                     "(build it, or set AITBC_GPU_AGENT_BIN / CARGO_TARGET_DIR)")

        def notes_text(vals: dict = vals) -> None:
            text = notes(vals)
            for want in ("chainnodes", "aitbc-cli", "examples/", "wallets"):
                if want not in text:
                    raise CheckError(f"NOTES.txt does not mention {want!r}")

        rep.check(f"{pname}: NOTES.txt tells what to do next", notes_text)

    print("[examples]")
    example_files = sorted(glob.glob(os.path.join(EXAMPLES, "*.yaml")) + glob.glob(os.path.join(EXAMPLES, "*.yml")))

    def examples_present() -> None:
        if not example_files:
            raise CheckError("no examples/*.yaml to validate")

    rep.check("examples/*.yaml exist", examples_present)
    seen_kinds: set[str] = set()
    for f in example_files:
        def one(f: str = f) -> None:
            errs = []
            n = 0
            for d in yaml.safe_load_all(open(f)):
                if not d:
                    continue
                n += 1
                ident = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
                if str(d.get("apiVersion", "")).startswith("aitbc.io/"):
                    seen_kinds.add(d["kind"])
                    if not crds:
                        errs.append(f"{ident}: no CRDs in charts/aitbc/crds to validate against")
                    else:
                        errs += [f"{ident}: {e}" for e in validate_custom(d, crds)]
                else:
                    errs += [f"{ident}: {e}" for e in validate_k8s(d, args.k8s_version)]
            if n == 0:
                errs.append("no documents")
            if errs:
                raise CheckError("; ".join(errs))

        rep.check(f"examples/{os.path.basename(f)}", one)

    op_bin = operator_binary()
    for f in example_files:
        nodes = [d for d in yaml.safe_load_all(open(f)) if d and d.get("kind") == "Node"]
        for node in nodes:
            node.setdefault("metadata", {}).setdefault("namespace", "aitbc")
            if op_bin:
                def ex_pods(node: dict = node, op_bin: str = op_bin) -> None:
                    errs = key_custody_operator_pod_problems(operator_rendered(op_bin, node))
                    if errs:
                        raise CheckError("; ".join(errs))

                rep.check(f"examples/{os.path.basename(f)}: key_custody: operator-rendered pods of Node/{node['metadata']['name']} meet restricted", ex_pods)

    if example_files:
        missing = EXPECTED_KINDS - seen_kinds
        if missing:
            rep.note(f"examples/ holds no {sorted(missing)} resource")
    print()
    print("chart-check summary")
    print(f"chart-check: {len(rep.passed)} passed, {len(rep.failed)} failed")
    for name, why in rep.failed:
        print(f"  FAILED: {name}: {' '.join(why.split())[:2000]}")
    for n in rep.notes:
        print(f"  note: {n}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
