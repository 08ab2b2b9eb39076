"""The kind e2e gate (tests/e2e/run.sh): SKIPS without a Docker engine and kind, FAILS instead
with AITBC_REQUIRE_KIND=1, and names what it needs either way."""

import os
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RUN = os.path.join(ROOT, "tests", "e2e", "run.sh")


def fake_bin(tmp_path, docker_ok: bool, with_kind: bool):
    b = tmp_path / "bin"
    b.mkdir()
    (b / "docker").write_text("#!/bin/sh\n" + ("exit 0\n" if docker_ok else "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n"))
    if with_kind:
        (b / "kind").write_text("#!/bin/sh\nexit 0\n")
    (b / "kubectl").write_text("#!/bin/sh\nexit 0\n")
    for f in b.iterdir():
        f.chmod(0o755)
    return str(b)


def run(tmp_path, docker_ok, with_kind, require=None):
    env = {"PATH": fake_bin(tmp_path, docker_ok, with_kind) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           # a stand-in python: the gate must not reach it when it skips or fails
           "PYTHON": "/bin/false"}
    if require is not None:
        env["AITBC_REQUIRE_KIND"] = require
    return subprocess.run(["bash", RUN], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("docker_ok,with_kind", [(False, False), (False, True), (True, False)])
def test_skips_without_prerequisites(tmp_path, docker_ok, with_kind):
    r = run(tmp_path, docker_ok, with_kind)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SKIPPED" in r.stdout and "0 passed, 0 failed, 1 skipped" in r.stdout
    if not docker_ok:
        assert "docker info" in r.stdout
    if not with_kind:
        assert "kind on PATH" in r.stdout


@pytest.mark.parametrize("docker_ok,with_kind", [(False, False), (True, False)])
def test_fails_when_kind_is_required(tmp_path, docker_ok, with_kind):
    r = run(tmp_path, docker_ok, with_kind, require="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "SKIPPED" not in r.stdout


def test_goes_on_when_everything_is_there(tmp_path):
    # with every prerequisite present the gate passes on to the test itself (here the stand-in
    # python fails at once, which proves the gate did not skip)
    r = run(tmp_path, True, True, require="1")
    assert "SKIPPED" not in r.stdout and "needs:" not in r.stdout
    assert r.returncode != 0
