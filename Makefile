# The two commands a fresh machine needs:
#   make run    set up .venv, train on the demo data if there is no model yet, serve on :8000
#   make test   set up .venv with the test tools, run the tests
# and the habit CI keeps:
#   make lint   ruff check, ruff format --check, mypy
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint model clean redis-server

$(VENV)/.runtime: requirements.txt
	@echo "Installing the pinned runtime into $(VENV) (the first time only: a few minutes)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-eval.txt requirements-spark.txt
	@echo "Installing the test and lint tools into $(VENV) (the first time only)..."
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

model: $(VENV)/.runtime
	$(PY) als_fit.py --if-missing

run: model
	$(PY) platform.py

# The store tests start real redis-server processes: Debian's package, installed here when it is
# missing and this is root on a machine with apt-get; elsewhere those tests fail saying what to install.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || command -v valkey-server >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's redis-server for the store tests (the first time only)..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "note: no redis-server here; the store tests will fail and say how to install one"; fi; }

test: $(VENV)/.dev redis-server
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) models data build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
