# `make test` and `make demo` work on a fresh machine: they create .venv and install the project
# with its dev extras first (again whenever setup.cfg changes).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: test lint demo worker bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict flask_commands

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/flask --app 'demo_app:create_app()' run --port $${PORT:-5000}

bench: $(STAMP)
	$(BIN)/python bench/build.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
