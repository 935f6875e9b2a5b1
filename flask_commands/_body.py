"""Reading a command view's request body: a JSON object or a form post, else a clear 4xx.

:func:`_read_body` is the one entry point; a body that cannot be input becomes a 400, 413 or 415,
as problem+json for JSON callers (:class:`_BodyError`) or as the ``HTTPException`` the app's own
error pages render.
"""

from __future__ import annotations

import json
import re
import typing as t
import urllib.parse

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


def _read_body(request: flask.Request, json_caller: bool, has_template: bool) -> Body:
    """Return the submitted input of ``request`` (the object, not the proxy): a ``dict`` from a
    JSON body, or ``request.form``.

    Text must be valid Unicode: invalid UTF-8, and a JSON ``\\ud800`` escape that pairs with
    nothing (a lone surrogate), are refused here, before any command is built.

    :raises _BodyError: with a 400, 413 or 415 problem response for JSON callers, when the body
        cannot be input.
    :raises HTTPException: the same for other callers, for the app's error handlers to render.
    """
    mimetype = request.mimetype
    if has_template and mimetype in _FORM_TYPES:
        try:
            if mimetype == _URLENCODED:
                raw = request.get_data(cache=True)
                # Checked before parsing, which replaces request.stream with one over the data.
                if _cut_short(request):
                    raise _too_large(json_caller)
                _check_urlencoded(raw)
            form = request.form
        except RequestEntityTooLarge:
            raise _too_large(json_caller) from None
        except UnicodeDecodeError as e:
            raise _refuse(
                json_caller, BadRequest(), _unicode_error("form post", e), _INVALID_UNICODE
            ) from None
        except BadRequest as e:
            raise _refuse(json_caller, BadRequest(), str(e.description), "malformed_form") from None
        if mimetype != _URLENCODED and _cut_short(request):
            raise _too_large(json_caller)
        return form
    if not (mimetype == "application/json" or mimetype == "" or _is_json_type(mimetype)):
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
    environ = request.environ
    # _cut_short's common case inline: a Content-Length and no Transfer-Encoding.
    if ("CONTENT_LENGTH" not in environ or "HTTP_TRANSFER_ENCODING" in environ) and _cut_short(request):
        raise _too_large(json_caller)
    if not raw or raw.isspace():  # ASCII whitespace, as bytes.strip() takes it
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
    # UTF-8 unless the first bytes say otherwise (a BOM, or the NULs of UTF-16/32), as json.loads
    # decides, without its pure-Python detection on every request.
    first = raw[0]
    encoding = "utf-8" if 0 < first < 0x80 and raw[1:2] != b"\x00" else json.detect_encoding(raw)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise _refuse(
            json_caller, BadRequest(), _unicode_error("request body", e), _INVALID_UNICODE
        ) from None
    try:
        # An object with nothing around it (the usual body) is decoded without decode()'s two
        # whitespace scans; anything else goes through decode(), which words every error.
        if text and text[0] == "{" and text[-1] == "}":
            data, end = _JSON.raw_decode(text)
            if end != len(text):
                data = _JSON.decode(text)
        else:
            data = _JSON.decode(text)
    except (ValueError, RecursionError) as e:
        raise _refuse(json_caller, BadRequest(), _json_error(e), "malformed_json") from None
    if not isinstance(data, dict):
        raise _refuse(
            json_caller,
            BadRequest(),
            f"The request body must be a JSON object, not {_json_kind(data)}.",
            "not_an_object",
        )
    # A surrogate escape needs "\u" in the text: the walk runs only for bodies that have one.
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        lone = _lone_surrogate(data)
        if lone is not None:
            raise _refuse(
                json_caller,
                BadRequest(),
                f"The request body is not valid Unicode: the JSON escape '\\u{ord(lone):04x}' is a lone"
                " surrogate, half of a pair; escape the whole character, or send it as UTF-8.",
                _INVALID_UNICODE,
            )
    return data


def _cut_short(request: flask.Request) -> bool:
    """Whether a body without ``Content-Length`` (chunked) was cut at ``MAX_CONTENT_LENGTH``.

    Werkzeug stops reading such a body at the limit without an error; one that fills the limit
    exactly is taken as too large, since the rest cannot be told apart from the end.
    """
    environ = request.environ
    if "CONTENT_LENGTH" in environ and "HTTP_TRANSFER_ENCODING" not in environ:
        return False  # the common case, decided without parsing a header
    if request.content_length is not None or request.max_content_length is None:
        return False
    stream = request.stream
    return isinstance(stream, LimitedStream) and stream.is_exhausted


def _check_urlencoded(raw: bytes) -> None:
    """Raise ``UnicodeDecodeError`` when a url-encoded body's text is not UTF-8.

    Werkzeug would decode it with replacement characters, silently changing what was sent.
    """
    if raw.isascii() and not _HIGH_ESCAPE.search(raw):
        return  # plain ASCII text: nothing outside ASCII was sent
    urllib.parse.unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")


def _lone_surrogate(value: object) -> str | None:
    """The first lone surrogate in a decoded JSON value's strings (keys too), or ``None``."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found is not None:
                return found.group()
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _unicode_error(what: str, error: UnicodeDecodeError) -> str:
    byte = error.object[error.start : error.start + 1].hex()
    return (
        f"The {what} is not valid UTF-8 text: byte 0x{byte} at position {error.start} ({error.reason});"
        " send the text encoded as UTF-8."
    )


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name!r} is not a JSON value")


# NaN and Infinity are not JSON (RFC 8259); Python's decoder would take them.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)
_INVALID_UNICODE = "invalid_unicode"
_URLENCODED = "application/x-www-form-urlencoded"
# A JSON escape of a surrogate (\ud800 to \udfff); whether it pairs is decided on the decoded text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# A percent escape of a byte outside ASCII: the only way a url-encoded body carries non-ASCII text.
_HIGH_ESCAPE = re.compile(rb"%[89a-fA-F]")


def _json_error(error: BaseException) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"The request body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
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
