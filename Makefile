# AITBC developer entry points. `make test` is the whole test suite (what CI runs).

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: test lint build-bins unit-and-integration devnet

## The whole test suite: formatting, lints, every crate's unit, property and multi-process tests,
## the chart checks, and the kind end-to-end test (which says so and skips where Docker and kind are
## missing; AITBC_REQUIRE_KIND=1 makes that a failure).
test: lint build-bins unit-and-integration chart-check e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Multi-process tests start the sibling binaries (aitbc-node, aitbc-gpu-agent, aitbc-scheduler,
## aitbc-cli) from the target directory, so they are built first.
build-bins:
	$(CARGO) build --workspace --bins

## The vendored hotstuff_rs (third_party/, outside the workspace) carries our patches; its unit
## tests, ours included, run here too.
unit-and-integration:
	$(CARGO) nextest run --workspace --profile ci
	$(CARGO) test -p hotstuff_rs --lib

## A local network: validators, GPU agents (simulated unless NVML finds GPUs) and the scheduler.
## First installs (apt-get) or checks what the build needs (protoc, clang, libclang, a C++ compiler)
## and says how long the first build takes.
devnet:
	@bash cli/devnet-prereqs.sh
	@start=$$(date +%s); $(CARGO) build --release --workspace --bins && echo "make devnet: built in $$(( $$(date +%s) - start ))s"
	$(CARGO_TARGET_DIR)/release/aitbc-cli devnet up

## ---- Kubernetes packaging: images, chart checks, kind e2e (charts/aitbc, docker/, ci/, tests/e2e) ----

# Image tags follow the Cargo workspace version ([workspace.package] version).
VERSION := $(shell sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
REGISTRY ?= ghcr.io/aitbc
DOCKER ?= docker
IMAGES := node operator gpu-agent cli
PYTHON ?= python3
# The chart-check virtual environment lives outside the clone (a cache, rebuilt when
# ci/requirements.txt changes).
CHART_VENV ?= $(HOME)/.cache/aitbc/chart-venv

.PHONY: images $(addprefix image-,$(IMAGES)) chart-check chart-check-venv e2e print-version

print-version:
	@echo $(VERSION)

## Container images ghcr.io/aitbc/aitbc-{node,operator,gpu-agent,cli}:$(VERSION) (needs Docker with BuildKit).
images: $(addprefix image-,$(IMAGES))

$(addprefix image-,$(IMAGES)): image-%:
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/$*.Dockerfile --build-arg VERSION=$(VERSION) \
		-t $(REGISTRY)/aitbc-$*:$(VERSION) .

## Helm chart checks without a cluster: render (Helm's Go SDK), lint, Kubernetes and CRD schemas,
## RBAC review, security defaults, examples against the CRDs. Unit tests of the checkers first.
chart-check: $(CHART_VENV)/.installed
	$(CHART_VENV)/bin/python -m pytest -q ci/
	$(CHART_VENV)/bin/python ci/chart-check.py

$(CHART_VENV)/.installed: ci/requirements.txt
	$(PYTHON) -m venv $(CHART_VENV)
	$(CHART_VENV)/bin/python -m pip install -q --disable-pip-version-check -r ci/requirements.txt
	touch $@

## End-to-end on kind: SKIPS without a Docker engine and kind (AITBC_REQUIRE_KIND=1: FAILS instead).
e2e:
	bash tests/e2e/run.sh
