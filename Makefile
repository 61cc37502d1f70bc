# The two commands of the quick start are `make run` and `make test`; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run simulate test lint format clean validate-deploy deploy-sync bench

install: $(STAMP)

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/mediagate serve --host $(HOST) --port $(PORT)

simulate: install
	$(BIN)/mediagate simulate --host $(HOST) --port 9000

lint: install
	$(BIN)/ruff check app tests deploy bench
	$(BIN)/ruff format --check app tests deploy bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format app tests deploy bench
	$(BIN)/ruff check --fix app tests deploy bench

test: lint
	$(BIN)/pytest

# What the gateway adds over calling the upstream directly (README "Performance"): about 3.5
# minutes on 2 cores, BENCH_QUICK=1 for about 1.5. Not part of `make test` (a tiny run of it
# is: tests/test_bench_smoke.py). Writes bench/results.json (or BENCH_OUT).
bench: install
	$(BIN)/python -m bench

# The container, compose and Kubernetes material, checked offline (also part of `make test`).
validate-deploy: install
	$(BIN)/hadolint Dockerfile
	kubectl kustomize deploy/kubernetes/overlays/production > /dev/null
	$(BIN)/pytest -q tests/test_deploy.py

# Rewrite the Kubernetes PrometheusRule from deploy/prometheus/alerts.yml.
deploy-sync: install
	$(BIN)/python deploy/render_prometheusrule.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
