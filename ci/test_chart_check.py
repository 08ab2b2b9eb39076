"""Unit tests of ci/chart-check.py's checkers: each must be able to FAIL.

Run: python -m pytest ci/ (make chart-check does).
"""

import copy
import importlib.util
import os
import sys

import pytest
import yaml

HERE = os.path.dirname(__file__)
_spec = importlib.util.spec_from_file_location("chart_check", os.path.join(HERE, "chart-check.py"))
cc = importlib.util.module_from_spec(_spec)
sys.modules["chart_check"] = cc
_spec.loader.exec_module(cc)

ALLOWED = yaml.safe_load(open(os.path.join(HERE, "rbac-allowed.yaml")))


@pytest.fixture(scope="module")
def default_docs():
    return [cc.strip_source(d) for d in cc.render({})]


@pytest.fixture(scope="module")
def simulated_docs():
    return [cc.strip_source(d) for d in cc.render({"gpuAgent": {"simulated": {"enabled": True}}})]


def cluster_role(docs):
    return next(d for d in docs if d["kind"] == "ClusterRole")


@pytest.mark.parametrize("role", cc.TOO_BROAD_ROLES, ids=lambda r: r["metadata"]["name"])
def test_too_broad_roles_are_rejected(role):
    assert cc.rbac_violations(role, cc.allowed_triples(ALLOWED["clusterRole"]))


def test_declared_list_is_accepted():
    role = {"kind": "ClusterRole", "metadata": {"name": "x"}, "rules": ALLOWED["clusterRole"]}
    assert cc.rbac_violations(role, cc.allowed_triples(ALLOWED["clusterRole"])) == []


def test_self_test_passes():
    cc.rbac_self_test(ALLOWED)


def test_rendered_rbac_is_within_the_declared_list(default_docs):
    assert cc.review_rbac(default_docs, ALLOWED) == []


def test_rendered_role_with_one_extra_verb_fails(default_docs):
    docs = copy.deepcopy(default_docs)
    cluster_role(docs)["rules"][0]["verbs"].append("delete")  # delete on aitbc.io resources: not declared
    problems = cc.review_rbac(docs, ALLOWED)
    assert any("delete" in p for p in problems)


def test_rendered_role_with_a_wildcard_fails(default_docs):
    docs = copy.deepcopy(default_docs)
    cluster_role(docs)["rules"].append({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]})
    assert cc.review_rbac(docs, ALLOWED)


def test_leases_only_in_the_namespaced_role(default_docs):
    docs = copy.deepcopy(default_docs)
    cluster_role(docs)["rules"].append(ALLOWED["role"][0])
    assert cc.review_rbac(docs, ALLOWED)


def test_binding_to_cluster_admin_fails(default_docs):
    docs = copy.deepcopy(default_docs)
    crb = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    crb["roleRef"]["name"] = "cluster-admin"
    assert any("cluster-admin" in p for p in cc.review_rbac(docs, ALLOWED))


def test_missing_crds_fail_not_skip(tmp_path):
    with pytest.raises(cc.CheckError):
        cc.load_crds(str(tmp_path))


def test_security_defaults_hold_and_can_fail(default_docs):
    assert [e for d in default_docs for e in cc.security_problems(d)] == []
    docs = copy.deepcopy(default_docs)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    del dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    errs = cc.security_problems(dep)
    assert any("drop ALL" in e for e in errs) and any("limits" in e for e in errs)


def test_agent_contract(default_docs, simulated_docs):
    assert cc.agent_contract(default_docs, simulated=False) == []
    assert cc.agent_contract(simulated_docs, simulated=True) == []
    # the real-GPU rendering requests nvidia.com/gpu, so judged as simulated it must fail
    assert cc.agent_contract(default_docs, simulated=True)
    assert cc.agent_contract(simulated_docs, simulated=False)


def test_simulated_agent_args(simulated_docs):
    ds = next(d for d in simulated_docs if d["kind"] == "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--simulate-gpus") + 1] == "2"
    assert "--no-nvml" in args


def test_k8s_validation_catches_unknown_fields(default_docs):
    dep = copy.deepcopy(next(d for d in default_docs if d["kind"] == "Deployment"))
    assert cc.validate_k8s(dep) == []
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert cc.validate_k8s(dep)


def test_crd_validation(tmp_path):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "wallets.aitbc.io"},
        "spec": {
            "group": "aitbc.io",
            "names": {"kind": "Wallet", "plural": "wallets"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "amount": {"type": "string", "nullable": True},
                        "port": {"x-kubernetes-int-or-string": True},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    }},
                    "status": {"type": "object", "nullable": True},
                }}},
            }],
        },
    }
    (tmp_path / "wallets.yaml").write_text(yaml.safe_dump(crd))
    crds = cc.load_crds(str(tmp_path))
    ok = {"apiVersion": "aitbc.io/v1alpha1", "kind": "Wallet", "metadata": {"name": "a"},
          "spec": {"amount": None, "port": 80, "free": {"anything": 1}}}
    assert cc.validate_custom(ok, crds) == []
    assert cc.validate_custom({**ok, "spec": {"amont": "1"}}, crds)  # typo: unknown field
    assert cc.validate_custom({**ok, "spec": {"port": 1.5}}, crds)
    assert cc.validate_custom({**ok, "metadata": {"name": "Bad_Name"}}, crds)
    assert cc.validate_custom({**ok, "apiVersion": "aitbc.io/v1"}, crds)


def test_schema_rejects_typos():
    import helm_python as helm

    with pytest.raises(helm.HelmError):
        cc.render({"gpuAgent": {"simulatd": {}}})


def test_dockerfiles_pass_and_a_bad_one_fails(tmp_path):
    for c in ["node", "operator", "gpu-agent", "cli"]:
        assert cc.dockerfile_problems(os.path.join(cc.DOCKER_DIR, f"{c}.Dockerfile"), None) == []
    good = open(os.path.join(cc.DOCKER_DIR, "node.Dockerfile")).read()
    bad = tmp_path / "node.Dockerfile"
    bad.write_text(good.replace("USER 65532:65532", "USER root").replace(
        "ENV HOME=/home/nonroot", "RUN apt-get update && apt-get install -y curl\nCOPY . /src"))
    errs = cc.dockerfile_problems(str(bad), {"aitbc-node"})
    assert any("65532" in e for e in errs)
    assert any("runs commands" in e for e in errs)
    assert any("more than the binary" in e for e in errs)
    assert any("no binary" in e for e in cc.dockerfile_problems(os.path.join(cc.DOCKER_DIR, "node.Dockerfile"), {"other"}))


def test_lint_passes_and_can_fail(tmp_path):
    import shutil

    assert cc.lint_errors(cc.CHART, {}) == []
    broken = tmp_path / "aitbc"
    shutil.copytree(cc.CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    assert cc.lint_errors(str(broken), {})


@pytest.mark.skipif(cc.agent_binary() is None, reason="no aitbc-gpu-agent binary (set AITBC_GPU_AGENT_BIN or CARGO_TARGET_DIR)")
def test_rendered_agent_runs_and_a_bad_flag_fails(tmp_path):
    docs = cc.render({"gpuAgent": {"simulated": {"enabled": True}}})
    (tmp_path / "ok").mkdir()
    assert cc.run_rendered_agent(cc.agent_binary(), docs, str(tmp_path / "ok")) == []
    bad = cc.render({"gpuAgent": {"simulated": {"enabled": True}, "extraArgs": ["--no-such-flag"]}})
    (tmp_path / "bad").mkdir()
    assert cc.run_rendered_agent(cc.agent_binary(), bad, str(tmp_path / "bad"))


# ---- key custody (issue 16) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced_docs():
    return [cc.strip_source(d) for d in cc.render({"watchNamespaces": ["team-a", "team-b"]})]


def test_key_custody_default_install_meets_restricted_without_hostpath(default_docs):
    assert [e for d in default_docs for e in cc.key_custody_restricted_problems(d)] == []
    ds = next(d for d in default_docs if d["kind"] == "DaemonSet")
    assert not any("hostPath" in v for v in ds["spec"]["template"]["spec"]["volumes"])
    assert not ds["spec"]["template"]["spec"].get("initContainers")


def test_key_custody_restricted_check_can_fail(default_docs):
    hostpath = [cc.strip_source(d) for d in cc.render({"gpuAgent": {"stateDir": {"type": "hostPath"}}})]
    ds = next(d for d in hostpath if d["kind"] == "DaemonSet")
    errs = cc.key_custody_restricted_problems(ds)
    assert any("hostPath" in e for e in errs) and any("root init container" in e for e in errs)
    assert cc.key_custody_restricted_problems(ds, allow_host_path=True) == []
    dep = copy.deepcopy(next(d for d in default_docs if d["kind"] == "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"] = 8080
    dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    del dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"]
    errs = cc.key_custody_restricted_problems(dep)
    assert any("hostPort" in e for e in errs) and any("UID 0" in e for e in errs)


def test_key_custody_no_role_lists_watches_or_deletes_secrets(default_docs):
    assert cc.key_custody_secret_problems(default_docs) == []
    docs = copy.deepcopy(default_docs)
    role = next(d for d in docs if d["kind"] == "ClusterRole" and not cc.is_user_role(d))
    rule = next(r for r in role["rules"] if "secrets" in r["resources"])
    rule["verbs"] = rule["verbs"] + ["list", "delete"]
    assert cc.key_custody_secret_problems(docs)
    assert cc.review_rbac(docs, ALLOWED), "the declared list does not have them either"


def test_key_custody_people_roles_aggregate_and_never_touch_secrets(default_docs):
    users = {d["metadata"]["name"]: d for d in default_docs if cc.is_user_role(d)}
    assert set(users) == {"aitbc-viewer", "aitbc-editor"}
    assert users["aitbc-viewer"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert users["aitbc-editor"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "aggregate-to-view" not in " ".join(users["aitbc-editor"]["metadata"]["labels"])
    docs = copy.deepcopy(default_docs)
    editor = next(d for d in docs if d["metadata"]["name"] == "aitbc-editor")
    editor["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    assert cc.key_custody_secret_problems(docs)
    assert cc.review_rbac(docs, ALLOWED)


def test_key_custody_watch_namespaces_render_roles_not_a_cluster_role(namespaced_docs, default_docs):
    assert cc.key_custody_scope_problems(namespaced_docs, ["team-a", "team-b"]) == []
    assert cc.review_rbac(namespaced_docs, ALLOWED) == []
    assert not [d for d in namespaced_docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding") and not cc.is_user_role(d)]
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in namespaced_docs if d["kind"] == "Role"}
    assert {ns for ns, _ in roles} == {"team-a", "team-b", cc.NAMESPACE}
    dep = next(d for d in namespaced_docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AITBC_WATCH_NAMESPACE"] == "team-a,team-b"
    assert env["AITBC_AGENT_NAMESPACE"] == cc.NAMESPACE
    # the check fails on a cluster-wide install judged as namespaced, and vice versa
    assert cc.key_custody_scope_problems(default_docs, ["team-a"])
    assert cc.key_custody_scope_problems(namespaced_docs, [])


def test_key_custody_network_policies_are_on_by_default(default_docs):
    nps = [d for d in default_docs if d["kind"] == "NetworkPolicy"]
    assert nps, "the agents' NetworkPolicy is rendered by default"
    chain = [cc.strip_source(d) for d in cc.render({"chain": {"create": True}})]
    node = next(d for d in chain if d["kind"] == "Node")
    assert node["spec"]["networkPolicy"]["enabled"] is True


def _chain_node():
    docs = [cc.strip_source(d) for d in cc.render({"chain": {"create": True, "replicas": 5}})]
    return next(d for d in docs if d["kind"] == "Node")


@pytest.mark.skipif(cc.operator_binary() is None, reason="no aitbc-operator binary (cargo build -p aitbc-operator)")
def test_key_custody_operator_rendered_pods_meet_restricted_and_hold_one_key():
    items = cc.operator_rendered(cc.operator_binary(), _chain_node())
    sts = [o for o in items if o["kind"] == "StatefulSet"]
    assert len(sts) == 5, "one StatefulSet per chain pod"
    assert any(o["kind"] == "NetworkPolicy" for o in items)
    assert cc.key_custody_operator_pod_problems(items) == []
    bad = copy.deepcopy(items)
    pod = bad[0]["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "all-keys", "secret": {"secretName": "aitbc-validator-1"}})
    del pod["containers"][0]["securityContext"]["seccompProfile"]
    del pod["securityContext"]["seccompProfile"]
    errs = cc.key_custody_operator_pod_problems(bad)
    assert any("not exactly its own key" in e for e in errs) and any("seccomp" in e for e in errs)


def test_key_custody_peer_port_check_can_fail():
    np = {"kind": "NetworkPolicy", "metadata": {"name": "c"}, "spec": {"ingress": [
        {"from": [{"namespaceSelector": {}}], "ports": [{"port": 9200}]}]}}
    assert cc.key_custody_operator_pod_problems([np])


# ---- job isolation (issue 17: pod mode) ------------------------------------------------------

POD_VALUES = yaml.safe_load(open(os.path.join(cc.CHART, "ci", "pod-values.yaml")))


@pytest.fixture(scope="module")
def pod_docs():
    return [cc.strip_source(d) for d in cc.render(POD_VALUES)]


def _agent_role(docs):
    return next(d for d in docs if d["kind"] == "Role" and cc.is_agent_rbac(d))


def _agent_ds(docs):
    return next(d for d in docs if d["kind"] == "DaemonSet")


def test_job_isolation_pod_profile_role_only_in_the_job_namespace(pod_docs):
    pod_mode, job_ns, create_ns = cc.job_isolation_settings(POD_VALUES)
    assert (pod_mode, job_ns, create_ns) == (True, "aitbc-jobs", True)
    assert cc.job_isolation_problems(pod_docs, True, job_ns, create_ns) == []
    role = _agent_role(pod_docs)
    assert role["metadata"]["namespace"] == "aitbc-jobs"
    assert cc.allowed_triples(role["rules"]) == cc.AGENT_JOB_TRIPLES
    assert not [d for d in pod_docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding") and cc.is_agent_rbac(d)]
    rb = next(d for d in pod_docs if d["kind"] == "RoleBinding" and cc.is_agent_rbac(d))
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "aitbc-gpu-agent", "namespace": cc.NAMESPACE}]
    assert cc.review_rbac(pod_docs, ALLOWED) == []


@pytest.mark.parametrize("mutate, why", [
    (lambda docs: _agent_role(docs)["rules"][0]["verbs"].append("watch"), "grants"),
    (lambda docs: _agent_role(docs)["rules"].pop(1), "grants"),
    (lambda docs: _agent_role(docs)["metadata"].update(namespace=cc.NAMESPACE), "not the job namespace"),
    (lambda docs: _agent_role(docs).update(kind="ClusterRole"), "cluster-wide"),
    (lambda docs: _agent_ds(docs)["spec"]["template"]["spec"].update(automountServiceAccountToken=False), "token"),
    (lambda docs: [e.update(value="other") for e in _agent_ds(docs)["spec"]["template"]["spec"]["containers"][0]["env"]
                   if e["name"] == "AITBC_JOB_NAMESPACE"], "AITBC_JOB_NAMESPACE"),
    (lambda docs: [e.update(value="/elsewhere") for e in _agent_ds(docs)["spec"]["template"]["spec"]["containers"][0]["env"]
                   if e["name"] == "AITBC_HOST_STATE_DIR"], "AITBC_HOST_STATE_DIR"),
    (lambda docs: next(d for d in docs if d["kind"] == "Namespace")["metadata"]["labels"].update(
        {"pod-security.kubernetes.io/warn": "privileged"}), "Pod Security"),
    (lambda docs: next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["egress"][0]["ports"].pop(), "API server"),
], ids=["extra-verb", "missing-logs", "role-in-release-ns", "cluster-role", "no-token", "job-ns-env", "host-state-dir",
        "ns-labels", "no-6443"])
def test_job_isolation_check_can_fail(pod_docs, mutate, why):
    docs = copy.deepcopy(pod_docs)
    mutate(docs)
    errs = cc.job_isolation_problems(docs, True, "aitbc-jobs")
    assert any(why in e for e in errs), errs


def test_job_isolation_rbac_review_accepts_exactly_the_agent_role(pod_docs):
    cc.rbac_self_test(ALLOWED)
    assert cc.allowed_triples(ALLOWED["agentRole"]) == cc.AGENT_JOB_TRIPLES
    for role in cc.TOO_BROAD_AGENT_ROLES:
        assert cc.rbac_violations(role, cc.allowed_triples(ALLOWED["agentRole"])), role["metadata"]["name"]
    docs = copy.deepcopy(pod_docs)
    _agent_role(docs)["rules"].append({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]})
    assert any("pods/exec" in p for p in cc.review_rbac(docs, ALLOWED))
    docs = copy.deepcopy(pod_docs)
    _agent_role(docs)["kind"] = "ClusterRole"
    assert any("cluster-wide" in p for p in cc.review_rbac(docs, ALLOWED))
    # the operator's lists do not let the agent's Role through, nor the agent's list the operator's
    bad = {**ALLOWED, "agentRole": ALLOWED["agentRole"] + [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
    with pytest.raises(cc.CheckError):
        cc.rbac_self_test(bad)


def test_job_isolation_agent_pod_still_meets_restricted(pod_docs):
    ds = _agent_ds(pod_docs)
    assert cc.key_custody_restricted_problems(ds, allow_host_path=True) == []
    assert [e for d in pod_docs for e in cc.security_problems(d)] == []
    assert any("hostPath" in e for e in cc.key_custody_restricted_problems(ds))  # the opt-in is the only exception
    assert cc.agent_contract(pod_docs, simulated=False) == []


def test_job_isolation_template_fails_in_pod_mode_without_hostpath():
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="hostPath"):
        cc.render({"gpuAgent": {"isolation": "pod", "stateDir": {"type": "emptyDir"}}})
    assert cc.job_isolation_guard_problems(cc.render) == []
    # the guard check itself fails when a refused value renders
    assert cc.job_isolation_guard_problems(lambda vals: [])


def test_job_isolation_default_install_has_no_agent_token_rbac_or_job_namespace(default_docs):
    assert cc.job_isolation_problems(default_docs, False, "aitbc-jobs") == []
    ds = _agent_ds(default_docs)
    ps = ds["spec"]["template"]["spec"]
    args = ps["containers"][0]["args"]
    assert ps["automountServiceAccountToken"] is False
    assert ps["serviceAccountName"] == "aitbc-gpu-agent"
    assert args[args.index("--isolation") + 1] == "auto"
    assert "--serves" not in args, "the owner's listings only by default"
    sa = next(d for d in default_docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "aitbc-gpu-agent")
    assert sa["automountServiceAccountToken"] is False
    np = next(d for d in default_docs if d["kind"] == "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    # judged as pod mode, the default rendering fails
    assert cc.job_isolation_problems(default_docs, True, "aitbc-jobs")
    docs = copy.deepcopy(default_docs)
    _agent_ds(docs)["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert any("token" in e for e in cc.job_isolation_problems(docs, False, "aitbc-jobs"))


def test_job_isolation_values_rendered_as_flags_and_env():
    vals = copy.deepcopy(cc.POD_MODE_BASE)
    vals["gpuAgent"].update(serves=["ait" + "ab" * 24], jobs={"namespace": "gpu-jobs", "createNamespace": False,
                                                            "demoImage": "registry.example/demo:1", "cpuLimit": 2, "memoryLimit": "8Gi"})
    docs = [cc.strip_source(d) for d in cc.render(vals)]
    assert cc.job_isolation_problems(docs, True, "gpu-jobs", create_ns=False) == []
    assert not [d for d in docs if d["kind"] == "Namespace"]
    c = _agent_ds(docs)["spec"]["template"]["spec"]["containers"][0]
    args, env = c["args"], {e["name"]: e.get("value") for e in c["env"]}
    assert args[args.index("--serves") + 1] == "ait" + "ab" * 24
    assert args[args.index("--job-cpu-limit") + 1] == "2" and args[args.index("--job-memory-limit") + 1] == "8Gi"
    assert env["AITBC_JOB_NAMESPACE"] == "gpu-jobs" and env["AITBC_AGENT_IMAGE"] == "registry.example/demo:1"
    assert env["AITBC_HOST_STATE_DIR"] == "/var/lib/aitbc-agent"
    assert "AITBC_JOB_RUNTIME_CLASS" not in env
    assert _agent_role(docs)["metadata"]["namespace"] == "gpu-jobs"
    # a namespace-scoped install in pod mode: the agent's Role in the job namespace is allowed
    vals["watchNamespaces"] = ["team-a"]
    docs = [cc.strip_source(d) for d in cc.render(vals)]
    assert cc.key_custody_scope_problems(docs, ["team-a"], job_namespace="gpu-jobs") == []
    assert cc.key_custody_scope_problems(docs, ["team-a"])


@pytest.mark.skipif(cc.agent_binary() is None, reason="no aitbc-gpu-agent binary (set AITBC_GPU_AGENT_BIN or CARGO_TARGET_DIR)")
def test_job_isolation_rendered_pod_mode_command_line_reaches_the_api_client(tmp_path, pod_docs):
    (tmp_path / "ok").mkdir()
    assert cc.run_rendered_agent_pod_mode(cc.agent_binary(), pod_docs, str(tmp_path / "ok")) == []
    bad = copy.deepcopy(pod_docs)
    args = _agent_ds(bad)["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--job-cpu-limit")] = "--job-cpus"
    (tmp_path / "bad").mkdir()
    assert cc.run_rendered_agent_pod_mode(cc.agent_binary(), bad, str(tmp_path / "bad"))
