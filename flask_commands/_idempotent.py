"""Idempotency over HTTP: the ``Idempotency-Key`` header, scoped keys, stored and replayed responses.

Semantics follow the IETF draft "The Idempotency-Key HTTP Header Field" and Stripe's API; see
SPEC's "Idempotency" section. ``command_view`` calls :func:`submit` once a command has built.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import typing as t

from flask import Response
from flask import current_app
from flask import request

from . import signals
from .command import Command
from .command import type_name
from .errors import Conflict
from .errors import Rejected
from .handler import Handler
from .handler import _app_state
from .handler import _Ran
from .idempotency.store import InProgress
from .idempotency.store import Mismatch
from .idempotency.store import Replay
from .idempotency.store import Store
from .idempotency.store import StoredResponse
from .idempotency.store import StoreUnavailable
from .problem import problem

if t.TYPE_CHECKING:
    from .extension import _AppState

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"

_KEY_MAX_LENGTH = 255
_SCOPED_MAX_LENGTH = 512
# An sf-string (RFC 8941): printable ASCII in quotes, with only \" and \\ escaped.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_TOKEN = re.compile(r"[\x21\x23-\x7e]+")  # Stripe's bare keys: visible ASCII but the quote
# Never replayed: they belong to the first response's connection or client, not to its outcome.
_NOT_STORED = frozenset({"set-cookie", "date", "server", "content-length", "transfer-encoding", "connection"})
# Seconds a client is told to wait when the store's database is down.
_UNAVAILABLE_RETRY_AFTER = 5

_log = logging.getLogger("flask_commands")


class BadKey(ValueError):
    """The ``Idempotency-Key`` header is not a usable key; the message says why."""


def header_key() -> str | None:
    """The request's ``Idempotency-Key`` header as a key, or ``None`` when it has none.

    Takes an sf-string (``"abc"``, as the IETF draft says) or a bare token (as Stripe's clients send).

    :raises BadKey: the header is empty, malformed or longer than 255 characters.
    """
    header = request.headers.get(IDEMPOTENCY_KEY)
    if header is None:
        return None
    value = header.strip()
    match = _SF_STRING.fullmatch(value)
    if match is not None:
        key = re.sub(r'\\(["\\])', r"\1", match.group(1))
    elif _TOKEN.fullmatch(value):
        key = value
    else:
        raise BadKey(f"The {IDEMPOTENCY_KEY} header must be a quoted string of printable ASCII.")
    if not key:
        raise BadKey(f"The {IDEMPOTENCY_KEY} header is empty.")
    if len(key) > _KEY_MAX_LENGTH:
        raise BadKey(f"The {IDEMPOTENCY_KEY} header has {len(key)} characters; 255 at most are allowed.")
    return key


def _scoped(handler: Handler[t.Any, t.Any], key: str, state: _AppState) -> str:
    """Scope ``key`` by command type and the app's ``COMMANDS_IDEMPOTENCY_SCOPE``."""
    scope_of = state.scope
    scope = "" if scope_of is None else str(scope_of())
    scoped = f"{type_name(handler.command)}:{scope}:{key}"
    if len(scoped) > _SCOPED_MAX_LENGTH:
        return "sha256:" + hashlib.sha256(scoped.encode()).hexdigest()
    return scoped


def submit(
    handler: Handler[t.Any, t.Any],
    cmd: Command,
    key: str | None,
    *,
    respond: t.Callable[[_Ran[t.Any]], Response],
    mismatch: t.Callable[[], Response],
    wait: bool,
) -> Response:
    """Run ``handler`` on ``cmd`` once per ``key`` and return the response, first or replayed.

    :param respond: makes the response of a run (its result, or its conflict or rejection).
    :param mismatch: makes the response when the key was used with other values.
    :param wait: wait up to ``COMMANDS_IDEMPOTENCY_WAIT`` for a running duplicate (HTML form
        posts), instead of answering 409 at once (JSON).
    """
    if key is None:
        return respond(_call(handler, cmd))
    state = _app_state()
    scoped = _scoped(handler, key, state)
    deadline = time.monotonic() + (state.wait if wait else 0.0)
    pause = 0.05
    try:
        while True:
            ran = handler._run_claimed(cmd, scoped, state)
            if isinstance(ran, Replay):
                if signals.replayed.receivers:
                    signals._send(signals.replayed, handler, command=cmd, key=key)
                return _replay(ran)
            if isinstance(ran, Mismatch):
                return mismatch()
            if not isinstance(ran, InProgress):
                return _finish(state.store, scoped, ran, respond)
            if time.monotonic() + pause > deadline:
                return problem(
                    409,
                    detail="A request with this idempotency key is still being handled; retry shortly.",
                    code="in_progress",
                    headers={"Retry-After": str(max(1, round(ran.retry_after)))},
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
    except StoreUnavailable:
        if wait:
            # An HTML form post: the app's own 503 page, rendered by the handler init_app registers.
            raise
        _log.warning("The idempotency store is unavailable; answered 503.", exc_info=True)
        return problem(
            503,
            detail="The service cannot record this request right now; retry shortly.",
            code="store_unavailable",
            headers={"Retry-After": str(_UNAVAILABLE_RETRY_AFTER)},
        )


def _call(handler: Handler[t.Any, t.Any], cmd: Command) -> _Ran[t.Any]:
    """Run without a key (nothing to claim or store)."""
    ran: _Ran[t.Any] = _Ran("", 0.0)
    try:
        ran.result = handler(cmd)
    except (Conflict, Rejected) as e:
        ran.refusal = e
        ran.outcome = "conflict" if isinstance(e, Conflict) else "rejected"
    return ran


def _finish(
    store: Store, scoped: str, ran: _Ran[t.Any], respond: t.Callable[[_Ran[t.Any]], Response]
) -> Response:
    """Make the response of a claimed run and store it with the outcome."""
    try:
        response = respond(ran)
    except BaseException:
        # The handler's work is done (or refused): never run it again. A retry will be told it
        # was handled (409 already_handled) rather than run twice.
        if not ran.completed:
            store.complete(scoped, ran.token, outcome=ran.outcome, ttl=ran.ttl)
        raise
    stored = _stored(response) if response.status_code < 500 else None
    if ran.completed:
        if stored is not None:
            store.attach_response(scoped, ran.token, stored)
    else:
        store.complete(scoped, ran.token, outcome=ran.outcome, ttl=ran.ttl, response=stored)
    return response


def _stored(response: Response) -> StoredResponse:
    headers = [(name, value) for name, value in response.headers if name.lower() not in _NOT_STORED]
    return StoredResponse(response.status_code, headers, response.get_data())


def _replay(replay: Replay) -> Response:
    stored = replay.record.response
    if stored is None:
        # The process died after the handler committed and before the response was attached.
        return problem(
            409,
            detail="This request was already handled, but its response was not kept.",
            code="already_handled",
        )
    response = current_app.response_class(stored.body, status=stored.status, headers=stored.headers)
    response.headers[IDEMPOTENT_REPLAYED] = "true"
    return response
