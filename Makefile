# The two commands of the quick start are `make run` and `make test`; both install first, into
# one virtualenv: `make run` only what serving needs (`pip install -e .`), `make test` the
# development tools on top (`.[dev]`: the SDK the tests drive the gateway with, linters, the
# deployment checks). A stamp per kind of install: each is redone only when pyproject.toml
# changes, and the dev install also counts as the runtime one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-dev run simulate test lint format clean validate-deploy deploy-sync bench \
	admin-openapi screenshots \
	bench-memory bench-modes bench-soak bench-records bench-batch

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(RUN_STAMP)

run: install
	$(BIN)/mediagate serve --host $(HOST) --port $(PORT)

simulate: install
	$(BIN)/mediagate simulate --host $(HOST) --port 9000

# The admin API's OpenAPI document (mediagate/http/admin_openapi.json), regenerated from the
# code's /admin/v1 routes; tests/test_admin_reads.py fails while the saved one differs.
admin-openapi: install
	$(BIN)/python -c 'from mediagate.app import write_admin_openapi; write_admin_openapi()'

lint: install-dev
	$(BIN)/ruff check mediagate tests deploy bench
	$(BIN)/ruff format --check mediagate tests deploy bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install-dev
	$(BIN)/ruff format mediagate tests deploy bench
	$(BIN)/ruff check --fix mediagate tests deploy bench

# One pytest run on every core (pytest-xdist). The files that talk to the upstream run their
# gateway tests on each upstream transport in that run (tests/conftest.py: UPSTREAM_TEST_FILES;
# MEDIAGATE_UPSTREAM_TRANSPORT: aiohttp by default, httpx2's own pool the other);
# TEST_UPSTREAM_TRANSPORT=httpx puts every gateway of a run on one transport instead.
TEST_WORKERS ?= auto

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=20

# The console's screenshots in docs/screenshots/ (console-<page>-1280.png and -390.png, shown by
# docs/console.md and the README), refreshed by the browser test that takes them into a
# temporary folder on every run (tests/screenshots.py); needs a Chromium (`apt-get install
# chromium`).
screenshots: install-dev
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/pytest -p no:xdist -q \
		tests/test_console_browser.py::test_every_page_at_both_widths

# What the gateway adds over calling the upstream directly (docs/performance.md): about 3.5
# minutes on 2 cores, BENCH_QUICK=1 for about 1.5. Not part of `make test` (a tiny run of it
# is: tests/test_bench_smoke.py). Writes bench/results.json (or BENCH_OUT). Then issue 28's
# axes, each a mode of its own (bench-modes), and issue 25's records at scale (bench-records).
bench: install
	$(BIN)/python -m bench
	$(BIN)/python -m bench all

# Issue 28's axes (docs/performance.md, "At the scale of generation"): every bench/<mode>.py
# listed in bench/__main__.py and present (slow, b64, sse, download, polls, startup, reqlog, records),
# one process each, each writing bench/<mode>-results.json; the ten-minute soak too with
# BENCH_SOAK=1. BENCH_LITELLM=1 adds LiteLLM's proxy as a side (installed into
# bench/.litellm-venv the first time); BENCH_QUICK=1 for short rounds.
bench-modes: install
	$(BIN)/python -m bench all

# Ten minutes of mixed traffic: the gateway's RSS at minutes 1, 5 and 10 within 10%, 0 errors
# (BENCH_SOAK_S shortens it). Writes bench/soak-results.json (or BENCH_SOAK_OUT).
bench-soak: install
	$(BIN)/python -m bench soak

# Issue 25's records at scale (docs/performance.md, "Records at scale"): 1,000,000 request-log
# rows and their rollups seeded into SQLite and into a PostgreSQL database of its own
# (MEDIAGATE_TEST_POSTGRES_URL's server, or 127.0.0.1:5432), then the admin API's usage and
# request-log reads timed against 200 ms, in SQL and over HTTP. A few minutes; also part of
# `make bench` (the issue's "make bench gains"), here to run alone. BENCH_RECORDS_ROWS for
# fewer rows. Writes bench/records-results.json (or BENCH_RECORDS_OUT).
bench-records: install
	$(BIN)/python -m bench records

# The gateway's RSS under issue 24's two attacks (40 parallel 30 MiB bodies from an over-limit
# key; 8 concurrent 1 GiB gzip bombs from the upstream): idle, peak, after (docs/performance.md).
# About a minute. Writes bench/memory-results.json (or BENCH_MEMORY_OUT); fails if RSS passes
# idle + 200 MB.
# Issue 27's 1,000-line images batch: wall time, upstream calls in flight, the gateway's peak RSS
# (docs/performance.md, "Batches").
bench-batch: install
	$(BIN)/python -m bench batch

bench-memory: install
	$(BIN)/python -m bench memory

# The container, compose and Kubernetes material, checked offline (also part of `make test`).
validate-deploy: install-dev
	$(BIN)/hadolint Dockerfile
	kubectl kustomize deploy/kubernetes/overlays/production > /dev/null
	$(BIN)/pytest -q tests/test_deploy.py

# Rewrite the Kubernetes PrometheusRule from deploy/prometheus/alerts.yml.
deploy-sync: install
	$(BIN)/python deploy/render_prometheusrule.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
