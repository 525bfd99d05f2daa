# Every target bootstraps its own virtual environment from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint bench demo sim clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest --cov=jobsync --cov-report=term $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check jobsync tests benchmarks examples
	$(BIN)/ruff format --check jobsync
	$(BIN)/mypy --strict jobsync

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

demo: $(STAMP)
	$(BIN)/python -m jobsync demo

sim: $(STAMP)
	$(BIN)/python -m jobsync.sim --soak $(or $(SECONDS),60)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .coverage
