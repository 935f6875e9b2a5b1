"""The error handlers ``init_app`` registers: CSRF failures, and a database that cannot be reached.

Each is registered only when its library is installed and the app has no handler of its own for
the same error, so an application's own pages and problem documents always win.
"""

from __future__ import annotations

import typing as t

import flask
from markupsafe import Markup
from markupsafe import escape
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import HTTPException

from . import htmx
from ._body import Body
from ._body import _accepts_json
from ._body import _is_json_type
from .problem import problem
from .views import VALIDATE_HEADER
from .views import _Responder
from .views import _views

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue


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
    view = _views.get(flask.current_app.view_functions.get(request.endpoint or ""))  # type: ignore[arg-type]
    if view is not None and view.template is not None:
        try:
            data: Body = request.form
        except HTTPException:
            data = MultiDict()
        responder: _Responder[t.Any, t.Any] = _Responder(view, request.view_args or {}, data, json=False)
        return responder.form_error(f"{detail} Submit the form again.", code="csrf_failed", status=400)
    # Into the form that was posted, at its top, without replacing what the user typed.
    return htmx.retarget(htmx.reswap(flask.make_response(str(html), 400), "afterbegin"), "closest form")
