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

.PHONY: help setup build demo test lint bench clean

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

# PostgreSQL is stopped whatever happens (the EXIT trap), and the recipe exits with the tests'
# status.
test: setup lint ## lint, then every test, against a real PostgreSQL
	$(CARGO) build --workspace
	trap 'tests/postgres/down $(PG_DIR) || echo "make: could not stop PostgreSQL in $(PG_DIR)" >&2' EXIT; \
	tests/postgres/up $(PG_DIR); \
	export TOUCAN_TEST_POSTGRES_URL="$$(cat $(PG_DIR)/url)" TOUCAN_REQUIRE_POSTGRES=1 PATH="$(VENV_PATH)"; \
	$(CARGO) test --workspace

bench: build ## per-step overhead vs Kubeflow Pipelines; writes bench/results/latest.md
	scripts/setup --bench
	bench/run

clean: ## remove build outputs and the demo store (keeps the venvs and your .toucan runs)
	$(CARGO) clean
	rm -rf build "$(DEMO_HOME)"
