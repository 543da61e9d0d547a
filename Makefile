# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WALLET_PORT ?= 8100

.PHONY: run test test-smoke lint browser install install-dev bench bench-core bench-engine bench-settlement chaos stop-embedded clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## run: web, wallet, engine, worker and beat under one supervisor (Ctrl-C stops them all)
# A development run: DEBUG on (so the dev secret key is accepted) unless the caller says otherwise.
run: export DEBUG := $(or $(DEBUG),true)
run: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py create_default_markets
	@echo ""
	@echo "  API docs : http://127.0.0.1:$(PORT)/api/docs/"
	@echo "  API      : http://127.0.0.1:$(PORT)/api/v1/"
	@echo "  admin    : http://127.0.0.1:$(PORT)/admin/"
	@echo "  metrics  : http://127.0.0.1:$(PORT)/metrics"
	@echo "  ready?   : http://127.0.0.1:$(PORT)/readyz"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" WEB_PORT=$(PORT) WALLET_PORT=$(WALLET_PORT) \
	  WALLET_URL=$${WALLET_URL:-http://127.0.0.1:$(WALLET_PORT)} $(BIN)/honcho -f Procfile start

## test: lint and the whole suite (real PostgreSQL and Redis; embedded ones when the URLs are unset)
test: install-dev browser
	$(BIN)/ruff check .
	$(BIN)/pytest

## test-smoke: the platform tests alone (CI runs them with the URLs unset: the embedded path)
test-smoke: install-dev
	$(BIN)/pytest tests/platform

## browser: Debian's Chromium for the admin test (Playwright drives it; never `playwright install`)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "no chromium: the admin browser test will be skipped"

lint: install-dev
	$(BIN)/ruff check .

## benchmarks (each prints one JSON object last)
bench-core: install
	$(BIN)/python -m matching.bench

bench-engine: install-dev
	$(BIN)/python -m matching.bench_engine

bench-settlement: install-dev
	$(BIN)/python -m settlement.bench

## bench: the whole exchange under load next to a bare DRF endpoint (< 5 min);
## BENCH_ARGS="--duration 600 --rate 30" (soak), "--step" (knee), "--profile cpu --profile-phase capacity"
bench: install-dev
	$(BIN)/python -m exchange.bench $(BENCH_ARGS)

## chaos: the full reliability loops (kill -9 of engine and workers, Redis loss, races, contract); prints the table
chaos: install-dev
	$(BIN)/python -m tests.reliability.run --full

stop-embedded: install
	$(BIN)/python -m exchange.embedded stop

clean:
	rm -rf $(VENV) var *.egg-info
