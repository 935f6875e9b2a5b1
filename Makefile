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

# The demo: a Celery worker in the background and Flask's development server, on the embedded
# filesystem broker (folders in instance/) unless FLASK_CELERY__broker_url says otherwise. Ctrl-C stops
# both: the shell's trap stops the worker once the server has exited.
demo: $(STAMP)
	@trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/celery -A demo_app.worker worker --pool=solo --loglevel=INFO & worker=$$!; \
	$(BIN)/flask --app 'demo_app:create_app()' --debug run --port $${PORT:-5000}

# Only the demo's worker, e.g. against Redis:
#   FLASK_CELERY__broker_url=redis://127.0.0.1:6379/0 make worker
worker: $(STAMP)
	$(BIN)/celery -A demo_app.worker worker --pool=solo --loglevel=INFO

# The CPU benches: build against WTForms, pydantic and marshmallow, and the same endpoint in
# Flask-Commands and its peers (the bench extra). bench/peers.py --http adds gunicorn + wrk.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/build.py
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
