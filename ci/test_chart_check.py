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
