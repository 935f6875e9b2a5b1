# `make test` and `make demo` work on a fresh machine: they create .venv and install the project
# first (again whenever setup.cfg changes): `make test` with the dev extras (test and lint tools),
# `make demo` with the demo extra only.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
PYTHON ?= python3
PORT ?= 5000

.PHONY: test lint demo worker bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict flask_commands demo_app

test: lint
	$(BIN)/pytest

$(DEMO_STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the demo into $(VENV) (Flask, Flask-WTF, Celery)..."
	@$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[demo]'
	@touch $(DEMO_STAMP)

# The demo: a Celery worker in the background and Flask's development server, on the embedded
# filesystem broker (folders in instance/) unless FLASK_CELERY__broker_url says otherwise. Ctrl-C stops
# both: the shell's trap stops the worker once the server has exited. PORT=5001 make demo when
# port 5000 is taken.
demo: $(DEMO_STAMP)
	@echo "The board: http://127.0.0.1:$(PORT)/  (activity log /activity, JSON API /todos; Ctrl-C stops)"
	@trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/celery -A demo_app.worker worker --pool=solo --loglevel=WARNING & worker=$$!; \
	$(BIN)/flask --app 'demo_app:create_app()' --debug run --port $(PORT)

# Only the demo's worker, e.g. against Redis:
#   FLASK_CELERY__broker_url=redis://127.0.0.1:6379/0 make worker
worker: $(DEMO_STAMP)
	$(BIN)/celery -A demo_app.worker worker --pool=solo --loglevel=INFO

# The CPU benches: build against WTForms, pydantic and marshmallow, and the same endpoint in
# Flask-Commands and its peers (the bench extra). bench/peers.py --http adds gunicorn + wrk.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/build.py
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
