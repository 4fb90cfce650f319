# The two set-up commands (see README): `make run` and `make test`. Both build .venv at the
# repository root from the package index; nothing needs to be installed beforehand but a
# Python >= 3.11 (PYTHON=python3.12 make ... to pick another).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

run: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/rnnkit demo

test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(MAKE) lint
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
