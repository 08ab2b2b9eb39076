#!/usr/bin/env python3
"""AITBC end-to-end test on kind (started by tests/e2e/run.sh once Docker, kind and kubectl exist).

 1. kind cluster from kind-config.yaml (control plane, a simulated-GPU worker, a CPU worker);
 2. `make images`, `kind load docker-image` of the four images;
 3. `helm install` (Helm's Go SDK through helm-python-sdk: the same engine as the helm CLI)
    with simulated GPUs;
 4. apply the three marketplace scenarios in examples/;
 5. wait for the chain (4 validators ready), the wallets funded, the listings active, the bids
    accepted; kill a chain validator pod and the gpu-agent pod while jobs run;
 6. every AIJob Succeeded; balances read with aitbc-cli (through a port-forward) equal the
    Wallet statuses, providers earned, customers paid; `marketplace --action audit` and
    `payment-verify` pass (nothing paid twice, supply conserved);
 7. delete the scenarios, `helm uninstall`: no aitbc object is left but what the documented
    retention policy keeps (the CRDs, the chain's PVCs, the wallets' key Secrets).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from decimal import Decimal

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLUSTER = os.environ.get("AITBC_E2E_CLUSTER", "aitbc-e2e")
NS = os.environ.get("AITBC_E2E_NAMESPACE", "aitbc-e2e")
RELEASE = "aitbc"
CHAIN = "aitbc"  # the Node every example shares
SCENARIOS = ["ai-image-generation.yaml", "gpu-rental-training.yaml", "multi-service-pipeline.yaml"]
# Applied at the chaos step, so that its three chained jobs are surely in flight when pods die.
CHAOS_SCENARIO = "multi-service-pipeline.yaml"
COMPONENTS = ["node", "operator", "gpu-agent", "cli"]
JOB_TIMEOUT = int(os.environ.get("AITBC_E2E_JOB_TIMEOUT", "900"))

WORK = tempfile.mkdtemp(prefix="aitbc-e2e-")
KUBECONFIG = os.path.join(WORK, "kubeconfig")
ENV = dict(os.environ, KUBECONFIG=KUBECONFIG)

passed: list[str] = []
failed: list[str] = []


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args: str, check: bool = True, capture: bool = False, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    log("$ " + " ".join(args))
    r = subprocess.run(args, cwd=ROOT, env=env or ENV, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(args)} exited {r.returncode}: {(r.stderr or '')[-2000:]}")
    return r


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh("kubectl", *args, **kw)


def kget(kind: str, name: str | None = None, ns: str | None = NS) -> dict:
    args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
    if ns:
        args += ["-n", ns]
    return json.loads(kubectl(*args, capture=True).stdout)


class Failure(Exception):
    pass


def step(name: str):
    def deco(fn):
        def run(*a, **kw):
            log(f"--- {name}")
            try:
                out = fn(*a, **kw)
            except Exception as e:
                failed.append(f"{name}: {e}")
                log(f"FAIL {name}: {e}")
                raise
            passed.append(name)
            log(f"PASS {name}")
            return out
        return run
    return deco


def wait_for(what: str, fn, timeout: int, interval: float = 5.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            ok, last = fn()
        except Failure as e:
            ok, last = False, str(e)
        if ok:
            return last
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}; last seen: {last}")


def version() -> str:
    return subprocess.run(["make", "-s", "print-version"], cwd=ROOT, text=True, capture_output=True, check=True).stdout.strip()


VERSION = version()
REGISTRY = "ghcr.io/aitbc"


def image(component: str) -> str:
    return f"{REGISTRY}/aitbc-{component}:{VERSION}"


# ------------------------------------------------------------------------------------------


@step("kind cluster from kind-config.yaml")
def create_cluster() -> None:
    existing = sh("kind", "get", "clusters", capture=True).stdout.split()
    if CLUSTER in existing:
        log(f"reusing cluster {CLUSTER}")
        sh("kind", "export", "kubeconfig", "--name", CLUSTER, "--kubeconfig", KUBECONFIG)
    else:
        args = ["kind", "create", "cluster", "--name", CLUSTER, "--config", "kind-config.yaml",
                "--kubeconfig", KUBECONFIG, "--wait", "180s"]
        if os.environ.get("KIND_NODE_IMAGE"):
            args += ["--image", os.environ["KIND_NODE_IMAGE"]]
        sh(*args, timeout=600)
    nodes = kget("nodes", ns=None)["items"]
    gpu = [n["metadata"]["name"] for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    if len(nodes) != 3 or len(gpu) != 1:
        raise Failure(f"want 3 nodes with one GPU node, got {len(nodes)} nodes, GPU nodes {gpu}")


@step("images built (make images) and loaded into kind")
def build_and_load() -> None:
    if os.environ.get("AITBC_E2E_SKIP_BUILD") != "1":
        sh("make", "images", timeout=7200)
    for c in COMPONENTS:
        sh("kind", "load", "docker-image", image(c), "--name", CLUSTER, timeout=600)


def helm_config():
    import helm_python as helm

    return helm.Config(kubeconfig_path=KUBECONFIG, namespace=NS)


@step("helm install with simulated GPUs")
def helm_install() -> None:
    import helm_python as helm

    values = {
        "image": {"pullPolicy": "Never"},  # kind-loaded images
        # chainId left empty: the chart derives aitbc-<namespace>-aitbc, the examples' Node's id
        "gpuAgent": {
            "simulated": {"enabled": True, "gpus": 2, "memoryMiB": 81920, "model": "Simulated A100 80GB"},
            "stateDir": {"type": "hostPath"},
        },
        "chain": {"create": False},  # the examples bring the shared Node `aitbc`
    }
    with helm_config() as cfg, helm.Chart.load(os.path.join(ROOT, "charts", "aitbc")) as chart:
        rel = cfg.install(chart, RELEASE, values, namespace=NS, create_namespace=True, timeout=300)
    log(f"installed release {RELEASE}: {rel.get('info', {}).get('status') if isinstance(rel, dict) else rel}")
    kubectl("-n", NS, "rollout", "status", f"deploy/{RELEASE}-operator", "--timeout=300s", timeout=330)
    ds = kget("daemonset", f"{RELEASE}-gpu-agent")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    want = f"aitbc-{NS}-{CHAIN}"
    if args[args.index("--chain-id") + 1] != want:
        raise Failure(f"agents sign for {args[args.index('--chain-id') + 1]}, the examples' chain is {want}")
    for crd in ["nodes", "wallets", "servicelistings", "bids", "aijobs"]:
        kubectl("get", "crd", f"{crd}.aitbc.io")


@step("examples applied (image generation, GPU rental)")
def apply_examples() -> None:
    args = []
    for s in SCENARIOS:
        if s != CHAOS_SCENARIO:
            args += ["-f", os.path.join("examples", s)]
    kubectl("-n", NS, "apply", *args)


@step("chain ready: 4 validators")
def wait_chain() -> None:
    def ready():
        n = kget("chainnodes", CHAIN)
        st = n.get("status", {})
        return st.get("readyReplicas", 0) >= n["spec"]["validators"] and (st.get("height") or 0) > 0, st
    wait_for("the chain's validators", ready, 600)


@step("gpu-agent running on the GPU node")
def wait_agents() -> None:
    kubectl("-n", NS, "rollout", "status", f"ds/{RELEASE}-gpu-agent", "--timeout=300s", timeout=330)


def items(kind: str) -> list[dict]:
    return kget(kind)["items"]


@step("wallets funded, listings active, bids accepted")
def wait_marketplace() -> None:
    def funded():
        ws = items("wallets")
        pending = [w["metadata"]["name"] for w in ws if w["spec"].get("funding") and not w.get("status", {}).get("funded")]
        return not pending and ws, f"unfunded: {pending}"
    wait_for("wallet funding", funded, 600)

    def active():
        ls = items("servicelistings")
        bad = {l["metadata"]["name"]: l.get("status", {}).get("phase") for l in ls if l.get("status", {}).get("phase") != "Active"}
        return not bad, bad
    wait_for("listings Active", active, 300)

    def accepted():
        bs = items("bids")
        bad = {b["metadata"]["name"]: b.get("status", {}).get("phase") for b in bs
               if b.get("status", {}).get("phase") not in ("Accepted", "UsedByJob", "Settled")}
        if any(p in ("Rejected", "Failed", "Cancelled") for p in bad.values()):
            raise Failure(f"bid refused: {bad}")
        return not bad, bad
    wait_for("bids accepted", accepted, 300)


def load_docs(scenario: str) -> list[dict]:
    import yaml

    with open(os.path.join(ROOT, "examples", scenario)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def job_phases() -> dict[str, str]:
    return {j["metadata"]["name"]: j.get("status", {}).get("phase", "") for j in items("aijobs")}


@step("chaos: pipeline scenario applied, a chain validator pod and the gpu-agent pod killed mid-run")
def chaos() -> None:
    kubectl("-n", NS, "apply", "-f", os.path.join("examples", CHAOS_SCENARIO))
    pipeline = {d["metadata"]["name"] for d in load_docs(CHAOS_SCENARIO) if d.get("kind") == "AIJob"}

    def in_flight():
        ph = {k: v for k, v in job_phases().items() if k in pipeline}
        return any(v in ("Submitted", "Assigned", "Running") for v in ph.values()), ph
    wait_for("a pipeline job in flight", in_flight, 600, 1)
    log(f"job phases at the kill: {job_phases()}")
    kubectl("-n", NS, "delete", "pod", f"{CHAIN}-validator-1-0", "--grace-period=0", "--force", "--wait=false")
    kubectl("-n", NS, "delete", "pod", "-l", "app.kubernetes.io/component=gpu-agent", "--grace-period=0", "--force", "--wait=false")


@step("every AIJob Succeeded")
def wait_jobs() -> None:
    def done():
        ph = job_phases()
        bad = {k: v for k, v in ph.items() if v in ("Failed", "Refunded", "Cancelled")}
        if bad:
            raise_now(f"jobs ended without success: {bad}")
        return ph and all(v == "Succeeded" for v in ph.values()), ph
    wait_for("AIJobs Succeeded", done, JOB_TIMEOUT)


def raise_now(msg: str):
    raise Fatal(msg)


class Fatal(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def port_forward(target: str, remote: int):
    port = free_port()
    p = subprocess.Popen(["kubectl", "-n", NS, "port-forward", target, f"{port}:{remote}"], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0, None
        wait_for(f"port-forward {target}", up, 30, 0.5)
        yield port
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)


def cli(port: int, *args: str) -> subprocess.CompletedProcess:
    """aitbc-cli from its image (or $AITBC_CLI), against the port-forward."""
    node = f"http://127.0.0.1:{port}"
    if os.environ.get("AITBC_CLI"):
        return sh(os.environ["AITBC_CLI"], "--node", node, *args, capture=True, check=False)
    return sh("docker", "run", "--rm", "--network", "host", image("cli"), "--node", node, *args, capture=True, check=False)


def amount(text: str, key: str = "balance") -> Decimal:
    m = re.search(rf"^{key}:\s*([0-9.]+)", text, re.M)
    if not m:
        raise Failure(f"no `{key}:` line in {text!r}")
    return Decimal(m.group(1))


@step("balances (aitbc-cli) match the Wallets; providers earned; audit and payment-verify pass")
def check_ledger() -> None:
    with port_forward(f"svc/{CHAIN}", 9100) as port:
        wallets = {w["metadata"]["name"]: w for w in items("wallets")}
        for name, w in wallets.items():
            addr = w["status"]["address"]

            def agree(addr=addr, name=name):
                r = cli(port, "balance", "--name", addr)
                if r.returncode != 0:
                    return False, r.stderr
                on_chain = amount(r.stdout)
                status = Decimal(kget("wallets", name).get("status", {}).get("balance", "-1"))
                return on_chain == status, (on_chain, status)
            bal = wait_for(f"wallet {name} status to match the chain", agree, 120)
            log(f"wallet {name}: {bal[0]} AIT")
            funding = w["spec"].get("funding")
            if funding and name.endswith("provider") and not bal[0] > Decimal(funding["amount"]):
                raise Failure(f"provider {name} holds {bal[0]}, no more than its funding {funding['amount']}: not paid")
            if funding and name in ("image-customer", "trainer", "pipeline-customer") and not bal[0] < Decimal(funding["amount"]):
                raise Failure(f"customer {name} holds {bal[0]}: did not pay")
        for action in ("audit", "payment-verify"):
            r = cli(port, "marketplace", "--action", action)
            log(r.stdout)
            # rules print `NAME: pass|fail`; any `: fail` (or a non-zero exit) fails the test
            if r.returncode != 0 or re.search(r":\s*fail\b", r.stdout, re.I):
                raise Failure(f"marketplace --action {action} failed: {r.stdout}{r.stderr}")
        for j in items("aijobs"):
            st = j["status"]
            if st.get("refundTxHash") or st.get("phase") != "Succeeded":
                raise Failure(f"AIJob {j['metadata']['name']}: phase {st.get('phase')}, refund {st.get('refundTxHash')}")


@step("examples deleted and helm uninstall leaves no orphans")
def uninstall() -> None:
    args = []
    for s in SCENARIOS:
        args += ["-f", os.path.join("examples", s)]
    kubectl("-n", NS, "delete", "--ignore-not-found", "--wait=true", "--timeout=300s", *args, timeout=330)
    with helm_config() as cfg:
        cfg.uninstall(RELEASE, wait="watcher", timeout=300)
    kubectl("-n", NS, "wait", "--for=delete", "pod", "--all", "--timeout=180s", timeout=200)
    leftovers = []
    for kind in ["deployments", "daemonsets", "statefulsets", "pods", "services", "configmaps",
                 "serviceaccounts", "roles", "rolebindings", "poddisruptionbudgets", "leases.coordination.k8s.io",
                 "chainnodes", "wallets", "servicelistings", "bids", "aijobs"]:
        for o in kget(kind)["items"]:
            name = o["metadata"]["name"]
            if kind == "configmaps" and name == "kube-root-ca.crt":
                continue
            if kind == "serviceaccounts" and name == "default":
                continue
            leftovers.append(f"{kind}/{name}")
    for kind in ["clusterroles", "clusterrolebindings"]:
        leftovers += [f"{kind}/{o['metadata']['name']}" for o in kget(kind, ns=None)["items"]
                      if o["metadata"]["name"].startswith(f"{RELEASE}-")]
    if leftovers:
        raise Failure(f"left behind after uninstall: {leftovers}")
    # Kept on purpose (docs/OPERATIONS.md, "What helm uninstall keeps"): CRDs, PVCs, wallet key Secrets.
    pvcs = [o["metadata"]["name"] for o in kget("pvc")["items"]]
    secrets = [o["metadata"]["name"] for o in kget("secrets")["items"] if o.get("type") != "kubernetes.io/service-account-token"]
    helm_secrets = [s for s in secrets if s.startswith("sh.helm.release.")]
    if helm_secrets:
        raise Failure(f"helm release records left: {helm_secrets}")
    log(f"kept by policy: PVCs {pvcs}; Secrets {secrets}; CRDs (Helm never deletes crds/)")
    kubectl("-n", NS, "delete", "pvc", "--all", "--wait=true", "--timeout=120s", timeout=150)


def diagnostics() -> None:
    log("--- diagnostics")
    for args in (["get", "all,chainnodes,wallets,servicelistings,bids,aijobs,pvc", "-o", "wide"],
                 ["get", "events", "--sort-by=.lastTimestamp"],
                 ["logs", f"deploy/{RELEASE}-operator", "--tail=200"],
                 ["logs", "-l", "app.kubernetes.io/component=gpu-agent", "--tail=100"]):
        subprocess.run(["kubectl", "-n", NS, *args], env=ENV, cwd=ROOT, timeout=60)


def main() -> int:
    ok = False
    try:
        create_cluster()
        build_and_load()
        helm_install()
        apply_examples()
        wait_chain()
        wait_agents()
        wait_marketplace()
        chaos()
        wait_jobs()
        check_ledger()
        uninstall()
        ok = True
    except Exception as e:
        if not failed:
            failed.append(f"{type(e).__name__}: {e}")
    finally:
        if not ok:
            try:
                diagnostics()
            except Exception as e:  # diagnostics are best effort
                log(f"diagnostics failed: {e}")
        if os.environ.get("AITBC_E2E_KEEP") == "1":
            log(f"keeping cluster {CLUSTER} (KUBECONFIG={KUBECONFIG})")
        else:
            subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], env=ENV, timeout=300)
            shutil.rmtree(WORK, ignore_errors=True)
    print()
    for p in passed:
        print(f"  PASS {p}")
    for f in failed:
        print(f"  FAIL {f}")
    print(f"e2e: {len(passed)} passed, {len(failed)} failed")
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
