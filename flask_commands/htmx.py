"""htmx on the server: lazy request details and chainable response-header helpers.

Works with htmx 2 and htmx 4. :func:`details` reads the ``HX-*`` request headers of either major;
the response helpers set one header each and return the response they were given, so calls chain
(``retarget(reswap(response, "outerHTML"), "#form")``). Headers understood by one major only are
tagged ``htmx 2 only`` or ``htmx 4 only`` below.

This module also owns the facts about the vendored htmx: :data:`HTMX_VERSION`,
:data:`HTMX_FILENAME` and :func:`htmx_integrity`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
import typing as t
from urllib.parse import unquote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import flask
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response

HTMX_VERSION = "4.0.1"
"""The version of the htmx build vendored in ``flask_commands/static``."""

HTMX_FILENAME = f"htmx-{HTMX_VERSION}.min.js"
"""The vendored htmx build's file name inside ``flask_commands/static``."""

# Request headers (sent by htmx).
HX_REQUEST = "HX-Request"
HX_BOOSTED = "HX-Boosted"
HX_CURRENT_URL = "HX-Current-URL"
HX_HISTORY_RESTORE_REQUEST = "HX-History-Restore-Request"
HX_TARGET = "HX-Target"  # htmx 2: the target's id; htmx 4: "tag#id" with the id URI-encoded
HX_PROMPT = "HX-Prompt"  # htmx 4 sends it only with its hx-prompt extension (URI-encoded)
HX_TRIGGER_NAME = "HX-Trigger-Name"  # htmx 2 only
HX_SOURCE = "HX-Source"  # htmx 4 only: the triggering element as "tag#id", id URI-encoded
HX_REQUEST_TYPE = "HX-Request-Type"  # htmx 4 only: "full" or "partial", sent on every request
TRIGGERING_EVENT = "Triggering-Event"  # htmx 2 only, from the event-header extension

# Response headers (read by htmx).
HX_TRIGGER = "HX-Trigger"  # also a request header, htmx 2 only (the trigger's id)
HX_TRIGGER_AFTER_SETTLE = "HX-Trigger-After-Settle"  # htmx 2 only
HX_TRIGGER_AFTER_SWAP = "HX-Trigger-After-Swap"  # htmx 2 only
HX_LOCATION = "HX-Location"
HX_PUSH_URL = "HX-Push-Url"
HX_REDIRECT = "HX-Redirect"
HX_REFRESH = "HX-Refresh"
HX_REPLACE_URL = "HX-Replace-Url"
HX_RESWAP = "HX-Reswap"
HX_RETARGET = "HX-Retarget"

# htmx 4 URI-encodes these (fetch refuses non-Latin-1 header values) without saying so in a
# "-URI-AutoEncoded" companion header the way htmx 2 does.
_ENCODED_BY_HTMX4 = frozenset({HX_SOURCE, HX_TARGET, HX_PROMPT})

SwapMethod = t.Literal[
    "innerHTML",
    "outerHTML",
    "textContent",
    "beforebegin",
    "afterbegin",
    "beforeend",
    "afterend",
    "delete",
    "none",
    "innerMorph",  # htmx 4 only
    "outerMorph",  # htmx 4 only
    "outerSync",  # htmx 4 only
]
"""The swap styles that :func:`reswap` and :func:`location` accept."""

_SWAP_METHODS: tuple[str, ...] = t.get_args(SwapMethod)

RequestType = t.Literal["full", "partial"]
"""What htmx 4 will do with the response: swap the whole body (or select from it), or a part."""

TriggerAfter = t.Literal["receive", "settle", "swap"]
"""When htmx fires an event named by :func:`trigger_client_event`."""

_TRIGGER_HEADERS: dict[str, str] = {
    "receive": HX_TRIGGER,
    "settle": HX_TRIGGER_AFTER_SETTLE,
    "swap": HX_TRIGGER_AFTER_SWAP,
}

_G_KEY = "_commands_htmx"

_R = t.TypeVar("_R", bound=Response)


class HtmxDetails:
    """The htmx request headers of one request, each parsed on first access.

    ``bool(details)`` is true for a request made by htmx. String attributes are ``None`` when
    their header is absent or empty; flags are ``False`` unless the header is ``"true"``.

    :param source: the request, or only its headers (then :attr:`current_url_abs_path` checks
        the ``Host`` header and not the scheme).
    """

    def __init__(self, source: Request | Headers) -> None:
        if isinstance(source, Headers):
            self._request: Request | None = None
            self._headers = source
        else:
            self._request = source
            self._headers = source.headers

    def _get(self, name: str) -> str | None:
        value = self._headers.get(name) or None
        if value is not None and (
            self._headers.get(f"{name}-URI-AutoEncoded") == "true"
            or (name in _ENCODED_BY_HTMX4 and self._htmx4)
        ):
            value = unquote(value)
        return value

    def __bool__(self) -> bool:
        return self._get(HX_REQUEST) == "true"

    @functools.cached_property
    def _htmx4(self) -> bool:
        # Only htmx 4 sends HX-Request-Type, and it sends it on every request.
        return bool(self._headers.get(HX_REQUEST_TYPE))

    @functools.cached_property
    def boosted(self) -> bool:
        """Whether the request came from an element with ``hx-boost``."""
        return self._get(HX_BOOSTED) == "true"

    @functools.cached_property
    def current_url(self) -> str | None:
        """The browser's URL when the request was made."""
        return self._get(HX_CURRENT_URL)

    @functools.cached_property
    def current_url_abs_path(self) -> str | None:
        """:attr:`current_url` without scheme and host, or ``None`` if it is on another origin."""
        url = self.current_url
        if url is None:
            return None
        split = urlsplit(url)
        if self._request is not None:
            same_origin = split.scheme == self._request.scheme and split.netloc == self._request.host
        else:
            same_origin = split.netloc == self._headers.get("Host")
        if not same_origin:
            return None
        return urlunsplit(split._replace(scheme="", netloc=""))

    @functools.cached_property
    def history_restore_request(self) -> bool:
        """Whether htmx is fetching a page to restore history after a cache miss."""
        return self._get(HX_HISTORY_RESTORE_REQUEST) == "true"

    @functools.cached_property
    def prompt(self) -> str | None:
        """The user's answer to ``hx-prompt`` (htmx 4: only with its hx-prompt extension)."""
        return self._get(HX_PROMPT)

    @functools.cached_property
    def target(self) -> str | None:
        """The target element: its id under htmx 2, ``"tag#id"`` (or ``"tag"``) under htmx 4."""
        return self._get(HX_TARGET)

    @functools.cached_property
    def trigger(self) -> str | None:
        """The id of the triggering element (htmx 2 only; htmx 4 sends :attr:`source`)."""
        return self._get(HX_TRIGGER)

    @functools.cached_property
    def trigger_name(self) -> str | None:
        """The ``name`` of the triggering element (htmx 2 only)."""
        return self._get(HX_TRIGGER_NAME)

    @functools.cached_property
    def source(self) -> str | None:
        """The triggering element as ``"tag#id"`` or ``"tag"`` (htmx 4 only)."""
        return self._get(HX_SOURCE)

    @functools.cached_property
    def request_type(self) -> RequestType | None:
        """``"full"`` when htmx 4 will swap the body or select from the response, else ``"partial"``."""
        value = self._get(HX_REQUEST_TYPE)
        if value == "full":
            return "full"
        if value == "partial":
            return "partial"
        return None

    @functools.cached_property
    def triggering_event(self) -> t.Any:
        """The triggering event as decoded JSON (htmx 2's event-header extension), else ``None``."""
        value = self._get(TRIGGERING_EVENT)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None


def details(request: Request | None = None) -> HtmxDetails:
    """Return the :class:`HtmxDetails` of ``request`` (default: the current request).

    The object is kept on :data:`flask.g` for the rest of the request, so each header is parsed
    at most once however many times this is called.
    """
    if request is None:
        request = t.cast(Request, flask.request._get_current_object())  # type: ignore[attr-defined]
    if not flask.has_app_context():
        return HtmxDetails(request)
    cached = flask.g.get(_G_KEY)
    if isinstance(cached, HtmxDetails) and cached._request is request:
        return cached
    result = HtmxDetails(request)
    setattr(flask.g, _G_KEY, result)
    return result


def _check_swap(method: str, argument: str) -> str:
    style = (method.split(None, 1) or [""])[0]
    if style not in _SWAP_METHODS:
        valid = ", ".join(repr(m) for m in _SWAP_METHODS)
        raise ValueError(
            f"{argument} {style!r} is not an htmx swap style; use one of {valid},"
            ' optionally followed by modifiers ("outerHTML transition:true").'
        )
    return method


def _dumps(value: t.Any) -> str:
    # flask.json serialises dates, UUIDs and dataclasses; HTTP headers need ASCII whatever the
    # app's JSON provider says.
    return flask.json.dumps(value, ensure_ascii=True)


def _new_response() -> flask.Response:
    cls = flask.current_app.response_class if flask.has_app_context() else flask.Response
    return cls(status=200)


def retarget(response: _R, target: str) -> _R:
    """Set ``HX-Retarget`` so htmx swaps the response into ``target`` (a CSS selector)."""
    response.headers[HX_RETARGET] = target
    return response


def reswap(response: _R, method: SwapMethod | str) -> _R:
    """Set ``HX-Reswap`` so htmx swaps the response with ``method``, modifiers allowed.

    :raises ValueError: when ``method`` does not start with a :data:`SwapMethod`.
    """
    response.headers[HX_RESWAP] = _check_swap(method, "reswap() method")
    return response


def trigger_client_event(
    response: _R,
    name: str,
    params: dict[str, t.Any] | None = None,
    *,
    after: TriggerAfter = "receive",
) -> _R:
    """Add event ``name`` with detail ``params`` to the response's ``HX-Trigger`` header.

    Events already in the header are kept. ``after="settle"`` and ``after="swap"`` use
    ``HX-Trigger-After-Settle`` and ``HX-Trigger-After-Swap``, which only htmx 2 reads; htmx 4
    fires ``HX-Trigger`` events once the request has finished, after the swap.

    :raises ValueError: when ``after`` is not valid, or the header holds malformed JSON.
    """
    header = _TRIGGER_HEADERS.get(after)
    if header is None:
        valid = ", ".join(repr(a) for a in _TRIGGER_HEADERS)
        raise ValueError(f"trigger_client_event() after={after!r} is not valid; use one of {valid}.")
    existing = response.headers.get(header)
    events: dict[str, t.Any]
    if not existing:
        events = {}
    elif existing.lstrip().startswith("{"):
        try:
            events = json.loads(existing)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"The response's {header} header {existing!r} is not valid JSON; set it only"
                " with trigger_client_event()."
            ) from e
    else:
        # htmx also reads a comma-separated list of event names without details.
        events = {n.strip(): {} for n in existing.split(",") if n.strip()}
    events[name] = params or {}
    response.headers[header] = _dumps(events)
    return response


def push_url(response: _R, url: str | t.Literal[False]) -> _R:
    """Set ``HX-Push-Url`` to push ``url`` onto the browser history, or ``False`` to push nothing."""
    response.headers[HX_PUSH_URL] = "false" if url is False else url
    return response


def replace_url(response: _R, url: str | t.Literal[False]) -> _R:
    """Set ``HX-Replace-Url`` to replace the browser's URL with ``url``, or ``False`` to keep it."""
    response.headers[HX_REPLACE_URL] = "false" if url is False else url
    return response


def refresh(response: _R) -> _R:
    """Set ``HX-Refresh: true`` so the browser reloads the whole page."""
    response.headers[HX_REFRESH] = "true"
    return response


def client_redirect(url: str) -> flask.Response:
    """Return an empty 200 response whose ``HX-Redirect`` makes the browser load ``url`` in full."""
    response = _new_response()
    response.headers[HX_REDIRECT] = url
    return response


def location(
    url: str,
    *,
    source: str | None = None,
    event: str | None = None,
    target: str | None = None,
    swap: SwapMethod | str | None = None,
    select: str | None = None,
    values: dict[str, t.Any] | None = None,
    headers: dict[str, str] | None = None,
) -> flask.Response:
    """Return an empty 200 response whose ``HX-Location`` makes htmx fetch ``url`` and swap it in.

    Without options the header is the bare URL; with any, it is the JSON object htmx expects.
    htmx pushes ``url`` onto the browser history.

    :raises ValueError: when ``swap`` does not start with a :data:`SwapMethod`.
    """
    options: dict[str, t.Any] = {}
    if source is not None:
        options["source"] = source
    if event is not None:
        options["event"] = event
    if target is not None:
        options["target"] = target
    if swap is not None:
        options["swap"] = _check_swap(swap, "location() swap")
    if select is not None:
        options["select"] = select
    if values is not None:
        options["values"] = values
    if headers is not None:
        options["headers"] = headers
    response = _new_response()
    response.headers[HX_LOCATION] = _dumps({"path": url, **options}) if options else url
    return response


@functools.cache
def htmx_integrity() -> str:
    """Return the Subresource Integrity value (``"sha384-..."``) of the vendored htmx file."""
    data = importlib.resources.files("flask_commands").joinpath("static", HTMX_FILENAME).read_bytes()
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")
