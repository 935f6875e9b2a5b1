"""The Jinja glue of ``commands/macros.html``: the ``commands_macros`` global and its helpers.

The macros ask this module for what they need from the request and the app (the CSRF token,
flashed messages not yet shown, the signed arguments of ``render_field``, the vendored htmx's URL).
:func:`render_args` verifies the signed arguments that live validation sends back.
"""

from __future__ import annotations

import typing as t

import flask
import wtforms
from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer

from . import htmx

#: The template holding the macros, served by the extension's blueprint.
MACROS_TEMPLATE = "commands/macros.html"

_RENDER_SALT = "flask-commands.render-field"
_G_FLASHES = "_commands_flashes_shown"


class Macros:
    """The Jinja global ``commands_macros``: the macros of ``commands/macros.html`` as attributes.

    A block rendered alone by jinja2-fragments does not see its template's imports; a global does.
    The underscored methods are what the macros need from the request and the app.
    """

    def __getattr__(self, name: str) -> t.Any:
        if name.startswith("__"):
            raise AttributeError(name)
        module = flask.current_app.jinja_env.get_template(MACROS_TEMPLATE).module
        return getattr(module, name)

    def __repr__(self) -> str:
        return f"<commands_macros from {MACROS_TEMPLATE!r}>"

    @staticmethod
    def _here() -> str:
        """The current request's path and query string: where a form posts back by default."""
        path = flask.request.full_path
        return path[:-1] if path.endswith("?") else path

    @staticmethod
    def _csrf() -> dict[str, str] | None:
        """The CSRF field name, header and token when Flask-WTF's ``CSRFProtect`` is active."""
        app = flask.current_app
        if "csrf" not in app.extensions or not app.config.get("WTF_CSRF_ENABLED", True):
            return None
        from flask_wtf.csrf import generate_csrf  # type: ignore[import-untyped]

        headers = app.config.get("WTF_CSRF_HEADERS") or ["X-CSRFToken"]
        return {
            "field": app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"),
            "header": headers[0],
            "token": generate_csrf(),
        }

    @staticmethod
    def _take_flashes(categories: t.Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Flashed messages (in ``categories``, if given) not yet shown by another macro call."""
        shown: set[int] = flask.g.setdefault(_G_FLASHES, set())
        wanted = None if categories is None else set(categories)
        taken = []
        for index, (category, message) in enumerate(flask.get_flashed_messages(with_categories=True)):
            if index in shown or (wanted is not None and category not in wanted):
                continue
            shown.add(index)
            taken.append((category, message))
        return taken

    @staticmethod
    def _sign_field(
        field: wtforms.Field, url: str | None, trigger: str, attrs: t.Mapping[str, t.Any]
    ) -> str | None:
        """``render_field``'s arguments, signed with the app's secret key, for live validation to send back.

        ``None`` without a secret key, or when an attribute is not a JSON value: the validation
        response then renders the field with the macro's defaults.
        """
        serializer = _render_serializer()
        if serializer is None:
            return None
        try:
            return serializer.dumps({"id": field.id, "url": url, "trigger": trigger, "attrs": dict(attrs)})
        except (TypeError, ValueError):
            return None

    @staticmethod
    def _htmx_url() -> str:
        """The versioned URL of the vendored htmx."""
        return flask.url_for("commands.static", filename=htmx.HTMX_FILENAME)

    @staticmethod
    def _htmx_integrity() -> str:
        """The SRI hash of the vendored htmx."""
        return htmx.htmx_integrity()


def _render_serializer() -> URLSafeSerializer | None:
    secret = flask.current_app.secret_key
    return URLSafeSerializer(secret, salt=_RENDER_SALT) if secret else None


def render_args(token: str | None) -> dict[str, t.Any]:
    """The render arguments signed by ``Macros._sign_field``; empty when missing or not signed by this app.

    Never trusted unsigned: attributes a client made up could inject markup or scripts.
    """
    serializer = _render_serializer()
    if not token or serializer is None:
        return {}
    try:
        args = serializer.loads(token)
    except BadSignature:
        return {}
    return args if isinstance(args, dict) else {}


#: The one ``commands_macros`` object; ``init_app`` makes it a Jinja global.
macros = Macros()
