# TSC orchestrator: `make run` runs the job on the sample, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt setup.py | sha1sum | cut -c1-12)
OUT := out

.PHONY: help venv run test test-unit test-integration lint clean

help:
	@echo "make run   - run the orchestrator locally on examples/ (starts the sample config service)"
	@echo "make test  - unit tests, then the tests that start services"
	@echo "make lint  - ruff"

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip check
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: venv
	@mkdir -p $(OUT)
	@bash scripts/run_local.sh $(OUT)

test: venv
	$(PY) -m pytest -m "not integration" -q
	$(PY) -m pytest -m integration -q

test-unit: venv
	$(PY) -m pytest -m "not integration" -q

test-integration: venv
	$(PY) -m pytest -m integration -q

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
