"""``Commands``: the Flask extension object that wires commands into an application."""

from __future__ import annotations

import threading
import typing as t
import weakref

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import request

from .cli import commands_cli
from .htmx import HTMX_FILENAME

if t.TYPE_CHECKING:
    from .idempotency.store import Store

#: The configuration keys ``init_app`` reads, with their defaults.
DEFAULTS: dict[str, t.Any] = {
    "COMMANDS_IDEMPOTENCY_STORE": "memory",
    "COMMANDS_IDEMPOTENCY_SCOPE": None,
    "COMMANDS_IDEMPOTENCY_WAIT": 5.0,
    "COMMANDS_IDEMPOTENCY_LEASE": 60.0,
    "COMMANDS_IDEMPOTENCY_TTL": 24 * 60 * 60.0,
}


class _AppState:
    """What one application's wiring holds: its settings and, once used, its store."""

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        self.store_setting: t.Any = config["COMMANDS_IDEMPOTENCY_STORE"]
        self.scope: t.Callable[[], t.Any] | None = config["COMMANDS_IDEMPOTENCY_SCOPE"]
        self.wait = float(config["COMMANDS_IDEMPOTENCY_WAIT"])
        self.lease = float(config["COMMANDS_IDEMPOTENCY_LEASE"])
        self.ttl = float(config["COMMANDS_IDEMPOTENCY_TTL"])
        self._store: Store | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> Store:
        """The idempotency store, made on first use (a database may be down when the app starts)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = _make_store(self.store_setting)
        return self._store


def _make_store(setting: t.Any) -> Store:
    if setting == "memory":
        from .idempotency.memory import MemoryStore

        return MemoryStore()
    if isinstance(setting, str):
        from .idempotency.sql import SQLAlchemyStore

        return SQLAlchemyStore(setting)
    if all(hasattr(setting, name) for name in ("claim", "complete", "release")):
        return t.cast("Store", setting)
    raise TypeError(
        f"COMMANDS_IDEMPOTENCY_STORE is {setting!r}; set it to 'memory', a database URL, or a store"
        " instance (MemoryStore, SQLAlchemyStore)."
    )


class Commands:
    """The Flask-Commands extension: ``Commands(app)``, or ``Commands()`` then ``init_app(app)``.

    Registers the ``commands`` blueprint (form macros and the vendored htmx), the Jinja global
    ``commands_macros``, and the ``flask commands`` CLI group. Several apps may share one instance;
    per-app state lives in ``app.extensions["commands"]``'s private table, keyed by app.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app`` and read its configuration.

        Configuration keys (defaults in the README):

        - ``COMMANDS_IDEMPOTENCY_STORE``: ``"memory"``, a database URL, or a store instance.
        - ``COMMANDS_IDEMPOTENCY_SCOPE``: a callable returning the scope of a request's keys (say,
          the user id), or ``None``.
        - ``COMMANDS_IDEMPOTENCY_WAIT``: seconds an HTML form post waits for a running duplicate.
        - ``COMMANDS_IDEMPOTENCY_LEASE``: seconds a claim is held before another may take it over.
        - ``COMMANDS_IDEMPOTENCY_TTL``: seconds outcomes are kept for replay.
        - ``COMMANDS_OTEL``: ``True`` calls :func:`flask_commands.otel.instrument` (the ``otel`` extra).

        :raises RuntimeError: when the app already has a ``Commands`` registered.
        """
        if "commands" in app.extensions:
            raise RuntimeError(
                "A 'Commands' instance has already been registered on this Flask app. Import and use"
                " that instance instead."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        self._states[app] = _AppState(app.config)
        app.extensions["commands"] = self
        app.cli.add_command(commands_cli)
        blueprint = Blueprint(
            "commands",
            __name__,
            template_folder="templates",
            static_folder="static",
            static_url_path="/_commands/static",
        )
        blueprint.after_request(_cache_htmx)
        app.register_blueprint(blueprint)
        _init_views(app)
        if app.config.setdefault("COMMANDS_OTEL", False):
            from .otel import instrument  # only then is OpenTelemetry imported

            instrument()

    def create_tables(self, app: Flask | None = None) -> None:
        """Create the idempotency table of ``app``'s SQLAlchemy store (the current app by default).

        Does nothing for a memory store. Alembic users can instead include the store's ``table``.
        """
        store = self._state(app).store
        if hasattr(store, "create_table"):
            store.create_table()

    def _state(self, app: Flask | None = None) -> _AppState:
        """Return the state of ``app`` (the current app by default)."""
        app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "The current Flask app is not registered with this 'Commands' instance. Did you forget"
                " to call 'init_app', or did you create multiple 'Commands' instances?"
            ) from None


def _init_views(app: Flask) -> None:
    """Add the ``commands_macros`` Jinja global and, with Flask-WTF, the CSRF error handler."""
    from .views import _csrf_error
    from .views import _macros

    app.jinja_env.globals["commands_macros"] = _macros
    try:
        from flask_wtf.csrf import CSRFError  # type: ignore[import-untyped]
    except ImportError:
        return
    # An application's own CSRFError handler wins, whether registered before or after this.
    if CSRFError not in app.error_handler_spec[None][400]:
        app.register_error_handler(CSRFError, _csrf_error)


def _cache_htmx(response: Response) -> Response:
    """Let browsers keep the vendored htmx for a year: its URL changes with its version."""
    if request.endpoint == "commands.static" and (request.view_args or {}).get("filename") == HTMX_FILENAME:
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
