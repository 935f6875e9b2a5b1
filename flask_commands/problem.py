"""RFC 9457 problem details: the ``application/problem+json`` error responses of command views."""

from __future__ import annotations

import http
import json
import typing as t

import flask

#: The media type of a problem details document.
PROBLEM_JSON = "application/problem+json"

# RFC 9110's reason phrases, fixed here so a title does not change with the Python version
# (http.HTTPStatus says "Unprocessable Entity" before 3.13 and "Unprocessable Content" after).
_TITLES: dict[int, str] = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
}


# One encoder for every problem: json.dumps with these options would make a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _title(status: int) -> str:
    title = _TITLES.get(status)
    if title is not None:
        return title
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Client Error" if status < 500 else "Server Error"


def problem(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    code: str | None = None,
    errors: t.Mapping[str, t.Sequence[str]] | None = None,
    headers: t.Mapping[str, str] | None = None,
    type: str = "about:blank",
) -> flask.Response:
    """Return an ``application/problem+json`` response (RFC 9457) with status ``status``.

    The body holds ``type``, ``title``, ``status`` and, when given, ``detail``, ``code`` and
    ``errors``. Never put a traceback, SQL or a class path in any of them.

    :param status: an HTTP error status, 400 to 599.
    :param title: the summary of the problem's kind; the status's reason phrase by default, as
        RFC 9457 asks when ``type`` is ``"about:blank"``.
    :param detail: what went wrong with this request, in a sentence for people.
    :param code: a stable snake_case code for programs (``"duplicate_title"``).
    :param errors: field errors, ``{field_name: [message, ...]}``.
    :param headers: extra response headers (``Allow``, ``Retry-After``).
    :param type: a URI naming the problem's kind, ``"about:blank"`` when the status says it all.
    :raises ValueError: when ``status`` is not an error status.
    """
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"problem() takes an HTTP error status from 400 to 599, not {status!r}.")
    body: dict[str, t.Any] = {
        "type": type,
        "title": title if title is not None else _title(status),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if code is not None:
        body["code"] = code
    if errors is not None:
        body["errors"] = {str(name): [str(m) for m in messages] for name, messages in errors.items()}
    text = _encode(body)
    try:
        cls = flask.current_app.response_class
    except RuntimeError:  # outside an app context
        cls = flask.Response
    # content_type, not mimetype: werkzeug adds no charset to application/problem+json anyway.
    response = cls(text, status=status, content_type=PROBLEM_JSON)
    if headers:
        for name, value in headers.items():
            response.headers[name] = value
    return response
