"""``Commands``: the Flask extension object that wires commands into an application."""

from __future__ import annotations

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import request

from .cli import commands_cli
from .htmx import HTMX_FILENAME
from .state import DEFAULTS as DEFAULTS
from .state import app_state
from .state import init_state


class Commands:
    """The Flask-Commands extension: ``Commands(app)``, or ``Commands()`` then ``init_app(app)``.

    Registers the ``commands`` blueprint (form macros and the vendored htmx), the Jinja global
    ``commands_macros``, and the ``flask commands`` CLI group. Several apps may share one instance;
    per-app settings and the store live in :mod:`flask_commands.state` (``app_state(app)``).
    """

    def __init__(self, app: Flask | None = None) -> None:
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

        No teardown function is registered: nothing the package holds outlives a call (a store's
        connection) or belongs to anything but the app's own session and ``flask.g``.

        :raises RuntimeError: when the app already has a ``Commands`` registered.
        :raises TypeError: ``COMMANDS_IDEMPOTENCY_STORE`` is a store lacking a method of ``Store``.
        """
        if "commands" in app.extensions:
            raise RuntimeError(
                "A 'Commands' instance has already been registered on this Flask app. Import and use"
                " that instance instead."
            )
        init_state(app)
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
        """Create the idempotency table of ``app``'s SQLAlchemy store (the current app by default)
        and the outbox table ``commands_outbox`` in each of its Flask-SQLAlchemy databases.

        Does nothing for a memory store. Alembic users can instead include the store's ``table``
        and ``flask_commands.outbox.table``.
        """
        from .outbox import create_tables as create_outbox_tables

        store = app_state(app).store
        if hasattr(store, "create_table"):
            store.create_table()
        create_outbox_tables(app if app is not None else current_app._get_current_object())  # type: ignore[attr-defined]


def _init_views(app: Flask) -> None:
    """Add the ``commands_macros`` Jinja global and the package's error handlers (database, CSRF)."""
    from ._error_handlers import _csrf_error
    from ._error_handlers import _register_unavailable
    from ._templating import macros

    app.jinja_env.globals["commands_macros"] = macros
    _register_unavailable(app)
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
