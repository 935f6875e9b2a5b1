"""The error handlers ``init_app`` registers: CSRF failures, and a database that cannot be reached.

Each is registered only when its library is installed and the app has no handler of its own for
the same error, so an application's own pages and problem documents always win.

The database handler covers every view of the app, not only command views: a page that only
reads (a list, a board) fails the same way during an outage, and its callers deserve the same
503 with ``Retry-After`` rather than a bare 500.
"""

from __future__ import annotations

import logging
import typing as t

import flask
from markupsafe import Markup
from markupsafe import escape
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import ServiceUnavailable

from . import htmx
from ._body import Body
from ._body import _accepts_json
from ._body import _is_json_type
from .idempotency.store import StoreUnavailable
from .problem import problem
from .views import VALIDATE_HEADER
from .views import CommandSpec
from .views import _Responder

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.typing import ResponseReturnValue

#: Seconds a client is told to wait before retrying when the database cannot be reached.
_RETRY_AFTER = 5

# SQLite reports SQL errors ("no such table", a syntax error) as OperationalError too, with the
# result code SQLITE_ERROR: those are programming errors, and stay a 500.
_SQLITE_ERROR = 1
# MySQL drivers make every server error they do not map an OperationalError ("unknown column"
# among them). Only these say the server is unavailable or the statement may succeed if retried:
# too many connections, shutdown, lock wait timeout, interrupted, read-only (a failover), killed,
# deadlock, max_statement_time (MariaDB) and max_execution_time (MySQL) exceeded. Client errors
# (2000-2999: cannot connect, server gone, lost connection) always do.
_MYSQL_UNAVAILABLE = frozenset({1040, 1053, 1205, 1213, 1290, 1317, 1836, 1927, 1969, 3024})

_log = logging.getLogger("flask_commands")


def _csrf_error(error: BadRequest) -> ResponseReturnValue:
    """Flask-WTF's ``CSRFError``: problem+json for JSON callers, the form with the error for htmx.

    An htmx post to a command view gets its form re-rendered (400) with the reason as a form-level
    error and a new token, so that submitting again works; other htmx posts get an error fragment
    at the top of the posting form. Plain posts get the app's own 400 page: they may come from
    another site, which must not get a form filled in with its values.
    """
    request = flask.request
    detail = str(error.description)
    if _is_json_type(request.mimetype) or _accepts_json():
        return problem(400, detail=detail, code="csrf_failed")
    if not htmx.details():
        fallback = flask.current_app._find_error_handler(BadRequest(), request.blueprints)
        if fallback is not None:
            return t.cast("ResponseReturnValue", fallback(error))
        return error
    html = Markup(
        '<div class="commands-errors commands-csrf-error" role="alert"><p>{} Reload the page and try'
        " again.</p></div>"
    ).format(escape(detail))
    if VALIDATE_HEADER in request.headers:
        # Live validation is no submission: leave the field as typed; submitting shows the error.
        return htmx.reswap(flask.make_response(str(html), 400), "none")
    spec = _spec_of_request()
    if spec is not None and spec.template is not None:
        try:
            data: Body = request.form
        except HTTPException:
            data = MultiDict()
        responder: _Responder[t.Any, t.Any] = _Responder(spec, request.view_args or {}, data, json=False)
        return responder.form_error(f"{detail} Submit the form again.", code="csrf_failed", status=400)
    # Into the form that was posted, at its top, without replacing what the user typed.
    return htmx.retarget(htmx.reswap(flask.make_response(str(html), 400), "afterbegin"), "closest form")


def _spec_of_request() -> CommandSpec[t.Any, t.Any] | None:
    """The ``command_spec`` of the view serving this request, or ``None`` when it is no command view."""
    spec = getattr(flask.current_app.view_functions.get(flask.request.endpoint or ""), "command_spec", None)
    return spec if isinstance(spec, CommandSpec) else None


def _unavailable_errors() -> tuple[type[Exception], ...]:
    """The errors meaning the database cannot be reached: SQLAlchemy's when installed, and the store's."""
    try:
        import sqlalchemy.exc
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency of the dev extras
        return (StoreUnavailable,)
    return (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.TimeoutError,
        StoreUnavailable,
    )


def _register_unavailable(app: Flask) -> None:
    """Answer a lost, refused or hung database connection with 503, unless the app handles it itself.

    An app's own handler for the same error class, or for a more general database error class
    (SQLAlchemy's ``DBAPIError`` or ``SQLAlchemyError``), wins; one for ``Exception`` does not.
    """
    own = [cls for cls in app.error_handler_spec[None][None] if cls not in (Exception, BaseException)]
    for error in _unavailable_errors():
        if not any(issubclass(error, cls) for cls in own):
            app.register_error_handler(error, _database_unavailable)


def _is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached (not that the SQL was wrong)."""
    original = getattr(error, "orig", None)
    if getattr(error, "connection_invalidated", False) or original is None:
        return True
    module = type(original).__module__
    if module == "sqlite3":
        code = getattr(original, "sqlite_errorcode", None)
        return code is None or code & 0xFF != _SQLITE_ERROR
    args = getattr(original, "args", ())
    if module.startswith(("pymysql", "MySQLdb", "mysql")) and args and isinstance(args[0], int):
        import sqlalchemy.exc

        errno = args[0]
        if isinstance(error, sqlalchemy.exc.OperationalError):
            return 2000 <= errno < 3000 or errno in _MYSQL_UNAVAILABLE
    return True


def _database_unavailable(error: Exception) -> ResponseReturnValue:
    """503 with ``Retry-After``: problem+json for JSON callers, the app's own 503 page for others.

    An error that is the SQL's fault (see :func:`_is_unavailable`) is re-raised, for Flask's usual 500.
    """
    if not _is_unavailable(error):
        raise error
    # One line per request: a traceback per request would bury the log during an outage.
    _log.warning("The database cannot be reached; answered 503: %s", _first_line(error))
    retry_after = str(_RETRY_AFTER)
    store = isinstance(error, StoreUnavailable)
    detail = (
        "The service cannot record this request right now; retry shortly."
        if store
        else "The database cannot be reached right now; retry shortly."
    )
    request = flask.request
    spec = _spec_of_request()
    if (spec is not None and spec.template is None) or _is_json_type(request.mimetype) or _accepts_json():
        code = "store_unavailable" if store else "database_unavailable"
        return problem(503, detail=detail, code=code, headers={"Retry-After": retry_after})
    unavailable = ServiceUnavailable(detail, retry_after=_RETRY_AFTER)
    fallback = flask.current_app._find_error_handler(unavailable, request.blueprints)
    if fallback is None:
        return unavailable
    response = flask.make_response(fallback(unavailable))
    response.headers.setdefault("Retry-After", retry_after)
    return response


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.partition("\n")[0] or type(error).__name__
