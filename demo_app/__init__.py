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
from flask import Response
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

#: Seconds to wait for a database connection (``DATABASE_CONNECT_TIMEOUT``).
CONNECT_TIMEOUT = 5.0
#: Seconds a statement may run (``DATABASE_STATEMENT_TIMEOUT``): PostgreSQL's ``statement_timeout``,
#: the MySQL/MariaDB driver's read and write timeouts.
STATEMENT_TIMEOUT = 15.0

#: The headers every response gets (an app's own value wins). The pages use only their own
#: scripts and styles (htmx 4 adds its indicator style as a constructed style sheet, which
#: ``style-src`` allows); the favicon is a ``data:`` URL. No ``'unsafe-eval'``: the pages carry no
#: ``hx-on`` attribute or trigger filter for htmx to evaluate; the macros' behaviour is the
#: package's ``commands.js`` (see docs/deployment.md).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self';"
        " object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Make the demo app.

    Configuration, later sources winning: the defaults below, ``FLASK_``-prefixed environment
    variables (``FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://…``,
    ``FLASK_CELERY__broker_url=redis://127.0.0.1:6379/0``, ``FLASK_SECRET_KEY=…``), then
    ``test_config``. Tables are created on start.

    Production settings it ships with (see docs/deployment.md): ``MAX_CONTENT_LENGTH`` (64 KiB),
    ``SESSION_COOKIE_SAMESITE="Lax"``, :data:`SECURITY_HEADERS` on every response, and an engine
    that checks connections before use and times out: ``DATABASE_CONNECT_TIMEOUT`` (5 s) and
    ``DATABASE_STATEMENT_TIMEOUT`` (15 s); ``SQLALCHEMY_ENGINE_OPTIONS`` given by the app win.
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
        # A todo is a few hundred bytes: refuse bodies over 64 KiB with 413 before reading them.
        MAX_CONTENT_LENGTH=64 * 1024,
        # The session cookie is not sent on cross-site posts (CSRF tokens remain the defence).
        SESSION_COOKIE_SAMESITE="Lax",
        DATABASE_CONNECT_TIMEOUT=CONNECT_TIMEOUT,
        DATABASE_STATEMENT_TIMEOUT=STATEMENT_TIMEOUT,
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
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = _engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"],
        app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {},
        connect_timeout=float(app.config["DATABASE_CONNECT_TIMEOUT"]),
        statement_timeout=float(app.config["DATABASE_STATEMENT_TIMEOUT"]),
    )
    app.after_request(_security_headers)

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


def _engine_options(
    uri: str, given: t.Mapping[str, t.Any], *, connect_timeout: float, statement_timeout: float
) -> dict[str, t.Any]:
    """``SQLALCHEMY_ENGINE_OPTIONS`` with the demo's defaults added: what the app set always wins.

    Connections are checked before use (``pool_pre_ping``), so the first request after the
    database comes back succeeds; connecting and statements time out, so a database that never
    answers costs a request seconds, not minutes, and the request gets a 503.
    """
    url = sa.make_url(uri)
    backend = url.get_backend_name()
    defaults: dict[str, t.Any] = {}
    if backend == "postgresql":
        # libpq counts whole seconds, and takes less than 2 as 2.
        defaults["connect_timeout"] = max(2, round(connect_timeout))
        defaults["options"] = f"-c statement_timeout={round(statement_timeout * 1000)}"
        # statement_timeout is the server's: against a host that vanished, the kernel gives up
        # on unacknowledged data (tcp_user_timeout) and on an idle connection (keepalives).
        defaults["tcp_user_timeout"] = round(statement_timeout * 1000)
        defaults["keepalives_idle"] = max(1, round(connect_timeout))
        defaults["keepalives_interval"] = 2
        defaults["keepalives_count"] = 3
    elif backend in ("mysql", "mariadb"):
        # PyMySQL's read timeout bounds each statement's wait for the server, on any server.
        defaults["connect_timeout"] = max(1, round(connect_timeout))
        defaults["read_timeout"] = statement_timeout
        defaults["write_timeout"] = statement_timeout
    options = dict(given)
    options.setdefault("pool_pre_ping", True)
    connect_args = {key: value for key, value in defaults.items() if key not in url.query}
    connect_args.update(options.get("connect_args") or {})
    if connect_args:
        options["connect_args"] = connect_args
    return options


def _security_headers(response: Response) -> Response:
    """Add :data:`SECURITY_HEADERS` to every response, keeping any a view set itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


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
