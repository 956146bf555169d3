# toucan: the common tasks. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

CARGO ?= cargo
# The example's steps run `python3`; the project venv (numpy) goes first on their PATH.
VENV_PATH := $(CURDIR)/.venv/bin:$$PATH
DEMO_HOME ?= $(CURDIR)/.toucan/demo
DEMO_PIPELINE := examples/fashion-mnist/pipeline.yaml
PG_DIR := build/pg
CLUSTER_DIR := build/cluster

.PHONY: help setup build demo test lint bench clean torch-setup build-torch test-torch

# The `torch` feature of toucan-worker links libtorch from the PyTorch in .venv (torch-sys runs
# `python` from VIRTUAL_ENV/PATH). Its own target directory keeps the default build (no
# libtorch) and this one from invalidating each other. One profile (dev: dependencies at
# opt-level 1, and the heavy work happens inside libtorch) for the binary and the tests, so
# torch-sys's C++ wrapper, the slow part of a cold build, is compiled once.
TORCH_ENV := VIRTUAL_ENV="$(CURDIR)/.venv" PATH="$(VENV_PATH)" LIBTORCH_USE_PYTORCH=1 \
	CARGO_TARGET_DIR="$(CURDIR)/target/torch"

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

setup: ## install apt packages and the Python venv (idempotent, fast when done)
	scripts/setup

build: ## release build: target/release/toucan and toucan-worker
	$(CARGO) build --release --workspace

demo: setup build ## run the fashion-mnist example twice: the second run comes from the cache
	rm -rf "$(DEMO_HOME)"
	@echo "== first run: every step runs =="
	PATH="$(VENV_PATH)" TOUCAN_HOME="$(DEMO_HOME)" target/release/toucan run $(DEMO_PIPELINE)
	@echo
	@echo "== second run: the same inputs, so the steps come from the cache =="
	PATH="$(VENV_PATH)" TOUCAN_HOME="$(DEMO_HOME)" target/release/toucan run $(DEMO_PIPELINE)

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# PostgreSQL and the test cluster are stopped whatever happens (the EXIT trap), and the recipe
# exits with the tests' status. tests/cluster/build rebuilds the control plane only when its
# sources changed (a cold build takes 15-25 minutes on 2 cores; see tests/cluster/README.md).
test: setup lint ## lint, then every test, against a real PostgreSQL and a real test cluster
	$(CARGO) build --workspace
	tests/cluster/build
	trap 'tests/postgres/down $(PG_DIR) || echo "make: could not stop PostgreSQL in $(PG_DIR)" >&2; \
	      tests/cluster/down $(CLUSTER_DIR) || echo "make: could not stop the test cluster in $(CLUSTER_DIR)" >&2' EXIT; \
	tests/postgres/up $(PG_DIR); \
	tests/cluster/up $(CLUSTER_DIR); \
	tests/cluster/smoke $(CLUSTER_DIR); \
	export TOUCAN_TEST_POSTGRES_URL="$$(cat $(PG_DIR)/url)" TOUCAN_REQUIRE_POSTGRES=1 PATH="$(VENV_PATH)"; \
	$(CARGO) test --workspace

bench: build ## per-step overhead vs Kubeflow Pipelines; writes bench/results/latest.md
	scripts/setup --bench
	bench/run

torch-setup: ## install PyTorch into .venv for the worker's torch feature (large download)
	scripts/setup --torch

build-torch: torch-setup ## toucan-worker with libtorch: target/torch/debug/toucan-worker
	$(TORCH_ENV) $(CARGO) build -p toucan-worker --features torch

test-torch: torch-setup ## lint and test toucan-worker with the torch feature
	$(TORCH_ENV) $(CARGO) clippy -p toucan-worker --all-targets --features torch -- -D warnings
	$(TORCH_ENV) $(CARGO) test -p toucan-worker --features torch

clean: ## remove build outputs and the demo store (keeps the venvs and your .toucan runs)
	$(CARGO) clean
	rm -rf build "$(DEMO_HOME)"
