# ojsctrl — see README.md. Every target does its own set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help
help: ## List targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with the project and its dev tools

.PHONY: controlplane
controlplane: ## Build the local control plane binaries from the Go module proxy (cached; no-op when built)
	@bash hack/build-controlplane.sh

.PHONY: test
test: venv controlplane ## Run unit and e2e tests (builds what is missing first)
	$(PY) -m pytest tests/unit tests/e2e $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run the fast unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-e2e
test-e2e: venv controlplane ## Run the e2e tests against a local control plane
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

.PHONY: lint
lint: venv ## ruff, mypy --strict on src, import-linter layering
	$(VENV)/bin/ruff check src tests bench hack
	$(VENV)/bin/ruff format --check src tests bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: fmt
fmt: venv ## Format the code
	$(VENV)/bin/ruff format src tests bench hack
	$(VENV)/bin/ruff check --fix src tests bench hack

.PHONY: dev-cluster
dev-cluster: venv controlplane ## Start the local control plane in the foreground (.dev/kubeconfig)
	$(PY) -m tests.harness.devcluster

.PHONY: run
run: venv ## Run the operator against $$KUBECONFIG, or against a local control plane when there is none
	$(PY) hack/run.py

.PHONY: bench
bench: venv controlplane ## Run the benchmarks (not part of make test)
	$(PY) -m bench

.PHONY: clean
clean: ## Remove build outputs (not the control plane cache)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
