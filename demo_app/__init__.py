"""The Flask-Commands demo: an htmx todo board and a Todo-Backend compatible JSON API.

``flask --app demo_app run`` or ``gunicorn "demo_app:create_app()"``; a Celery worker runs the
background commands (``celery -A demo_app.worker worker``).
"""

from __future__ import annotations

import os
import pathlib
import secrets
import time
import typing as t

import sqlalchemy as sa
from flask import Flask
from flask_wtf.csrf import CSRFProtect  # type: ignore[import-untyped]

from flask_commands import Commands
from flask_commands.celery import init_celery

from . import activity
from . import observability
from .api import api
from .api import register_error_handlers
from .models import db
from .views import board
from .views import idempotency_scope

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_SECRET_KEY_FILE = "secret-key"


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Make the demo app.

    Configuration, later sources winning: the defaults below, ``FLASK_``-prefixed environment
    variables (``FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://…``,
    ``FLASK_CELERY__broker_url=redis://127.0.0.1:6379/0``, ``FLASK_SECRET_KEY=…``), then
    ``test_config``. Tables are created on start.
    """
    app = Flask(
        __name__,
        template_folder=str(_ROOT / "templates"),
        static_folder=str(_ROOT / "static"),
        instance_path=str(_ROOT / "instance"),
    )
    app.config.from_mapping(
        # A board left open all day keeps working: the token lives as long as the session.
        WTF_CSRF_TIME_LIMIT=None,
        COMMANDS_IDEMPOTENCY_SCOPE=idempotency_scope,
        CELERY={"task_ignore_result": True},
    )
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.from_mapping(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", "sqlite:///" + os.path.join(app.instance_path, "demo.sqlite")
    )
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret_key(app.instance_path)

    db.init_app(app)
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _sqlite_wal(engine)
        # The idempotency store lives in the same database, so that several processes (gunicorn
        # workers, Celery workers) share it and a handler's writes commit with its record.
        app.config.setdefault("COMMANDS_IDEMPOTENCY_STORE", engine.url.render_as_string(hide_password=False))
    commands = Commands(app)
    observability.init_app(app)  # OpenTelemetry, when installed and asked for
    init_celery(app)
    csrf = CSRFProtect(app)
    csrf.exempt(api)
    app.register_blueprint(board)
    app.register_blueprint(api)
    register_error_handlers(app)
    activity.init_app(app)
    _create_tables(app, commands)
    return app


def _create_tables(app: Flask, commands: Commands, attempts: int = 5) -> None:
    """Create the missing tables: the demo's and the idempotency store's.

    Several processes may start at once (``gunicorn -w 4`` loads the app in every worker): each
    checks for a table and then creates it, so all but one can fail with "already exists". A
    failed attempt is tried again, and by then the tables are there.
    """
    for attempt in range(1, attempts + 1):
        try:
            with app.app_context():
                db.create_all()
                commands.create_tables(app)
            return
        except sa.exc.DBAPIError:
            if attempt == attempts:
                raise
            time.sleep(0.1 * attempt)


def _instance_secret_key(instance_path: str) -> str:
    """The development secret key: made once, kept in the instance folder, shared by every process.

    Production sets ``FLASK_SECRET_KEY`` instead.
    """
    path = os.path.join(instance_path, _SECRET_KEY_FILE)
    if not os.path.exists(path):
        # Written aside and linked into place: a process starting at the same moment either wins
        # the link or reads the winner's key, never a half-written file.
        temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    with open(path) as file:
        return file.read().strip()


def _sqlite_wal(engine: sa.Engine) -> None:
    """Let the web server and the worker read while the other writes (SQLite's write-ahead log)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: t.Any, record: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
