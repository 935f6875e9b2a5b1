"""``@command_view``: wire a form post, an HTMX post or a JSON post to a command's handler.

A submission goes through three steps: the HTTP body is parsed (:func:`_read_body`), the command
is built from it, and :func:`_idempotent.submit` runs the handler at most once per idempotency
key, with :func:`_respond` turning its outcome into the response that is stored and replayed.
"""

from __future__ import annotations

import functools
import json
import re
import typing as t
import uuid
import weakref

import flask
import wtforms
from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer
from jinja2 import TemplateNotFound
from jinja2_fragments.flask import render_block

from . import _idempotent
from . import htmx
from ._body import Body
from ._body import _accepts_json
from ._body import _BodyError
from ._body import _is_json_type
from ._body import _read_body
from .command import Command
from .command import new_id
from .errors import CommandInvalid
from .errors import Conflict
from .errors import Rejected
from .forms import normalise_json
from .handler import Handler
from .problem import problem

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

C = t.TypeVar("C", bound=Command)
R = t.TypeVar("R")

#: Request methods handled as submissions; GET (and HEAD) render the form.
SUBMIT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: The request header of live validation: the name of the field to validate.
VALIDATE_HEADER = "X-Commands-Validate"

# A form restored from history still holds a consumed id: never replay the old outcome for it.
_ALREADY_SUBMITTED = "This form was already submitted with other values. Check it and submit again."

#: The request header of live validation carrying ``render_field``'s signed render arguments.
RENDER_HEADER = "X-Commands-Render"
_RENDER_SALT = "flask-commands.render-field"

#: The template holding the macros, served by the extension's blueprint.
MACROS_TEMPLATE = "commands/macros.html"

_G_FLASHES = "_commands_flashes_shown"
# render_field's own parameters: never taken from the signed attributes.
_OWN_ARGS = frozenset({"field", "live", "url", "trigger"})
_PLAIN_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _wants_fragment() -> bool:
    """Whether this htmx request swaps a part of the page (not the body, not a history restore)."""
    details = htmx.details()
    return (
        bool(details)
        and not details.boosted
        and not details.history_restore_request
        and details.request_type != "full"
    )


def _target_selector() -> str:
    """The CSS selector of the element this htmx request targets, for ``HX-Retarget``."""
    details = htmx.details()
    target = details.target
    if not target or target == "null":
        return "this"
    if details.request_type is not None:  # htmx 4: "tag#id", and HX-Source names the source
        if target == details.source:
            return "this"
        ident = target.partition("#")[2]
    else:  # htmx 2: the target's id, and HX-Trigger the source's id
        if target == details.trigger:
            return "this"
        ident = target
    if not ident:
        return "this"
    if _PLAIN_ID.fullmatch(ident):
        return "#" + ident
    return '[id="' + ident.replace("\\", "\\\\").replace('"', '\\"') + '"]'


class _Macros:
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


def _render_args(token: str | None) -> dict[str, t.Any]:
    """The render arguments signed by ``_sign_field``; empty when missing or not signed by this app.

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
_macros = _Macros()

#: The success responses each view declared (``command_view(responses=)``), for the OpenAPI document.
_declared: weakref.WeakKeyDictionary[t.Callable[..., t.Any], dict[int, t.Mapping[str, t.Any] | None]] = (
    weakref.WeakKeyDictionary()
)

#: What each view function made by ``command_view`` serves, for the CSRF error handler.
_views: weakref.WeakKeyDictionary[t.Callable[..., t.Any], _View[t.Any, t.Any]] = weakref.WeakKeyDictionary()


class _View(t.Generic[C, R]):
    """What ``command_view`` was given: the command, its handler and how to render."""

    def __init__(
        self,
        command: type[C],
        handler: Handler[C, R],
        func: t.Callable[..., ResponseReturnValue],
        template: str | None,
        block: str | None,
        trusted: t.Callable[..., t.Mapping[str, t.Any]] | None,
    ) -> None:
        self.command = command
        self.handler = handler
        self.func = func
        self.template = template
        self.block = block
        self.trusted = trusted

    def render(self, form: wtforms.Form, status: int, view_args: dict[str, t.Any]) -> flask.Response:
        """Render the template (or, for htmx, its block) with ``form``; retarget 4xx re-renders."""
        assert self.template is not None
        context = {**view_args, "form": form}
        try:
            if self.block is not None and _wants_fragment():
                html = render_block(self.template, self.block, **context)
            else:
                html = flask.render_template(self.template, **context)
        except TemplateNotFound as e:
            if e.name != self.template:
                raise
            raise _template_missing(self.template, self.func) from None
        response = flask.make_response(html, status)
        if self.block is not None:
            response.vary.add(htmx.HX_REQUEST)
        if status >= 400 and htmx.details():
            # Pinned so that a re-rendered form replaces the element the request targeted, whatever
            # the htmx version's defaults (htmx 2 swaps 4xx only with the documented config).
            htmx.retarget(htmx.reswap(response, "outerHTML"), _target_selector())
        return response


def _template_missing(name: str, func: t.Callable[..., t.Any]) -> TemplateNotFound:
    """``TemplateNotFound`` for a command view's template, saying where Flask looked and the fix."""
    app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    places: list[str] = []
    for owner, loader in app.jinja_env.loader._iter_loaders(name):
        paths = getattr(loader, "searchpath", None)
        what = "the app" if owner is app else f"blueprint {owner.name!r}"
        if paths:
            places.extend(f"{path} ({what})" for path in paths)
        else:
            places.append(f"{loader!r} ({what})")
    looked = "; ".join(places) if places else "nowhere: the app has no template folder"
    return TemplateNotFound(
        name,
        message=f"The command view {func.__qualname__!r} renders the template {name!r}, which Flask"
        f" cannot find. It looked in: {looked}. Create {name!r} in one of these folders, or pass"
        " command_view(..., template=) the name of an existing template.",
    )


class _Responder(t.Generic[C, R]):
    """Turns one submission's outcomes into responses: success, invalid input, conflict, rejection."""

    def __init__(self, view: _View[C, R], view_args: dict[str, t.Any], data: Body, json: bool) -> None:
        self.view = view
        self.view_args = view_args
        self.data = data
        #: Whether the caller gets problem+json rather than a re-rendered form.
        self.json = json

    def success(self, result: R, cmd: C) -> flask.Response:
        """The decorated function's return value for ``(result, cmd)``, made a response."""
        return flask.make_response(self.view.func(result, cmd, **self.view_args))

    def invalid(self, error: CommandInvalid) -> flask.Response:
        """422: the form re-rendered with its errors, or problem+json with ``errors``."""
        if self.json:
            detail = "The input is not valid; see errors."
            return problem(422, detail=detail, code="invalid", errors=error.errors)
        form = error.form if error.form is not None else self.bound_form()
        return self.view.render(form, 422, self.view_args)

    def conflict(self, error: Conflict) -> flask.Response:
        """409: the message flashed (category ``"conflict"``) on the re-rendered form, or problem+json."""
        if self.json:
            return _with_current(problem(409, detail=error.message, code=error.code), error.current)
        flask.flash(error.message, "conflict")
        return self.view.render(_conflict_form(self.bound_form(), error), 409, self.view_args)

    def rejected(self, error: Rejected) -> flask.Response:
        """422: the message as a form-level error on the re-rendered form, or problem+json."""
        return self.form_error(error.message, code=error.code)

    def form_error(self, message: str, *, code: str, status: int = 422) -> flask.Response:
        """Re-render the submitted form with the form-level error ``message``, or problem+json."""
        if self.json:
            return problem(status, detail=message, code=code)
        form = self.bound_form()
        form.form_errors.append(message)
        return self.view.render(form, status, self.view_args)

    def bound_form(self) -> wtforms.Form:
        """The form bound to the submitted input, with a fresh ``id`` (a resubmission is a new command)."""
        data = self.data
        if hasattr(data, "getlist"):
            form = self.view.command.Form(formdata=data)
        else:
            form = self.view.command.Form(formdata=normalise_json(data, self.view.command._fields)[0])
        form.id.data = str(new_id())
        return form


def _conflict_form(form: wtforms.Form, error: Conflict) -> wtforms.Form:
    """``form`` with ``commands_conflict`` set for the macros, its hidden fields at the current values.

    Only for a conflict carrying the current state; the form is left as it is otherwise.

    The visible fields keep what the user typed; a hidden one (a ``version``) takes the current
    value, so that submitting the form again saves the user's text over the change.
    """
    if error.current is None:
        return form
    form.commands_conflict = error
    for name, value in (error.current or {}).items():
        if name in form and name != "id" and form[name].flags.hidden:
            form[name].data, form[name].raw_data = value, None  # rendered from data, not the input
    return form


def _with_current(response: flask.Response, current: t.Mapping[str, t.Any] | None) -> flask.Response:
    """The problem response with the conflict's ``current`` state as a member, when it has one."""
    if current is None:
        return response
    body = response.get_json()
    try:
        body["current"] = json.loads(json.dumps(current, default=str))
    except (TypeError, ValueError):
        return response
    response.set_data(json.dumps(body))
    return response


def _respond(ran: _idempotent.Ran[C, R], responder: _Responder[C, R]) -> flask.Response:
    """Turn a run of the handler (its result, conflict or rejection) into a response."""
    if isinstance(ran.refusal, Conflict):
        return responder.conflict(ran.refusal)
    if isinstance(ran.refusal, Rejected):
        return responder.rejected(ran.refusal)
    return responder.success(t.cast(R, ran.result), ran.command)


def _mismatch(responder: _Responder[t.Any, t.Any]) -> flask.Response:
    """422 for a key reused with other values: the form again (a history-restored form), or a problem."""
    if responder.json:
        detail = "This idempotency key was already used with another payload."
        return problem(422, detail=detail, code="idempotency_key_reused")
    return responder.form_error(_ALREADY_SUBMITTED, code="idempotency_key_reused")


def _validate_field(view: _View[t.Any, t.Any], data: Body, name: str, json_caller: bool) -> flask.Response:
    """Live validation: 200 with field ``name``'s fragment (or errors) and nothing handled."""
    command = view.command
    if hasattr(data, "getlist"):
        formdata: t.Any = data
        type_errors: dict[str, list[str]] = {}
    else:
        formdata, type_errors = normalise_json(data, command._fields)
    form = command.Form(formdata=formdata)
    if name not in form:
        known = ", ".join(repr(f.name) for f in form)
        return problem(
            400,
            detail=f"{VALIDATE_HEADER} names {name!r}, which is not a field of {command.__name__};"
            f" use one of {known}.",
            code="unknown_field",
        )
    form.validate()
    field = form[name]
    if name in type_errors:
        field.errors = list(type_errors[name])
    if json_caller:
        return flask.jsonify({"errors": {name: list(field.errors)}})
    args = _render_args(flask.request.headers.get(RENDER_HEADER))
    if isinstance(args.get("id"), str):
        field.id = field.label.field_id = args["id"]
    attrs = args.get("attrs")
    if not isinstance(attrs, dict):
        attrs = {}
    options = {key: args[key] for key in ("url", "trigger") if isinstance(args.get(key), str)}
    html = _macros.render_field(field, **options, **{k: v for k, v in attrs.items() if k not in _OWN_ARGS})
    response = flask.make_response(str(html), 200)
    # The user may go on typing while this request is in flight: a morph (htmx 4 only) keeps the
    # focused input's value and caret, where outerHTML would drop what was typed meanwhile.
    return htmx.reswap(response, "outerMorph" if htmx.details().request_type else "outerHTML")


def command_view(
    command: type[C],
    handler: Handler[C, R],
    *,
    template: str | None = None,
    block: str | None = None,
    trusted: t.Callable[..., t.Mapping[str, t.Any]] | None = None,
    responses: t.Mapping[int, t.Mapping[str, t.Any] | None] | None = None,
) -> t.Callable[[t.Callable[t.Concatenate[R, C, ...], ResponseReturnValue]], t.Callable[..., flask.Response]]:
    """Make the decorated function the success response of a view that builds and handles ``command``.

    GET renders ``template`` with a fresh ``form``; POST, PUT, PATCH and DELETE build the command
    from the form post or JSON body, run ``handler``, and call the decorated function with
    ``(result, cmd, **view_args)``. Invalid input (422), a ``Conflict`` (409) and a ``Rejected``
    (422) re-render the form, or give JSON callers ``application/problem+json``.

    :param command: the command class to build.
    :param handler: the ``@handler`` that runs it.
    :param template: the template rendering ``form``; without one the view serves JSON only.
    :param block: the block of ``template`` that htmx requests get instead of the whole page.
    :param trusted: called with the URL parameters, returns the command's trusted values.
    :param responses: the success responses, for the OpenAPI document: ``{status: schema}``, the
        JSON Schema of the ``application/json`` body, or ``None`` for no body (``{204: None}``).
    :raises TypeError: when ``command``, ``handler`` or ``responses`` is not what they should be.
    """
    if not (isinstance(command, type) and issubclass(command, Command)):
        raise TypeError(f"command_view() takes a Command subclass, not {command!r}.")
    if not isinstance(handler, Handler):
        raise TypeError(
            f"command_view() takes a handler declared with @handler, not {handler!r};"
            f" decorate it with @handler({command.__name__})."
        )
    if not issubclass(command, handler.command):
        raise TypeError(
            f"handler {handler.__name__!r} takes {handler.command.__name__}, not {command.__name__};"
            " pass the handler of the command."
        )
    if block is not None and template is None:
        raise TypeError(f"command_view() got block={block!r} without a template; pass template= too.")
    declared = _check_responses(responses)

    def decorate(
        func: t.Callable[t.Concatenate[R, C, ...], ResponseReturnValue],
    ) -> t.Callable[..., flask.Response]:
        spec: _View[C, R] = _View(command, handler, func, template, block, trusted)

        @functools.wraps(func)
        def view(**view_args: t.Any) -> flask.Response:
            return _dispatch(spec, view_args)

        _views[view] = spec
        if declared:
            _declared[view] = declared
        return view

    return decorate


def _check_responses(
    responses: t.Mapping[int, t.Mapping[str, t.Any] | None] | None,
) -> dict[int, t.Mapping[str, t.Any] | None]:
    """``command_view``'s ``responses``, checked: success statuses, each with a JSON Schema or ``None``."""
    if responses is None:
        return {}
    if not isinstance(responses, t.Mapping):
        raise TypeError(f"command_view(responses=) takes a dict {{status: schema}}, not {responses!r}.")
    for status, schema in responses.items():
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 399:
            raise TypeError(
                f"command_view(responses=) got the status {status!r}; use a success status from 200 to 399"
                " (errors are documented by Flask-Commands)."
            )
        if schema is not None and not isinstance(schema, t.Mapping):
            raise TypeError(
                f"command_view(responses=) got {schema!r} for {status}; give the JSON Schema of the body"
                " as a dict, or None for a response without a body."
            )
    return dict(responses)


def _dispatch(view: _View[C, R], view_args: dict[str, t.Any]) -> flask.Response:
    request = flask.request
    has_template = view.template is not None
    if request.method in ("GET", "HEAD"):
        if not has_template:
            rule = request.url_rule
            allowed = ", ".join(sorted(SUBMIT_METHODS.intersection(rule.methods or () if rule else ())))
            return problem(
                405,
                detail=f"{request.path} takes JSON submissions ({allowed}); it renders no form.",
                code="method_not_allowed",
                headers={"Allow": allowed},
            )
        return view.render(view.command.form(), 200, view_args)
    json_caller = not has_template or _is_json_type(request.mimetype) or _accepts_json()
    if request.method not in SUBMIT_METHODS:
        detail = f"The method {request.method!r} is not handled here."
        return problem(405, detail=detail, code="method_not_allowed")
    try:
        data = _read_body(json_caller, has_template)
    except _BodyError as e:
        return e.response
    field = request.headers.get(VALIDATE_HEADER)
    if field is not None:
        if view.trusted is not None:
            view.trusted(**view_args)  # it may refuse the caller (403, 404) before anything is validated
        return _validate_field(view, data, field, json_caller)
    try:
        header_key = _idempotent.header_key()
    except _idempotent.BadKey as e:
        return problem(400, detail=str(e), code="invalid_idempotency_key")
    responder = _Responder(view, view_args, data, json_caller)

    def build() -> C:
        values = view.trusted(**view_args) if view.trusted is not None else {}
        return view.command.build(data, **values)

    # Every rendered form carries a fresh hidden id, so a client-supplied id deduplicates a
    # double submit even without the header.
    key = header_key if header_key is not None else _id_key(data.get("id"))
    try:
        return _idempotent.submit(
            view.handler,
            build,
            key,
            fingerprint=lambda: _idempotent.request_fingerprint(data, view_args),
            respond=lambda ran: _respond(ran, responder),
            mismatch=lambda: _mismatch(responder),
            wait=not json_caller,
        )
    except CommandInvalid as e:
        return responder.invalid(e)


def _id_key(value: t.Any) -> str | None:
    """The key a client-supplied ``id`` gives: its canonical UUID text, or ``None`` when it is no UUID."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None

