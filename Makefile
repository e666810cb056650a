# Driftline — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
RUN := $(UV) run --frozen

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: uv
uv: ## Install uv from PyPI if it is missing
	@command -v $(UV) >/dev/null 2>&1 || { echo "installing uv from PyPI…"; python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv; }

.PHONY: system
system: ## Install system packages (redis-server, kcat, Prometheus, Alertmanager, Go, chromium) with apt-get when root
	@missing=""; for c in redis-server:redis-server kcat:kcat promtool:prometheus prometheus:prometheus \
	  prometheus-alertmanager:prometheus-alertmanager go:golang-go chromium:chromium; do \
	  command -v $${c%%:*} >/dev/null 2>&1 || case " $$missing " in *" $${c##*:} "*) ;; \
	    *) missing="$$missing $${c##*:}";; esac; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing$$missing with apt-get…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing:$$missing — run: sudo apt-get install$$missing"; exit 1; fi; fi
	@command -v java >/dev/null && command -v mvn >/dev/null || { echo "Java 17+ and Maven are needed: sudo apt-get install openjdk-17-jre-headless maven"; exit 1; }

.PHONY: install
install: uv system ## Install Python packages (uv sync), fetch the Kafka jars and build Jaeger once
	$(UV) sync --frozen --all-packages
	$(RUN) driftline infra fetch --no-helm

.PHONY: helm
helm: install ## Build Helm 4 once (the chart's tests run helm lint and helm template)
	$(RUN) driftline infra fetch --helm

.PHONY: proto
proto: ## Regenerate the gRPC code from proto/ into libs/rpc
	$(RUN) python scripts/gen_proto.py

.PHONY: lint
lint: ## ruff (lint + format check), mypy, stale-proto check
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy libs services
	$(RUN) python scripts/gen_proto.py --check

.PHONY: test
test: install helm lint ## Everything: lint, types, stale proto, the chart, unit and integration tests
	$(RUN) pytest -q --durations=40

.PHONY: unit
unit: ## Unit tests only (no sockets)
	$(RUN) pytest -q -m unit

.PHONY: up
up: install ## Start Kafka, Redis, Prometheus, Alertmanager, Jaeger and every service (Ctrl-C stops them)
	$(RUN) driftline up

.PHONY: down
down: ## Stop whatever `make up` / `driftline up --detach` started
	$(RUN) driftline down

.PHONY: demo
demo: install ## Run the whole loop on a scenario with a known concept drift (SECURE=1: in secure mode)
	$(RUN) driftline demo $(if $(SECURE),--secure,)

.PHONY: bench
bench: install ## Run the benchmarks and write bench/report.md + bench/report.json
	$(RUN) python bench/run_all.py
