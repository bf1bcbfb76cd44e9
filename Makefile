# TSC orchestrator: `make run` runs the job on the sample, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt setup.py | sha1sum | cut -c1-12)
OUT := out

.PHONY: help venv run test test-unit test-integration lint clean stack-deps up down run-kafka

help:
	@echo "make run        - run the orchestrator locally on examples/ (starts the sample config service)"
	@echo "make test       - unit tests, then the tests that start services"
	@echo "make up / down  - start / stop the local stack: Kafka, KafkaIO expansion service, config service"
	@echo "make run-kafka  - produce examples/ to the stack's topic and run the pipeline in Kafka mode"
	@echo "make bench      - the throughput benchmark (N=, LATENCY_MS=, SQL_LATENCY_MS=)"
	@echo "make lint       - ruff"

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
	$(MAKE) --no-print-directory stack-deps
	$(PY) -m pytest -m integration -q

test-unit: venv
	$(PY) -m pytest -m "not integration" -q

test-integration: venv stack-deps
	$(PY) -m pytest -m integration -q

# Kafka and Beam's Java KafkaIO come from Maven Central into ~/.cache/tsc-orchestrator, once.
stack-deps:
	@bash scripts/stack/fetch_kafka.sh >/dev/null
	@bash scripts/stack/fetch_beam_java.sh >/dev/null

up: venv stack-deps
	@bash scripts/stack/up.sh

down:
	@bash scripts/stack/down.sh

run-kafka: up
	@set -a && . .stack/stack.env && set +a && \
	$(PY) scripts/stack/produce.py --bootstrap_servers "$$KAFKA_BOOTSTRAP_SERVERS" \
		--topic "$$ORCHESTRATOR_TOPIC" examples/messages.jsonl && \
	$(PY) run_pipeline.py --kafka_max_records $$(wc -l < examples/messages.jsonl) \
		--warehouse sqlite:///.stack/orchestrator.db \
		--job_image registry.example.com/tsc-runner:1.0 --tsc_config_backoff_seconds 0.05 \
		--log_level WARNING

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache

# Benchmark (bench/): seed_baseline vs the pipeline in local mode vs a passthrough pipeline.
N ?= 20000
LATENCY_MS ?= 10
SQL_LATENCY_MS ?= 20
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat requirements-bench.txt | sha1sum | cut -c1-12)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	$(PY) -m pip check
	rm -f $(VENV)/.bench-installed-* && touch $@

.PHONY: bench
bench: venv $(BENCH_STAMP)
	$(PY) -m bench.run --n $(N) --latency_ms $(LATENCY_MS) --sql_latency_ms $(SQL_LATENCY_MS) \
		--repeats 3 --out bench/results
