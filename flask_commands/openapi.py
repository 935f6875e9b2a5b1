"""The OpenAPI 3.1 document of an application's command views, printed by ``flask commands openapi``.

Each URL rule whose view was made by :func:`~flask_commands.command_view` becomes a path; each of
its submission methods (POST, PUT, PATCH, DELETE) an operation whose request body is the
command's :meth:`~flask_commands.Command.json_schema` (OpenAPI 3.1 speaks JSON Schema 2020-12, so
it is used as it is). A view's GET (its HTML form) is left out. Each operation lists the bodies
the view really takes: JSON for a view without a template; form posts (with the CSRF token) for a
view with one behind Flask-WTF's ``CSRFProtect``, which refuses JSON without the token; both for a
view with a template and no CSRF check. The success response is what the view declared with
``command_view(..., responses={201: schema})``, else any body; every error the view itself
answers is documented as ``application/problem+json`` with the shared ``Problem`` schema.
Summaries are plain text: docstring markup (````code````, ``:func:`name```) is removed.
"""

from __future__ import annotations

import re
import typing as t

from flask import Flask
from werkzeug.routing import AnyConverter
from werkzeug.routing import IntegerConverter
from werkzeug.routing import Rule
from werkzeug.routing import UUIDConverter

from ._idempotent import IDEMPOTENCY_KEY
from ._idempotent import IDEMPOTENT_REPLAYED
from .command import Command
from .command import type_name
from .problem import PROBLEM_JSON
from .views import SUBMIT_METHODS
from .views import CommandSpec

#: The OpenAPI version of the document.
_OPENAPI = "3.1.0"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_VARIABLE = re.compile(r"<([^>]+)>")
_COMPONENT_NAME = re.compile(r"[^A-Za-z0-9._-]")
# Submission methods in the order operations are listed in a path item.
_METHODS = ("post", "put", "patch", "delete")

_PROBLEM_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "description": "Problem details (RFC 9457).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "format": "uri-reference",
            "description": 'A URI naming the kind of problem; "about:blank" when the status says it all.',
        },
        "title": {"type": "string", "description": "The summary of the problem's kind."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status."},
        "detail": {"type": "string", "description": "What went wrong with this request, for people."},
        "code": {"type": "string", "description": "A stable code for programs, such as duplicate_title."},
        "errors": {
            "type": "object",
            "description": "Field errors: each field's messages.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}

# An sf-string (RFC 8941) as the IETF draft asks, or a bare token as Stripe's clients send.
_KEY_PATTERN = r'^(?:"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])+"|[\x21\x23-\x7e]+)$'

_IDEMPOTENCY_KEY_PARAMETER: dict[str, t.Any] = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": (
        "Runs the command at most once per key (at most 255 characters): a retry with the same key"
        " and body gets the first response replayed, with Idempotent-Replayed: true. Without it, an"
        " id in the body is the key."
    ),
    "schema": {"type": "string", "pattern": _KEY_PATTERN},
}

_HEADERS: dict[str, t.Any] = {
    "IdempotentReplayed": {
        "description": "Present on a response replayed for a repeated Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
}

_REPLAYED = {IDEMPOTENT_REPLAYED: {"$ref": "#/components/headers/IdempotentReplayed"}}
_RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}

# (component name, status, description, headers) of each problem a command view answers itself.
_PROBLEMS: tuple[tuple[str, int, str, dict[str, t.Any]], ...] = (
    (
        "BadRequest",
        400,
        "The body is not JSON (malformed_json) or not a JSON object (not_an_object), or the"
        " Idempotency-Key header is malformed (invalid_idempotency_key).",
        {},
    ),
    (
        "Conflict",
        409,
        "The handler raised Conflict (its code), a request with this Idempotency-Key is still being"
        " handled (in_progress, with Retry-After), or it was handled but its response was not kept"
        " (already_handled).",
        {**_REPLAYED, **_RETRY_AFTER},
    ),
    (
        "ContentTooLarge",
        413,
        "The body is larger than the application's MAX_CONTENT_LENGTH (content_too_large).",
        {},
    ),
    (
        "UnsupportedMediaType",
        415,
        "The body is not application/json (unsupported_media_type).",
        {},
    ),
    (
        "UnprocessableContent",
        422,
        "The input is not valid (invalid, with errors per field), the handler raised Rejected (its"
        " code), or the Idempotency-Key was used with another body (idempotency_key_reused).",
        _REPLAYED,
    ),
    (
        "ServiceUnavailable",
        503,
        "The idempotency store cannot be reached (store_unavailable); retry after Retry-After seconds.",
        _RETRY_AFTER,
    ),
)


def _document(app: Flask, *, title: str | None = None, version: str = "1.0.0") -> dict[str, t.Any]:
    """Return the OpenAPI 3.1 document of ``app``'s command views, as JSON values.

    :param title: the API's title, the app's name by default.
    :param version: the API's version (OpenAPI's ``info.version``).
    """
    routes = [
        (rule, spec)
        for rule in app.url_map.iter_rules()
        if (spec := _spec_of(app.view_functions.get(rule.endpoint))) is not None
    ]
    names = _schema_names(spec.command for _, spec in routes)
    paths: dict[str, dict[str, t.Any]] = {}
    operation_ids: set[str] = set()
    for rule, spec in routes:
        path, parameters = _path(rule)
        item = paths.setdefault(path, {})
        methods = [m for m in _METHODS if m.upper() in (rule.methods or ()) and m.upper() in SUBMIT_METHODS]
        for method in methods:
            if method in item:
                continue  # an earlier rule for the same path and method wins, as in routing
            operation_id = _operation_id(rule.endpoint, method, len(methods) > 1, operation_ids)
            view = app.view_functions[rule.endpoint]
            operation = _operation(spec, operation_id, names[spec.command], parameters, rule.endpoint)
            operation["requestBody"] = _request_body(spec, names[spec.command], _csrf_field(app, view, rule))
            declared = spec.responses
            if declared:
                operation["responses"] = _declared_responses(spec, declared, operation["responses"])
            item[method] = operation
    return {
        "openapi": _OPENAPI,
        "jsonSchemaDialect": _DIALECT,
        "info": {"title": title if title is not None else app.name, "version": version},
        "paths": {path: _ordered(item) for path, item in sorted(paths.items()) if item},
        "components": {
            "schemas": {
                "Problem": _PROBLEM_SCHEMA,
                **{name: _schema(cls) for cls, name in sorted(names.items(), key=lambda kv: kv[1])},
            },
            "parameters": {"IdempotencyKey": _IDEMPOTENCY_KEY_PARAMETER},
            "headers": _HEADERS,
            "responses": {
                name: {
                    "description": description,
                    **({"headers": headers} if headers else {}),
                    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
                for name, _, description, headers in _PROBLEMS
            },
        },
    }


def _csrf_field(app: Flask, view: t.Callable[..., t.Any], rule: Rule) -> str | None:
    """The CSRF token's field name when Flask-WTF's ``CSRFProtect`` checks ``view``'s posts, else ``None``."""
    csrf = app.extensions.get("csrf")
    config = app.config
    if (
        csrf is None
        or not config.get("WTF_CSRF_ENABLED", True)
        or not config.get("WTF_CSRF_CHECK_DEFAULT", True)
    ):
        return None
    if f"{view.__module__}.{view.__name__}" in getattr(csrf, "_exempt_views", ()):
        return None
    blueprint = app.blueprints.get(rule.endpoint.rpartition(".")[0])
    if blueprint is not None and blueprint in getattr(csrf, "_exempt_blueprints", ()):
        return None
    return str(config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _request_body(
    spec: CommandSpec[t.Any, t.Any], schema_name: str, csrf_field: str | None
) -> dict[str, t.Any]:
    """What the view really takes: JSON, form posts (with the CSRF token when checked), or both."""
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    if spec.template is None:
        return {
            "description": "The command's input; an empty body is an empty object.",
            "required": False,
            "content": {"application/json": {"schema": ref}},
        }
    if csrf_field is not None:
        form_schema = {
            "allOf": [ref],
            "type": "object",
            "properties": {
                csrf_field: {
                    "type": "string",
                    "description": "Flask-WTF's CSRF token, from a form rendered in the same session.",
                }
            },
            "required": [csrf_field],
        }
        return {
            "description": "The command's input as a form post, with the CSRF token of a form the"
            " application rendered in this session; JSON is refused (400, csrf_failed).",
            "required": True,
            "content": {media: {"schema": form_schema} for media in _FORM_TYPES},
        }
    return {
        # A view with a template takes a request without a JSON content type as a form post.
        "description": "The command's input, as application/json or a form post.",
        "required": True,
        "content": {"application/json": {"schema": ref}, **{media: {"schema": ref} for media in _FORM_TYPES}},
    }


def _declared_responses(
    spec: CommandSpec[t.Any, t.Any],
    declared: t.Mapping[int, t.Mapping[str, t.Any] | None],
    responses: dict[str, t.Any],
) -> dict[str, t.Any]:
    """``responses`` with the declared success responses in place of the generic ``2XX``."""
    responses = {status: value for status, value in responses.items() if status != "2XX"}
    if any(300 <= status < 400 for status in declared):
        responses.pop("3XX", None)
    for status, schema in declared.items():
        response: dict[str, t.Any] = {
            "description": f"{spec.command.__name__} was handled.",
            "headers": _REPLAYED,
        }
        if schema is not None:
            response["content"] = {"application/json": {"schema": dict(schema)}}
        responses[str(status)] = response
    return dict(sorted(responses.items()))


def _spec_of(view: t.Callable[..., t.Any] | None) -> CommandSpec[t.Any, t.Any] | None:
    """What ``command_view`` made ``view`` from (``view.command_spec``), or ``None`` for any other view."""
    spec = getattr(view, "command_spec", None)
    return spec if isinstance(spec, CommandSpec) else None


def _schema_names(commands: t.Iterable[type[Command]]) -> dict[type[Command], str]:
    """Name each command's schema by its class name, or by its full type name where two share one."""
    unique = list(dict.fromkeys(commands))
    counts: dict[str, int] = {}
    for cls in unique:
        counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
    names = {}
    for cls in unique:
        name = cls.__name__
        if counts[name] > 1 or name == "Problem":
            # Component names may hold only letters, digits, ".", "-" and "_".
            name = _COMPONENT_NAME.sub("_", type_name(cls).replace(":", "."))
        names[cls] = name
    return names


def _schema(cls: type[Command]) -> dict[str, t.Any]:
    """The command's JSON Schema without ``$schema``: the document's dialect already says it."""
    schema = cls.json_schema()
    schema.pop("$schema", None)
    return schema


def _path(rule: Rule) -> tuple[str, list[dict[str, t.Any]]]:
    """The OpenAPI path template of ``rule`` (``/todos/{todo_id}``) and its path parameters."""
    parameters = []
    converters = getattr(rule, "_converters", {})

    def variable(match: re.Match[str]) -> str:
        name = match[1].rpartition(":")[2].strip()
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": _converter_schema(converters.get(name))}
        )
        return "{" + name + "}"

    return _VARIABLE.sub(variable, rule.rule), parameters


def _converter_schema(converter: t.Any) -> dict[str, t.Any]:
    """The JSON Schema of the values a URL converter accepts."""
    if isinstance(converter, IntegerConverter) and not converter.fixed_digits:
        schema: dict[str, t.Any] = {"type": "integer"}
        minimum = converter.min
        if not converter.signed:
            minimum = 0 if minimum is None else max(minimum, 0)
        if minimum is not None:
            schema["minimum"] = minimum
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(converter, AnyConverter):
        return {"type": "string", "enum": sorted(converter.items)}
    regex = getattr(converter, "regex", "[^/]+")
    return {"type": "string", "pattern": f"^(?:{regex})$"}


def _operation_id(endpoint: str, method: str, several: bool, taken: set[str]) -> str:
    """A unique ``operationId``: the endpoint, with the method when the rule has several."""
    base = f"{endpoint}_{method}" if several else endpoint
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        candidate = f"{base}_{number}"
    taken.add(candidate)
    return candidate


def _summary(spec: CommandSpec[t.Any, t.Any]) -> str | None:
    """The first line of the view function's docstring, else of the command's own docstring."""
    doc = spec.func.__doc__
    if not doc:
        doc = spec.command.__doc__ or ""
        if doc.startswith(spec.command.__name__ + "("):
            return None  # the signature dataclasses writes when a class has no docstring
    first = doc.strip().split("\n\n")[0]
    return _plain(" ".join(first.split())) or None


_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")


def _plain(text: str) -> str:
    """Docstring markup as plain text: ``:func:`~a.name``` is ``name``, ````code```` is ``code``."""
    text = _ROLE.sub(lambda m: m[1].rpartition(".")[2] if m[0].split("`")[1].startswith("~") else m[1], text)
    return _LITERAL.sub(lambda m: m[1] or m[2], text)


def _operation(
    spec: CommandSpec[t.Any, t.Any],
    operation_id: str,
    schema_name: str,
    path_parameters: list[dict[str, t.Any]],
    endpoint: str,
) -> dict[str, t.Any]:
    operation: dict[str, t.Any] = {"operationId": operation_id}
    summary = _summary(spec)
    if summary is not None:
        operation["summary"] = summary
    blueprint = endpoint.rpartition(".")[0]
    if blueprint:
        operation["tags"] = [blueprint]
    success: dict[str, t.Any] = {
        "2XX": {
            "description": f"{spec.command.__name__} was handled: the view's own response.",
            "headers": _REPLAYED,
            "content": {"*/*": {"schema": {}}},
        }
    }
    if spec.template is not None:
        # A view that also serves a form often redirects after success (post/redirect/get).
        success["3XX"] = {"description": "The view's own redirect after success.", "headers": _REPLAYED}
    responses: dict[str, t.Any] = {**success}
    for name, status, description, headers in _PROBLEMS:
        if spec.template is None:
            responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
        else:
            # A form post gets the form again (or the application's error page) as HTML.
            responses[str(status)] = {
                "description": description + " A form post gets the form again, or the error page, as HTML.",
                **({"headers": headers} if headers else {}),
                "content": {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}},
                    "text/html": {"schema": {"type": "string"}},
                },
            }
    if path_parameters:
        # Routing, or the view's trusted callable, refuses a URL that names nothing.
        responses["404"] = {"description": "The URL names nothing; the application's own response."}
    operation["parameters"] = [*path_parameters, {"$ref": "#/components/parameters/IdempotencyKey"}]
    operation["requestBody"] = {}  # set by the caller, which knows the app's CSRF protection
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _ordered(item: dict[str, t.Any]) -> dict[str, t.Any]:
    return {method: item[method] for method in _METHODS if method in item}
