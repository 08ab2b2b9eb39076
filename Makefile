# AITBC developer entry points. `make test` is the whole test suite (what CI runs).

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.PHONY: test lint build-bins unit-and-integration devnet

## The whole test suite: formatting, lints, every crate's unit, property and multi-process tests,
## and the chart checks.
test: lint build-bins unit-and-integration chart-check

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Multi-process tests start the sibling binaries (aitbc-node, aitbc-gpu-agent, aitbc-scheduler,
## aitbc-cli) from the target directory, so they are built first.
build-bins:
	$(CARGO) build --workspace --bins

unit-and-integration:
	$(CARGO) nextest run --workspace --profile ci

## A local network: validators, GPU agents (simulated unless NVML finds GPUs) and the scheduler.
devnet:
	$(CARGO) build --release --workspace --bins
	$(CARGO_TARGET_DIR)/release/aitbc-cli devnet up
