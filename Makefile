# The two commands of the README: `make serve` and `make test`. Both set up
# everything they need on a fresh machine (a .venv with the project installed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test lint typecheck unit venv schema clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev,speed,mqtt]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/fablecast serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check protocol server inference clients/python tests
	$(BIN)/ruff format --check protocol server inference clients/python tests

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

schema: $(STAMP)
	$(BIN)/python -m protocol.schema > clients/schema/protocol.v1.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
