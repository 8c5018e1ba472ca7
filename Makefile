# ojsctrl — see README.md. Every target does its own set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-dev.lock | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help
help: ## List targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

# Dependencies come from the hashed lock (requirements-dev.lock: runtime + dev tools); the project
# itself is installed editable on top, without resolving anything again.
$(STAMP): pyproject.toml requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with the project and its dev tools

.PHONY: controlplane
controlplane: ## Build the local control plane binaries from the Go module proxy (cached; no-op when built)
	@bash hack/build-controlplane.sh

.PHONY: test
test: venv controlplane deps ## Run unit and e2e tests (builds and installs what is missing first)
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

.PHONY: lock
lock: ## Re-resolve requirements.lock (runtime) and requirements-dev.lock (runtime + dev) with hashes
	@test -x .lock-venv/bin/pip-compile || { $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install --quiet pip-tools; }
	.lock-venv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --output-file=requirements.lock pyproject.toml
	.lock-venv/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra dev --output-file=requirements-dev.lock pyproject.toml

.PHONY: dev-cluster
dev-cluster: venv controlplane ## Start the local control plane in the foreground (.dev/kubeconfig)
	$(PY) -m tests.harness.devcluster

.PHONY: run
ARGS ?=
run: venv ## Run the operator against $$KUBECONFIG, or a local control plane when there is none (ARGS='manager flags')
	$(PY) hack/run.py $(ARGS)

.PHONY: bench
bench: venv controlplane ## Run the benchmarks (not part of make test)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench $(BENCH)

.PHONY: clean
clean: ## Remove build outputs (not the control plane cache)
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache src/*.egg-info

# ---------------------------------------------------------------------------- delivery (design.md §delivery)
# Every target below works against the kubeconfig in use ($KUBECONFIG, else ~/.kube/config), like kubectl.
VERSION      := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
IMG          ?= ghcr.io/openjobspec/ojs-operator:v$(VERSION)
BUNDLE_IMG   ?= ghcr.io/openjobspec/ojs-operator-bundle:v$(VERSION)
CONTAINER_TOOL ?= docker
NAMESPACE    ?= ojs-system
RELEASE      ?= ojs-operator
HELM_ARGS    ?=
# kubectl and helm: the pinned builds from hack/build-controlplane.sh (built on first use), or a kubectl
# already on PATH when the pinned one is not built yet.
TOOLS_BIN    := $(or $(OJSCTRL_CONTROLPLANE_BIN),$(shell bash hack/build-controlplane.sh --print-bin 2>/dev/null))
KUBECTL      ?= $(if $(wildcard $(TOOLS_BIN)/kubectl),$(TOOLS_BIN)/kubectl,$(or $(shell command -v kubectl 2>/dev/null),$(TOOLS_BIN)/kubectl))
HELM         ?= $(TOOLS_BIN)/helm
CHART        := deploy/helm/ojs-operator

.PHONY: tools
tools: ## Make sure kubectl and helm are there (builds the pinned ones when missing)
	@if [[ ! -x "$(KUBECTL)" || ! -x "$(HELM)" ]]; then bash hack/build-controlplane.sh; fi

.PHONY: deps
deps: ## Install tools some tests use (promtool from Debian's prometheus package; hack/olm-validate, cached)
	@bash hack/install-deps.sh

.PHONY: manifests generate
manifests: venv ## Regenerate CRDs, webhook configuration, their copies in deploy/, the OLM CSV, dashboards, alerts and CRD docs
	$(PY) -m ojsctrl.api.crdgen
	$(PY) -m ojsctrl.webhooks.manifests --write .
	$(PY) hack/sync_manifests.py
	$(PY) hack/gen_olm.py
	$(PY) hack/gen_dashboards.py
	$(PY) hack/gen_alerts.py
	$(PY) hack/gen_crd_docs.py
generate: manifests ## Same as manifests (the reference README's name)

.PHONY: install
install: tools ## Install or update the CRDs in the cluster (server-side apply)
	$(KUBECTL) apply --server-side --field-manager=ojsctrl-install --force-conflicts -f manifests/crds
	$(KUBECTL) wait --for=condition=Established --timeout=60s -f manifests/crds

.PHONY: uninstall
uninstall: tools ## Remove the CRDs, and with them every OJSCluster and OJSWorker
	bash hack/uninstall-crds.sh $(KUBECTL) manifests/crds

.PHONY: deploy
deploy: tools ## Deploy the operator with kustomize (deploy/default), image $(IMG)
	$(KUBECTL) kustomize deploy/default \
	  | sed 's|image: ghcr.io/openjobspec/ojs-operator:v[^[:space:]]*|image: $(IMG)|' \
	  | $(KUBECTL) apply --server-side --field-manager=ojsctrl-install --force-conflicts -f -
	$(KUBECTL) rollout status -n $(NAMESPACE) deployment/ojs-operator-controller-manager --timeout=180s

.PHONY: undeploy
undeploy: tools ## Remove the operator; keeps the CRDs (your resources) and the namespace
	$(KUBECTL) delete --ignore-not-found -k deploy/default -l app.kubernetes.io/name=ojs-operator,app.kubernetes.io/component

.PHONY: build
build: venv ## Build the wheel into dist/
	$(PY) -m pip wheel --no-deps --wheel-dir dist .
	@ls -1 dist/*.whl

define need_engine
	@command -v $(CONTAINER_TOOL) >/dev/null 2>&1 || { echo "$@: $(CONTAINER_TOOL) is not installed (set CONTAINER_TOOL=podman to use Podman)" >&2; exit 1; }
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { echo "$@: no container engine answers '$(CONTAINER_TOOL) info': start Docker (or Podman with CONTAINER_TOOL=podman) and try again" >&2; exit 1; }
endef

.PHONY: docker-build
docker-build: ## Build the operator image $(IMG) (needs a running container engine)
	$(need_engine)
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the operator image $(IMG)
	$(need_engine)
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: bundle-build
bundle-build: ## Build the OLM bundle image $(BUNDLE_IMG) from deploy/olm
	$(need_engine)
	$(CONTAINER_TOOL) build -f deploy/olm/bundle.Dockerfile -t $(BUNDLE_IMG) deploy/olm

.PHONY: helm-lint
helm-lint: tools ## Lint the Helm chart
	$(HELM) lint $(CHART)

.PHONY: helm-package
helm-package: tools ## Package the Helm chart into dist/
	$(HELM) package $(CHART) --destination dist

.PHONY: helm-install
helm-install: tools ## Install or upgrade the operator with Helm into $(NAMESPACE) (HELM_ARGS="--set ...")
	$(HELM) upgrade --install $(RELEASE) $(CHART) --namespace $(NAMESPACE) --create-namespace $(HELM_ARGS)

.PHONY: helm-uninstall
helm-uninstall: tools ## Uninstall the Helm release (the CRDs stay)
	$(HELM) uninstall $(RELEASE) --namespace $(NAMESPACE)
