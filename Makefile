# labelloop: `make run` starts the service on SQLite, `make test` runs lint, types and the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test lint migrate clean bench bench-quick soak fuzz

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install labelloop with its dev tools

run: $(STAMP)  ## serve http://127.0.0.1:8000 on SQLite (./labelloop.db) with the bundled policies
	$(BIN)/labelloop serve

migrate: $(STAMP)  ## apply migrations to LABELLOOP_DATABASE_URL
	$(BIN)/labelloop migrate

lint: $(STAMP)  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## lint, then every test (needs PostgreSQL on 127.0.0.1:5432)
	$(BIN)/pytest

soak: $(STAMP)  ## 50 rounds of kill -9 of Kafka joiners under load (CI runs 10), a few minutes
	LABELLOOP_SOAK_ROUNDS=50 $(BIN)/pytest tests/kafka/test_kill_loop.py -s

fuzz: $(STAMP)  ## the API against its OpenAPI, 500 examples per operation (LABELLOOP_FUZZ_EXAMPLES=...)
	LABELLOOP_FUZZ_EXAMPLES=$${LABELLOOP_FUZZ_EXAMPLES:-500} LABELLOOP_FUZZ_RANDOM=1 $(BIN)/pytest tests/api/test_fuzz.py

clean:  ## remove the virtual environment and local databases
	rm -rf $(VENV) labelloop.db labelloop.db-wal labelloop.db-shm labelloop.db.writers

bench: $(STAMP)  ## benchmarks beside their ceilings and peers: bench/results.md (needs PostgreSQL)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)  ## a reduced benchmark run, a few minutes
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench.run --quick
