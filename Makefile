# toucan: the common tasks. `make help` lists them.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

CARGO ?= cargo
CACHE_HOME := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)

# One cargo target directory for every clone on this machine, under the user's cache directory:
# a new clone (CI's, or a second checkout) reuses every compiled dependency. Dependencies are
# keyed by version, features and profile, never by the clone; the workspace's own crates are
# keyed by their path inside the workspace, so every clone writes the same file names, and
# scripts/shared-target (run before each build) makes cargo rebuild them when another clone
# built last, removes incremental folders CI does not use, and caps the directory's size.
# Set CARGO_TARGET_DIR to use another directory.
export CARGO_TARGET_DIR ?= $(CACHE_HOME)/toucan/target
# The venv with PyTorch, numpy and scikit-learn, shared by every clone like the target
# directory (.venv links to it; see scripts/setup): torch-sys's build remembers the libtorch it
# compiled against, so one path for all clones is what lets them share that build too.
export TOUCAN_VENV ?= $(CACHE_HOME)/toucan/venv

# One build for demo, test and lint, so that no crate is compiled twice: the dev profile
# (dependencies at opt-level 1; the heavy work of the demo runs inside libtorch), the whole
# workspace, and toucan-worker's `torch` feature (train, evaluate, export, predict on libtorch;
# the feature only adds code, so this build sees every line). torch-sys finds libtorch by
# running `python` from the venv. A release build (`make build`, the same selection) is only for
# what ships (`make images`) and for the benchmarks; it is not part of demo, test or lint: the
# tests build their images from the dev build (scripts/test).
#
# Clippy runs inside that same build: clippy-driver compiles the workspace's crates (and only
# those: RUSTC_WORKSPACE_WRAPPER) and denies warnings as it goes. `cargo clippy` would check
# every dependency a second time in its own mode (`cargo check` cannot reuse `cargo build`'s
# files), minutes on a cold machine. So every cargo command below is linted, and a lint error
# stops `make demo` as it stops CI. A plain `cargo build $(TOUCAN_CARGO_SELECTION)` outside
# make (no wrapper) rebuilds only the workspace's crates, not the dependencies.
export VIRTUAL_ENV := $(TOUCAN_VENV)
export LIBTORCH_USE_PYTORCH := 1
export RUSTC_WORKSPACE_WRAPPER = $(shell rustc --print sysroot)/bin/clippy-driver
export CLIPPY_ARGS := -D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# What every dev build builds (scripts/test reads it too).
export TOUCAN_CARGO_SELECTION := --workspace --features toucan-worker/torch
# The venv first on PATH for cargo (torch-sys's `python`) and for the demo's steps; not for
# scripts/setup, which may have to make the venv again.
VENV_PATH := $(TOUCAN_VENV)/bin:$$PATH
DEV_BIN := $(CARGO_TARGET_DIR)/debug
RELEASE_BIN := $(CARGO_TARGET_DIR)/release

DEMO_HOME ?= $(CURDIR)/.toucan/demo
DEMO_PIPELINE := examples/fashion-mnist/pipeline.yaml
BENCH_N ?= 400 1000

.PHONY: help setup target-dir build build-torch images demo test lint bench bench-worker bench-training bench-operator bench-tuning bench-serving bench-drift bench-ingest bench-study clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: ## install apt packages, the Python venv with PyTorch, pretrained weights (idempotent)
	scripts/setup --torch

target-dir:
	@scripts/shared-target

build: setup target-dir ## release build of every binary, toucan-worker with libtorch, no debug info: $CARGO_TARGET_DIR/release
	PATH="$(VENV_PATH)" $(CARGO) build --release $(TOUCAN_CARGO_SELECTION)
	scripts/build-launcher --release

build-torch: setup target-dir ## the dev build with libtorch that demo and the tests use: $CARGO_TARGET_DIR/debug
	PATH="$(VENV_PATH)" $(CARGO) build $(TOUCAN_CARGO_SELECTION)

images: build ## the container images (operator, worker cpu and cuda, step-base) from the release build: build/images
	scripts/images

# Pipelines' steps run `toucan-worker` from PATH: the libtorch build, then the venv.
demo: build-torch ## run the fashion-mnist example twice: the second run comes from the cache
	rm -rf "$(DEMO_HOME)"
	@echo "== first run: every step runs =="
	PATH="$(DEV_BIN):$(VENV_PATH)" TOUCAN_HOME="$(DEMO_HOME)" "$(DEV_BIN)/toucan" run $(DEMO_PIPELINE)
	@echo
	@echo "== second run: the same inputs, so the steps come from the cache =="
	PATH="$(DEV_BIN):$(VENV_PATH)" TOUCAN_HOME="$(DEMO_HOME)" "$(DEV_BIN)/toucan" run $(DEMO_PIPELINE)

# The build it lints is the one the tests run: `make lint` then `make test` compiles nothing
# again.
lint: setup target-dir ## rustfmt, and clippy on every crate and target as they build; warnings are errors
	$(CARGO) fmt --all --check
	PATH="$(VENV_PATH)" $(CARGO) build $(TOUCAN_CARGO_SELECTION) --all-targets

# scripts/test: setup, lint, the build, the test services, every test group; it stops the
# services whatever happens and prints the time of each phase at the end.
test: ## lint, then every test, against a real PostgreSQL, S3 server and test cluster
	scripts/test

bench: build build-torch ## per-step overhead vs Kubeflow Pipelines; writes bench/results/latest.md
	scripts/setup --bench
	bench/run

bench-worker: build ## the release worker's CNN vs plain PyTorch; writes bench/results/worker.md
	bench/worker-vs-torch

bench-training: build build-torch ## a 2-replica TrainingJob vs PyTorch DDP under torchrun, and all-reduce vs a socket copy; writes bench/results/training.md
	PATH="$(VENV_PATH)" $(CARGO) build $(TOUCAN_CARGO_SELECTION) --example allreduce
	bench/training-vs-ddp

# Optuna (and the SciPy and PyTorch its GP sampler needs) goes into the venv; only the
# benchmark's example is built, in release like what ships.
bench-tuning: target-dir ## toucan's TPE and GP samplers vs Optuna's: regret on test functions, time per suggestion; writes bench/results/tuning.md
	scripts/setup --torch --tuning
	$(CARGO) build --release -p toucan-core --example tuning_bench
	bench/tuning/run

# KServe (and the Pillow it decodes images with) goes into the venv beside PyTorch; the script
# installs wrk from apt when it is missing.
bench-serving: build ## toucan's model server, alone and behind the router, vs KServe's Python ModelServer under wrk; writes bench/results/serving.md
	scripts/setup --torch --serving
	bench/serving/run

# Evidently (with the pandas and pyarrow it reads the Parquet tables with) goes into the venv;
# only the toucan binary is built, in release like what ships.
bench-drift: target-dir ## toucan drift vs Evidently's DataDriftPreset on 1M x 50 and 10k x 50: time, peak memory, every score; writes bench/results/drift.md
	scripts/setup --monitoring
	PATH="$(VENV_PATH)" $(CARGO) build --release $(TOUCAN_CARGO_SELECTION) --bin toucan
	TOUCAN="$(RELEASE_BIN)/toucan" bench/drift/run

# The script builds its example (api/examples/ingest_bench.rs) in release and starts and stops
# its own throwaway PostgreSQL (tests/postgres/up) when the server binaries are installed.
bench-ingest: target-dir ## payload samples/s and labels/s through the API into SQLite and PostgreSQL, and one evaluation's time; writes bench/results/ingest.md
	bench/ingest/run

# The dev build (the test binary, the operator and the launcher the tests use), the test
# cluster and a throwaway PostgreSQL.
bench-study: build-torch ## a TuningStudy of 10,000 trials (BENCH_TRIALS) on the test cluster: the object's size and the operator's memory; writes bench/results/study-scale.md
	bench/study-scale/run $(BENCH_TRIALS)

bench-operator: build ## the operator vs Argo Workflows on the test cluster (BENCH_N runs per size, 400 and 1000 by default); writes bench/results/operator.md
	TOUCAN_OPERATOR="$(RELEASE_BIN)/toucan-operator" bench/operator-vs-argo/run $(BENCH_N)

clean: ## remove the build outputs (the target directory every clone shares) and the demo store
	$(CARGO) clean
	rm -rf build "$(DEMO_HOME)"
