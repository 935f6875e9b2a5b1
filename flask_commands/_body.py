"""Reading a command view's request body: a JSON object or a form post, else a clear 4xx.

:func:`_read_body` is the one entry point; a body that cannot be input becomes a 400, 413 or 415,
as problem+json for JSON callers (:class:`_BodyError`) or as the ``HTTPException`` the app's own
error pages render.
"""

from __future__ import annotations

import json
import typing as t

import flask
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.wsgi import LimitedStream

from .problem import problem

#: The submitted input: a ``dict`` decoded from JSON, or the form post's ``MultiDict``.
Body: t.TypeAlias = "t.Mapping[str, t.Any]"

_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_JSON_ACCEPT = ("text/html", "application/json", "application/problem+json")


class _BodyError(Exception):
    """The request body cannot be read as input; ``response`` says why."""

    def __init__(self, response: flask.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _is_json_type(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _accepts_json() -> bool:
    best = flask.request.accept_mimetypes.best_match(_JSON_ACCEPT)
    return best is not None and best != "text/html"


def _refuse(json_caller: bool, error: HTTPException, detail: str, code: str) -> Exception:
    """A 4xx for a body we cannot read: problem+json for JSON callers, else the app's error page."""
    if json_caller:
        assert error.code is not None
        return _BodyError(problem(error.code, detail=detail, code=code))
    error.description = detail
    return error


def _too_large(json_caller: bool) -> Exception:
    limit = flask.request.max_content_length
    detail = (
        f"The request body is larger than the limit of {limit} bytes."
        if limit is not None
        else "The request body is too large."
    )
    return _refuse(json_caller, RequestEntityTooLarge(), detail, "content_too_large")


def _read_body(json_caller: bool, has_template: bool) -> Body:
    """Return the submitted input: a ``dict`` from a JSON body, or ``request.form``.

    :raises _BodyError: with a 400, 413 or 415 problem response for JSON callers, when the body
        cannot be input.
    :raises HTTPException: the same for other callers, for the app's error handlers to render.
    """
    request = flask.request
    mimetype = request.mimetype
    form_post = mimetype in _FORM_TYPES
    if form_post and has_template:
        try:
            form = request.form
        except RequestEntityTooLarge:
            raise _too_large(json_caller) from None
        except BadRequest as e:
            raise _refuse(json_caller, BadRequest(), str(e.description), "malformed_form") from None
        if _cut_short():
            raise _too_large(json_caller)
        return form
    if not (_is_json_type(mimetype) or mimetype == ""):
        accepted = "application/json" if not has_template else "application/json or a form post"
        raise _refuse(
            json_caller,
            UnsupportedMediaType(),
            f"The content type {mimetype!r} is not accepted here; send {accepted}.",
            "unsupported_media_type",
        )
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise _too_large(json_caller) from None
    if _cut_short():
        raise _too_large(json_caller)
    if not raw.strip():
        # An empty body is an empty object (DELETE and body-less POSTs send none).
        return {} if json_caller else MultiDict()
    if mimetype == "":
        raise _refuse(
            json_caller,
            UnsupportedMediaType(),
            "The request body has no content type; send application/json"
            + (" or a form post." if has_template else "."),
            "unsupported_media_type",
        )
    try:
        # What json.loads does with bytes, on a decoder made once rather than per request.
        data = _JSON.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as e:
        raise _refuse(json_caller, BadRequest(), _json_error(e), "malformed_json") from None
    if not isinstance(data, dict):
        raise _refuse(
            json_caller,
            BadRequest(),
            f"The request body must be a JSON object, not {_json_kind(data)}.",
            "not_an_object",
        )
    return data


def _cut_short() -> bool:
    """Whether a body without ``Content-Length`` (chunked) was cut at ``MAX_CONTENT_LENGTH``.

    Werkzeug stops reading such a body at the limit without an error; one that fills the limit
    exactly is taken as too large, since the rest cannot be told apart from the end.
    """
    request = flask.request
    if request.content_length is not None or request.max_content_length is None:
        return False
    stream = request.stream
    return isinstance(stream, LimitedStream) and stream.is_exhausted


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name!r} is not a JSON value")


# NaN and Infinity are not JSON (RFC 8259); Python's decoder would take them.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _json_error(error: BaseException) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"The request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
    if isinstance(error, UnicodeDecodeError):
        return "The request body is not valid JSON: it is not UTF-8 text."
    if isinstance(error, RecursionError):
        return "The request body is not valid JSON: it nests too deeply."
    return f"The request body is not valid JSON: {error}."


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
