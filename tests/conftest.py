"""Fixtures shared by the whole suite: apps, databases, and the service-skip rule."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import typing as t

import flask
import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser

# COMMANDS_TEST_<NAME>_URL points a service at another database, Redis number or vhost on the same
# server, so that two checkouts can run the suite side by side without sharing tables or queues.
SERVICES = {
    name: (host, port, os.environ.get(f"COMMANDS_TEST_{name.upper()}_URL", url))
    for name, host, port, url in [
        ("postgresql", "127.0.0.1", 5432, "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        ("mariadb", "127.0.0.1", 3306, "mysql+pymysql://root@127.0.0.1:3306/test"),
        ("redis", "127.0.0.1", 6379, "redis://127.0.0.1:6379/0"),
        ("rabbitmq", "127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
    ]
}
CHROMIUM = "/usr/bin/chromium"


def _missing(reason: str) -> t.NoReturn:
    """Skip the test, or fail it when COMMANDS_REQUIRE_SERVICES=1 (as CI sets)."""
    if os.environ.get("COMMANDS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COMMANDS_REQUIRE_SERVICES=1, so this fails instead of skipping)")
    pytest.skip(reason)


def require_service(name: str) -> str:
    """Return the URL of service ``name``, or skip (or fail, under CI) when it is not listening."""
    host, port, url = SERVICES[name]
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as e:
        _missing(f"{name} is not reachable at {host}:{port}: {e}")
    return url


def require_chromium() -> str:
    """Return the path of Debian's Chromium, or skip (or fail, under CI) when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


def require_wrk() -> None:
    """Skip (or fail, under CI) when Debian's ``wrk``, which drives the HTTP benches, is missing."""
    if shutil.which("wrk") is None:
        _missing("wrk is not installed (apt-get install wrk)")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def app(tmp_path: pathlib.Path) -> flask.Flask:
    """A bare Flask app (no extension) whose SQLAlchemy database is a SQLite file in ``tmp_path``."""
    app = flask.Flask(__name__)
    app.config["TESTING"] = True
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.sqlite'}"
    return app


@pytest.fixture
def app_ctx(app: flask.Flask) -> t.Iterator[flask.ctx.AppContext]:
    with app.app_context() as ctx:
        yield ctx


@pytest.fixture
def client(app: flask.Flask) -> flask.testing.FlaskClient:
    """A test client of ``app`` (a module's own ``app`` fixture where it overrides this one's)."""
    return app.test_client()


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    """Debian's Chromium under Playwright, one per test module.

    Module-scoped, not session-scoped: a sync Playwright still running when another module starts
    its own fails, and one left running for the whole session would hold its event loop across
    every other module's tests.
    """
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Let SQLAlchemy emit BEGIN itself, so that SAVEPOINTs are part of the transaction.

    sqlite3's legacy transaction control (the default before Python 3.16) emits no BEGIN before a
    SAVEPOINT, so a savepoint opened first starts the transaction and its RELEASE commits it: a
    nested handler's writes would survive the outer handler's rollback. This is SQLAlchemy's
    documented workaround ("Transactions with SQLite and the sqlite3 driver").
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: t.Any, record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN")


@pytest.fixture
def db(app: flask.Flask, app_ctx: flask.ctx.AppContext) -> t.Iterator[SQLAlchemy]:
    """Flask-SQLAlchemy on ``app``'s SQLite file, with real transactions and savepoints."""
    db = SQLAlchemy(app)
    _sqlite_transactions(db.engine)
    yield db
    db.session.remove()
    db.engine.dispose()


@pytest.fixture
def fresh_python() -> t.Callable[..., str]:
    """Runs a script in a new interpreter (for what this process has already imported or set up
    globally) and returns its output; the script must exit 0, or the test fails with its stderr."""

    def run(script: str, *, timeout: float = 60, cwd: pathlib.Path | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run
