# toucan: the common tasks. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

CARGO ?= cargo
# The project venv (PyTorch, numpy, scikit-learn) first on PATH.
VENV_PATH := $(CURDIR)/.venv/bin:$$PATH
DEMO_HOME ?= $(CURDIR)/.toucan/demo
DEMO_PIPELINE := examples/fashion-mnist/pipeline.yaml
PG_DIR := build/pg
CLUSTER_DIR := build/cluster
S3_DIR := build/s3
BENCH_N ?= 1000

.PHONY: help setup build build-torch demo test lint bench bench-worker bench-operator clean

# toucan-worker's ML commands (train, evaluate, export, predict) need its `torch` feature, which
# links libtorch from the PyTorch in .venv (torch-sys runs `python` from VIRTUAL_ENV/PATH). It
# has its own target directory so the default build (no libtorch) and this one do not
# invalidate each other. One profile (dev: dependencies at opt-level 1; the heavy work happens
# inside libtorch) for the binary, clippy and the tests, so torch-sys's C++ wrapper, the slow
# part of a cold build, is compiled once.
TORCH_ENV := VIRTUAL_ENV="$(CURDIR)/.venv" PATH="$(VENV_PATH)" LIBTORCH_USE_PYTORCH=1 \
	CARGO_TARGET_DIR="$(CURDIR)/target/torch"
TORCH_BIN := $(CURDIR)/target/torch/debug
# Pipelines' steps run `toucan-worker` from PATH: the libtorch build first, then the venv.
RUN_PATH := $(TORCH_BIN):$(VENV_PATH)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

setup: ## install apt packages, the Python venv with PyTorch, pretrained weights (idempotent)
	scripts/setup --torch

build: ## release build: target/release/toucan and toucan-worker (without libtorch)
	$(CARGO) build --release --workspace

build-torch: setup ## toucan-worker with libtorch: target/torch/debug/toucan-worker
	$(TORCH_ENV) $(CARGO) build -p toucan-worker --features torch

demo: setup build build-torch ## run the fashion-mnist example twice: the second run comes from the cache
	rm -rf "$(DEMO_HOME)"
	@echo "== first run: every step runs =="
	PATH="$(RUN_PATH)" TOUCAN_HOME="$(DEMO_HOME)" target/release/toucan run $(DEMO_PIPELINE)
	@echo
	@echo "== second run: the same inputs, so the steps come from the cache =="
	PATH="$(RUN_PATH)" TOUCAN_HOME="$(DEMO_HOME)" target/release/toucan run $(DEMO_PIPELINE)

lint: setup ## rustfmt and clippy (with and without libtorch), warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(TORCH_ENV) $(CARGO) clippy -p toucan-worker --all-targets --features torch -- -D warnings

# PostgreSQL and the test cluster are stopped whatever happens (the EXIT trap), and the recipe
# exits with the tests' status. tests/cluster/build rebuilds the control plane only when its
# sources changed (a cold build takes 15-25 minutes on 2 cores; see tests/cluster/README.md).
# The workspace's tests run without libtorch (the whole workspace, so that cargo builds the
# dependencies once, with the same features as `cargo build --workspace`); then the worker's
# tests again with the `torch` feature, which adds the libtorch ones.
test: setup lint ## lint, then every test, against a real PostgreSQL and a real test cluster
	$(CARGO) build --workspace --all-targets
	$(TORCH_ENV) $(CARGO) build -p toucan-worker --features torch
	tests/cluster/build
	tests/s3/build
	tests/helm/build
	trap 'tests/postgres/down $(PG_DIR) || echo "make: could not stop PostgreSQL in $(PG_DIR)" >&2; \
	      tests/cluster/down $(CLUSTER_DIR) || echo "make: could not stop the test cluster in $(CLUSTER_DIR)" >&2; \
	      tests/s3/down $(S3_DIR) || echo "make: could not stop the S3 server in $(S3_DIR)" >&2' EXIT; \
	tests/postgres/up $(PG_DIR); \
	TOUCAN_S3_OWNER_PID=$$$$ tests/s3/up $(S3_DIR); \
	tests/cluster/up $(CLUSTER_DIR); \
	tests/cluster/smoke $(CLUSTER_DIR); \
	tests/helm/check $(CLUSTER_DIR); \
	set -a; . $(S3_DIR)/env; set +a; export TOUCAN_REQUIRE_S3=1; \
	export TOUCAN_TEST_POSTGRES_URL="$$(cat $(PG_DIR)/url)" TOUCAN_REQUIRE_POSTGRES=1; \
	TOUCAN_TEST_STEP_PATH="$(TORCH_BIN):$(CURDIR)/.venv/bin" $(CARGO) test --workspace && \
	$(TORCH_ENV) $(CARGO) test -p toucan-worker --features torch

bench: build build-torch ## per-step overhead vs Kubeflow Pipelines; writes bench/results/latest.md
	scripts/setup --bench
	bench/run

bench-worker: build-torch ## the worker's CNN vs plain PyTorch; writes bench/results/worker.md
	bench/worker-vs-torch

bench-operator: build ## the operator vs Argo Workflows on the test cluster (BENCH_N runs); writes bench/results/operator.md
	TOUCAN_OPERATOR=target/release/toucan-operator bench/operator-vs-argo/run $(BENCH_N)

clean: ## remove build outputs and the demo store (keeps the venvs and your .toucan runs)
	$(CARGO) clean
	rm -rf build "$(DEMO_HOME)"
