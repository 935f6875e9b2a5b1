"""``@command_view``: wire a form post, an HTMX post or a JSON post to a command's handler.

The view function carries what it was made from as ``view.command_spec`` (a :class:`CommandSpec`).
A submission goes through three steps: the HTTP body is parsed (:func:`_read_body`), the command
is built from it, and :func:`_idempotent.submit` runs the handler at most once per idempotency
key, with :class:`_Responder` turning its outcome into the response that is stored and replayed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing as t
import uuid

import flask
import wtforms
from jinja2 import TemplateNotFound
from jinja2_fragments.flask import render_block

from . import _idempotent
from . import htmx
from ._body import Body
from ._body import _accepts_json
from ._body import _BodyError
from ._body import _is_json_type
from ._body import _read_body
from ._templating import macros
from ._templating import render_args
from .command import Command
from .command import command_fields
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
_VALIDATE_ENVIRON = "HTTP_X_COMMANDS_VALIDATE"

# A form restored from history still holds a consumed id: never replay the old outcome for it.
_ALREADY_SUBMITTED = "This form was already submitted with other values. Check it and submit again."

#: The request header of live validation carrying ``render_field``'s signed render arguments.
RENDER_HEADER = "X-Commands-Render"

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


@dataclasses.dataclass(frozen=True, eq=False)
class CommandSpec(t.Generic[C, R]):
    """What :func:`command_view` was given, read-only: the ``command_spec`` of the view it made.

    ``view.command_spec`` is to a command view what ``view.view_class`` is to a view made by
    Flask's ``View.as_view``: tools (the OpenAPI document, error handlers) read it to tell what a
    view function serves. It survives ``functools.wraps``, which copies the function's attributes.
    """

    #: The command class the view builds.
    command: type[C]
    #: The ``@handler`` that runs it.
    handler: Handler[C, R]
    #: The decorated function: the success response of ``(result, cmd, **view_args)``.
    func: t.Callable[..., ResponseReturnValue]
    #: The template rendering ``form``, or ``None`` for a view serving JSON only.
    template: str | None
    #: The block of ``template`` that htmx requests get, or ``None`` for the whole template.
    block: str | None
    #: Called with the URL parameters, returns the command's trusted values; or ``None``.
    trusted: t.Callable[..., t.Mapping[str, t.Any]] | None
    #: The declared success responses, ``{status: JSON Schema or None}`` (empty when none were).
    responses: t.Mapping[int, t.Mapping[str, t.Any] | None]


def _render(
    spec: CommandSpec[t.Any, t.Any], form: wtforms.Form, status: int, view_args: dict[str, t.Any]
) -> flask.Response:
    """Render the template (or, for htmx, its block) with ``form``; retarget 4xx re-renders."""
    template = spec.template
    assert template is not None
    context = {**view_args, "form": form}
    try:
        if spec.block is not None and _wants_fragment():
            html = render_block(template, spec.block, **context)
        else:
            html = flask.render_template(template, **context)
    except TemplateNotFound as e:
        if e.name != template:
            raise
        raise _template_missing(template, spec.func) from None
    response = flask.make_response(html, status)
    if spec.block is not None:
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


class _Responder(_idempotent.HTTPAnswers[C, R]):
    """Turns one submission's outcomes into responses: success, invalid input, conflict, rejection.

    It is also the answers of a keyed submission (:func:`_idempotent.submit`), which adds what is
    stored and replayed.
    """

    def __init__(self, spec: CommandSpec[C, R], view_args: dict[str, t.Any], data: Body, json: bool) -> None:
        self.spec = spec
        self.view_args = view_args
        self.data = data
        #: Whether the caller gets problem+json rather than a re-rendered form.
        self.json = json

    def render(self, ran: _idempotent.Ran[C, R]) -> flask.Response:
        """The response of a run of the handler: its result, conflict or rejection."""
        refusal = ran.refusal
        if refusal is None:
            return _as_response(self.spec.func(ran.result, ran.command, **self.view_args))
        if isinstance(refusal, Conflict):
            return self.conflict(refusal)
        return self.rejected(refusal)

    def mismatch(self) -> flask.Response:
        """422 for a key reused with other values: the form again (a history-restored form), or a problem."""
        if self.json:
            detail = "This idempotency key was already used with another payload."
            return problem(422, detail=detail, code="idempotency_key_reused")
        return self.form_error(_ALREADY_SUBMITTED, code="idempotency_key_reused")

    def invalid(self, error: CommandInvalid) -> flask.Response:
        """422: the form re-rendered with its errors, or problem+json with ``errors``."""
        if self.json:
            detail = "The input is not valid; see errors."
            return problem(422, detail=detail, code="invalid", errors=error.errors)
        form = error.form if error.form is not None else self.bound_form()
        return _render(self.spec, form, 422, self.view_args)

    def conflict(self, error: Conflict) -> flask.Response:
        """409: the message flashed (category ``"conflict"``) on the re-rendered form, or problem+json."""
        if self.json:
            return _with_current(problem(409, detail=error.message, code=error.code), error.current)
        flask.flash(error.message, "conflict")
        return _render(self.spec, _conflict_form(self.bound_form(), error), 409, self.view_args)

    def rejected(self, error: Rejected) -> flask.Response:
        """422: the message as a form-level error on the re-rendered form, or problem+json."""
        return self.form_error(error.message, code=error.code)

    def form_error(self, message: str, *, code: str, status: int = 422) -> flask.Response:
        """Re-render the submitted form with the form-level error ``message``, or problem+json."""
        if self.json:
            return problem(status, detail=message, code=code)
        form = self.bound_form()
        form.form_errors.append(message)
        return _render(self.spec, form, status, self.view_args)

    def bound_form(self) -> wtforms.Form:
        """The form bound to the submitted input, with a fresh ``id`` (a resubmission is a new command)."""
        data = self.data
        command = self.spec.command
        if hasattr(data, "getlist"):
            form = command.Form(formdata=data)
        else:
            form = command.Form(formdata=normalise_json(data, command_fields(command))[0])
        form.id.data = str(new_id())
        return form


def _as_response(rv: ResponseReturnValue) -> flask.Response:
    """``rv`` made a response as ``flask.make_response`` makes it; a response of the app's class as it is."""
    # Typed, not t.cast: a cast is a function call on every request.
    app: flask.Flask = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    if isinstance(rv, app.response_class):
        return rv  # as app.make_response returns it, without its argument handling
    return app.make_response(rv)


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


def _validate_field(
    spec: CommandSpec[t.Any, t.Any], data: Body, name: str, json_caller: bool
) -> flask.Response:
    """Live validation: 200 with field ``name``'s fragment (or errors) and nothing handled.

    The errors are those a submission of ``data`` would give the field: from the compiled plan
    when it decides, else from the real form, with the same rules as ``Command.build``.
    """
    command = spec.command
    if name != "id" and name not in _form_field_names(command):
        known = ", ".join(repr(f.name) for f in command.Form())
        return problem(
            400,
            detail=f"{VALIDATE_HEADER} names {name!r}, which is not a field of {command.__name__};"
            f" use one of {known}.",
            code="unknown_field",
        )
    errors = _plan_errors(command, data)
    form: wtforms.Form | None = None
    if errors is None:
        form, errors = _form_errors(command, data)
    if json_caller:
        return flask.jsonify({"errors": {name: list(errors.get(name, ()))}})
    if form is None:
        form = command.Form(formdata=_formdata(command, data))
    field = form[name]
    field.errors = list(errors.get(name, ()))
    args = render_args(flask.request.headers.get(RENDER_HEADER))
    if isinstance(args.get("id"), str):
        field.id = field.label.field_id = args["id"]
    attrs = args.get("attrs")
    if not isinstance(attrs, dict):
        attrs = {}
    options = {key: args[key] for key in ("url", "trigger") if isinstance(args.get(key), str)}
    html = macros.render_field(field, **options, **{k: v for k, v in attrs.items() if k not in _OWN_ARGS})
    response = flask.make_response(str(html), 200)
    # The user may go on typing while this request is in flight: a morph (htmx 4 only) keeps the
    # focused input's value and caret, where outerHTML would drop what was typed meanwhile.
    return htmx.reswap(response, "outerMorph" if htmx.details().request_type else "outerHTML")


def _form_field_names(command: type[Command]) -> frozenset[str]:
    """The names of the command's form fields, but ``id``: its untrusted fields."""
    return frozenset(info.name for info in command_fields(command) if not info.trusted)


def _formdata(command: type[Command], data: Body) -> t.Any:
    """``data`` as the form takes it: a form post as it is, JSON normalised to text."""
    return data if hasattr(data, "getlist") else normalise_json(data, command_fields(command))[0]


def _plan_errors(command: type[Command], data: Body) -> dict[str, list[str]] | None:
    """Each field's errors from the compiled plan (``{}``: all valid), or ``None`` where it cannot tell."""
    # The plan Command.build compiled for the class; None when the class has none (fast_path=False,
    # or a form the plan does not model).
    plan = getattr(command, "_plan", None)
    if plan is None:
        return None
    if plan(data) is not None:
        return {}
    return t.cast("dict[str, list[str]] | None", plan.errors(data))


def _form_errors(command: type[Command], data: Body) -> tuple[wtforms.Form, dict[str, list[str]]]:
    """The real form bound to ``data``, validated, and each field's errors as ``Command.build`` words them.

    A JSON value of the wrong type gets its type error; a value that does not parse gets its type
    error alone, not also the checks after it.
    """
    if hasattr(data, "getlist"):
        formdata: t.Any = data
        type_errors: dict[str, list[str]] = {}
    else:
        formdata, type_errors = normalise_json(data, command_fields(command))
    form = command.Form(formdata=formdata)
    form.validate()
    errors = {}
    for bound in form:
        process_errors = list(bound.process_errors)
        if bound.name in type_errors:
            bound.errors = list(type_errors[bound.name])
        elif process_errors and bound.errors[: len(process_errors)] == process_errors:
            bound.errors = process_errors
        if bound.errors:
            errors[bound.name] = list(bound.errors)
    return form, errors


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

    The view function it returns carries its arguments as ``view.command_spec``, a read-only
    :class:`CommandSpec` (as ``View.as_view`` sets ``view.view_class``).
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
        spec: CommandSpec[C, R] = CommandSpec(command, handler, func, template, block, trusted, declared)

        @functools.wraps(func)
        def view(**view_args: t.Any) -> flask.Response:
            return _dispatch(spec, view_args)

        view.command_spec = spec  # type: ignore[attr-defined]
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


def _dispatch(spec: CommandSpec[C, R], view_args: dict[str, t.Any]) -> flask.Response:
    # The request object itself, not the proxy: every attribute read through the proxy costs.
    request: flask.Request = flask.request._get_current_object()  # type: ignore[attr-defined]
    method = request.method
    has_template = spec.template is not None
    if method in ("GET", "HEAD"):
        if not has_template:
            rule = request.url_rule
            allowed = ", ".join(sorted(SUBMIT_METHODS.intersection(rule.methods or () if rule else ())))
            return problem(
                405,
                detail=f"{request.path} takes JSON submissions ({allowed}); it renders no form.",
                code="method_not_allowed",
                headers={"Allow": allowed},
            )
        return _render(spec, spec.command.form(), 200, view_args)
    if method not in SUBMIT_METHODS:
        detail = f"The method {method!r} is not handled here."
        return problem(405, detail=detail, code="method_not_allowed")
    json_caller = not has_template or _is_json_type(request.mimetype) or _accepts_json()
    try:
        data = _read_body(request, json_caller, has_template)
    except _BodyError as e:
        return e.response
    # Headers straight from the WSGI environ, as request.headers.get would find them.
    environ = request.environ
    field = environ.get(_VALIDATE_ENVIRON)
    if field is not None:
        if spec.trusted is not None:
            spec.trusted(**view_args)  # it may refuse the caller (403, 404) before anything is validated
        return _validate_field(spec, data, field, json_caller)
    try:
        header_key = _idempotent.header_key(environ.get(_idempotent.IDEMPOTENCY_KEY_ENVIRON))
    except _idempotent.BadKey as e:
        return problem(400, detail=str(e), code="invalid_idempotency_key")
    # Every rendered form carries a fresh hidden id, so a client-supplied id deduplicates a
    # double submit even without the header.
    key = header_key if header_key is not None else _id_key(data.get("id"))
    if key is None:
        # No key (no header, no UUID id to key on): the common JSON post, run without the store.
        return _run_unkeyed(spec, view_args, data, json_caller)
    responder = _Responder(spec, view_args, data, json_caller)

    def build() -> C:
        values = spec.trusted(**view_args) if spec.trusted is not None else {}
        return spec.command.build(data, **values)

    fingerprint = _idempotent.request_fingerprint(data, view_args, request)
    try:
        return _idempotent.submit(spec.handler, build, key, fingerprint, responder)
    except CommandInvalid as e:
        return responder.invalid(e)


def _run_unkeyed(
    spec: CommandSpec[C, R], view_args: dict[str, t.Any], data: Body, json_caller: bool
) -> flask.Response:
    """Build and handle a command that has no idempotency key: nothing to claim or store, so
    neither ``_idempotent.submit`` nor its closures, ``Ran`` and responder are needed.
    """
    try:
        if spec.trusted is not None:
            cmd = spec.command.build(data, **spec.trusted(**view_args))
        else:
            cmd = spec.command.build(data)
        try:
            result = spec.handler(cmd)
        except Conflict as e:
            return _Responder(spec, view_args, data, json_caller).conflict(e)
        except Rejected as e:
            return _Responder(spec, view_args, data, json_caller).rejected(e)
        return _as_response(spec.func(result, cmd, **view_args))
    except CommandInvalid as e:
        return _Responder(spec, view_args, data, json_caller).invalid(e)


def _id_key(value: t.Any) -> str | None:
    """The key a client-supplied ``id`` gives: its canonical UUID text, or ``None`` when it is no UUID."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
