# The only entry points: build, serve, wheel, test, bench, loadtest, example, lint, format.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fastctx-built
SERVE_STAMP := $(VENV)/.fastctx-served
OIDC_DIR := tests/support/oidc
OIDC_STAMP := $(OIDC_DIR)/node_modules/.installed
# `make serve PORT=9000`, or the FASTCTX_* variable `fastctx serve` itself reads.
HOST ?= $(or $(FASTCTX_HOST),127.0.0.1)
PORT ?= $(or $(FASTCTX_PORT),8000)
BACKEND ?= $(or $(FASTCTX_BACKEND),memory://)
PYTEST_ARGS ?=

# Installs one optional-dependency group of pyproject.toml into the venv.
extra_requirements = $(BIN)/python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['$(1)']))"

RUST_SOURCES := $(wildcard rust_core/src/*.rs) rust_core/Cargo.toml $(wildcard rust_core/Cargo.lock)
PY_SOURCES := pyproject.toml

.PHONY: help build serve wheel test test-rust test-python redis-server wrk lint format bench bench-scaling loadtest example clean

help:
	@echo "make serve   build (release) and serve on $(HOST):$(PORT) (HOST, PORT, BACKEND)"
	@echo "make wheel   build the wheel into dist/"
	@echo "make test    build, then cargo test and the pytest suite against a real redis-server"
	@echo "make lint    ruff, mypy --strict, cargo fmt --check, cargo clippy -D warnings"
	@echo "make format  apply ruff format and cargo fmt"
	@echo "make bench   wrk against the floors, fastctx and its peers; conversations; micro benchmarks"
	@echo "make bench-scaling  cost per request of 1..4 nodes on one Redis and on a cluster"
	@echo "make loadtest  locust scenarios, headless, with CSV and HTML reports"
	@echo "make example  fastctx, gateway -> pricing -> billing and an SSE listener: one order"
	@echo "make docs    the documentation site, mkdocs build --strict, into site/"

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip "maturin>=1.9,<2"

# The extension is rebuilt only when the Rust sources or the packaging change. The dev tools
# include everything serving needs, so a dev build is a serve build too.
$(STAMP): $(BIN)/python $(RUST_SOURCES) $(PY_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH \
		$(BIN)/maturin develop --release --extras dev --quiet
	touch $@ $(SERVE_STAMP)

build: $(STAMP)

# Only what `fastctx serve` needs; its log is kept and shown if the build fails.
$(SERVE_STAMP): $(BIN)/python $(RUST_SOURCES) $(PY_SOURCES)
	@echo "Building fastctx (release) and the server's packages into $(VENV)..."
	@VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH \
		$(BIN)/maturin develop --release --extras server --quiet >$(VENV)/build.log 2>&1 \
		|| { cat $(VENV)/build.log; exit 1; }
	@touch $@

serve: $(SERVE_STAMP)
	@echo "Serving http://$(if $(findstring :,$(HOST)),[$(HOST)],$(HOST)):$(PORT) (Ctrl-C stops it)"
	@$(BIN)/fastctx serve --backend "$(BACKEND)" --host "$(HOST)" --port "$(PORT)"

# One abi3 wheel for every CPython from 3.11: `pip install dist/fastctx-*.whl`, or with
# `[server]` for `fastctx serve`.
wheel: $(BIN)/python
	$(BIN)/maturin build --release --quiet --out dist

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing it from Debian's packages"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@redis-server --version

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		echo "wrk not found: installing it from Debian's packages"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }

$(VENV)/.extra-%: pyproject.toml | $(STAMP)
	$(call extra_requirements,$*) > $@.txt
	$(BIN)/pip install --quiet -r $@.txt
	touch $@

test-rust:
	cargo test --manifest-path rust_core/Cargo.toml

test-python: build redis-server $(OIDC_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# The authorization server of the OAuth tests (oidc-provider, from the npm registry), at the
# versions of its package-lock.json; Node.js from Debian's packages when it is missing.
$(OIDC_STAMP): $(OIDC_DIR)/package.json $(OIDC_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
		echo "npm not found: installing Node.js from Debian's packages"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --prefix $(OIDC_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

test: build redis-server test-rust test-python

lint: build
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest fastctx._core
	cargo fmt --manifest-path rust_core/Cargo.toml --check
	cargo clippy --manifest-path rust_core/Cargo.toml --all-targets -- -D warnings

format: $(BIN)/python
	$(BIN)/ruff check --fix . || true
	$(BIN)/ruff format .
	cargo fmt --manifest-path rust_core/Cargo.toml

bench: build redis-server wrk $(VENV)/.extra-bench $(OIDC_STAMP)
	$(BIN)/python benches/run.py $(BENCH_ARGS)
	$(BIN)/python benches/coherence.py
	$(BIN)/python benches/fanout.py
	$(BIN)/python benches/conversation.py $(CONVERSATION_ARGS)
	$(BIN)/python benches/quotas.py
	$(BIN)/pytest benches --benchmark-enable --benchmark-only -q -p no:cacheprovider \
		--benchmark-columns=min,median,mean,ops --benchmark-sort=name \
		--benchmark-json=benches/results/micro.json

bench-scaling: build redis-server wrk $(VENV)/.extra-bench
	$(BIN)/python benches/scaling.py --redis single
	$(BIN)/python benches/scaling.py --redis cluster

loadtest: build $(VENV)/.extra-load
	$(BIN)/python loadtests/run.py $(LOADTEST_ARGS)

.PHONY: docs
# The site, into site/: docs/hooks/pages.py writes the HTTP API and benchmarks pages.
docs: $(VENV)/.extra-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

example: build
	FASTCTX_BACKEND="$(BACKEND)" $(BIN)/python examples/run.py

clean:
	rm -rf $(VENV) dist rust_core/target target .pytest_cache .mypy_cache .ruff_cache
