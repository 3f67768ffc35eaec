# The two commands a fresh machine needs:
#   make run    set up .venv, train on the demo data if there is no model yet, serve on :8000
#   make test   set up .venv with the test tools, run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test lint model clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-eval.txt requirements-spark.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

model: $(VENV)/.runtime
	$(PY) als_fit.py --if-missing

run: model
	$(PY) platform.py

test: $(VENV)/.dev
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) models data .pytest_cache .ruff_cache .hypothesis
