"""Idempotency, one owner: claim, handler, response and record for views, ``handle()``, the CLI and jobs.

Semantics follow the IETF draft "The Idempotency-Key HTTP Header Field" and Stripe's API; see
SPEC's "Idempotency" section. :func:`submit` serves ``command_view`` and :func:`handle` serves
:meth:`Handler.handle <flask_commands.Handler.handle>` (and so ``flask commands run`` and Celery
jobs); both go through :func:`_execute`, with one scoped-key format, :func:`scoped_key`.

Two protocols, chosen per run:

- *One transaction* (a ``SQLAlchemyStore`` on the database of the handler's session): the claim
  is the first statement of the handler's transaction and the record, with the response rendered
  before the commit, its last. A failure anywhere rolls all of it back: the key is free at once.
  A refusal (``Conflict``, ``Rejected``) rolls the handler's writes back, and is then recorded
  with a claim of its own.
- *Claim apart* (every other store or transaction): the claim commits alone with a lease, the
  handler runs, then the record is written with the response; a fault releases the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
import typing as t

import flask
from flask import current_app
from flask import request

from . import signals
from .command import Command
from .command import type_name
from .errors import Conflict
from .errors import KeyInProgress
from .errors import KeyReused
from .errors import Rejected
from .idempotency.store import Acquired
from .idempotency.store import Claim
from .idempotency.store import InProgress
from .idempotency.store import LeaseLost
from .idempotency.store import Mismatch
from .idempotency.store import Record
from .idempotency.store import Replay
from .idempotency.store import Store
from .idempotency.store import StoredResponse
from .idempotency.store import StoreUnavailable
from .idempotency.store import _sha256_hex
from .idempotency.store import fingerprint
from .problem import problem
from .state import AppState
from .state import app_state

if t.TYPE_CHECKING:
    from flask import Response

    from .handler import Handler

C = t.TypeVar("C", bound=Command)
R = t.TypeVar("R")
T = t.TypeVar("T")

IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENT_REPLAYED = "Idempotent-Replayed"
#: The WSGI environ's name of the ``Idempotency-Key`` header.
IDEMPOTENCY_KEY_ENVIRON = "HTTP_IDEMPOTENCY_KEY"

_KEY_MAX_LENGTH = 255
_SCOPED_MAX_LENGTH = 512
# An sf-string (RFC 8941): printable ASCII in quotes, with only \" and \\ escaped.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_TOKEN = re.compile(r"[\x21\x23-\x7e]+")  # Stripe's bare keys: visible ASCII but the quote
# Never replayed: they belong to the first response's connection or client, not to its outcome.
_NOT_STORED = frozenset({"set-cookie", "date", "server", "content-length", "transfer-encoding", "connection"})
# Seconds a client is told to wait when the store's database is down.
_UNAVAILABLE_RETRY_AFTER = 5
_IN_PROGRESS = "A request with this idempotency key is still being handled; retry shortly."

_log = logging.getLogger("flask_commands")


class BadKey(ValueError):
    """The ``Idempotency-Key`` header is not a usable key; the message says why."""


def header_key(header: str | None) -> str | None:
    """The key an ``Idempotency-Key`` header's value gives, or ``None`` when there is no header.

    Takes an sf-string (``"abc"``, as the IETF draft says) or a bare token (as Stripe's clients send).

    :raises BadKey: the header is empty, malformed or longer than 255 characters.
    """
    if header is None:
        return None
    value = header.strip()
    if _TOKEN.fullmatch(value):
        key = value  # a bare token, the usual case: it holds no quote, so it is no sf-string
    else:
        match = _SF_STRING.fullmatch(value)
        if match is None:
            raise BadKey(f"The {IDEMPOTENCY_KEY} header must be a quoted string of printable ASCII.")
        key = re.sub(r'\\(["\\])', r"\1", match.group(1))
        if not key:
            raise BadKey(f"The {IDEMPOTENCY_KEY} header is empty.")
    if len(key) > _KEY_MAX_LENGTH:
        raise BadKey(f"The {IDEMPOTENCY_KEY} header has {len(key)} characters; 255 at most are allowed.")
    return key


def scoped_key(command: type[Command], key: str, scope: str = "") -> str:
    """The store's key for ``key``: ``type:scope:key``, scope empty outside requests; hashed past 512."""
    scoped = f"{type_name(command)}:{scope}:{key}"
    if len(scoped) > _SCOPED_MAX_LENGTH:
        return "sha256:" + hashlib.sha256(scoped.encode()).hexdigest()
    return scoped


def command_fingerprint(cmd: Command) -> str:
    """Hash of the command type and its values, without ``id`` and ``issued_at`` (jobs, CLI, tests)."""
    cls = type(cmd)
    shape = _shapes.get(cls)
    if shape is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("id", "issued_at"))
        shape = _shapes[cls] = (type_name(cls), names)
    kind, names = shape
    values = [getattr(cmd, name) for name in names]
    if all(type(value) in _PLAIN for value in values):
        # The common case, without to_dict(): JSON's own values, in declaration order.
        text = json.dumps(
            [kind, dict(zip(names, values, strict=True))], sort_keys=True, separators=(",", ":")
        )
        return _sha256_hex(text)
    data = cmd.to_dict()
    del data["id"], data["issued_at"]
    return fingerprint(kind, data)


_shapes: dict[type[Command], tuple[str, tuple[str, ...]]] = {}
_PLAIN = frozenset({str, int, float, bool, type(None)})


def request_fingerprint(
    data: t.Mapping[str, t.Any], view_args: t.Mapping[str, t.Any], req: flask.Request | None = None
) -> str:
    """Hash of what the client sent: method, URL parameters and body, without the CSRF token and ``id``.

    :param req: the request object (not the proxy), when the caller has it; else the current one.
    """
    if req is None:
        req = request._get_current_object()  # type: ignore[attr-defined]
    if type(data) is dict:
        # A JSON object (the usual case): its members but ``id``, sorted by the encoder.
        body: t.Any = data
        if "id" in data:
            body = {name: value for name, value in data.items() if name != "id"}
    elif hasattr(data, "getlist"):
        # A form post: every value of every field, in the order sent within one field.
        # Sorted by name alone (names are unique; values need not be comparable). A multipart
        # part without a usable name comes as None.
        csrf = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        fields = [(name, data.getlist(name)) for name in data if name != "id" and name != csrf]
        body = sorted(fields, key=lambda item: (item[0] is not None, item[0] or ""))
    elif "id" in data:
        body = {name: value for name, value in data.items() if name != "id"}
    else:
        body = data
    url = {str(name): str(value) for name, value in view_args.items()} if view_args else {}
    # No query string (the usual case): no need to parse one.
    if req.environ.get("QUERY_STRING"):
        args = req.args
        query = sorted((name, args.getlist(name)) for name in args)
    else:
        query = []
    return fingerprint(req.method, [url, query, body])


@dataclasses.dataclass(slots=True)
class Ran(t.Generic[C, R]):
    """How a run of a handler ended: its command, and its result or refusal."""

    command: C
    result: R | None = None
    refusal: Conflict | Rejected | None = None


class Answers(t.Protocol[C, R, T]):
    """What a caller makes of each end of a keyed run: an HTTP response, or a result for ``handle()``."""

    def render(self, ran: Ran[C, R]) -> T:
        """The answer of a run; on the one-transaction path this runs before the commit."""
        ...

    def stored(self, answer: T) -> StoredResponse | None:
        """What to keep for replays of ``answer``; ``None`` for a fault (never stored)."""
        ...

    def replay(self, record: Record) -> T:
        """The answer of a duplicate of a done run."""
        ...

    def mismatch(self) -> T:
        """The answer when the key was used with other values."""
        ...

    def in_progress(self, retry_after: float) -> T:
        """The answer when another run holds the key past the wait."""
        ...

    def unavailable(self, error: StoreUnavailable) -> T:
        """The answer when the store's database cannot be reached."""
        ...


class _NotOurs(Exception):
    """The claim made inside the handler's transaction did not acquire the key: roll back."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim


class _Fault(Exception):
    """The success answer is a fault (5xx): roll the handler's writes and the key back."""

    def __init__(self, answer: t.Any) -> None:
        self.answer = answer


def _execute(
    handler: Handler[C, R],
    build: C | t.Callable[[], C],
    key: str,
    fingerprint: str,
    answers: Answers[C, R, T],
    *,
    state: AppState,
    scope: str = "",
    wait: float = 0.0,
) -> T:
    """Run ``handler`` at most once per ``key``: claim, build, run, render, record; or replay."""
    scoped = scoped_key(handler.command, key, scope)
    deadline = 0.0
    pause = 0.05
    lost = 0
    try:
        session = _shared_session(handler, state)
        while True:
            # A run ends in its answer, as a 1-tuple, or in the claim that did not acquire the key.
            if session is not None:
                ended = _one_transaction(handler, build, scoped, fingerprint, answers, state, session)
            else:
                ended = _claim_apart(handler, build, scoped, fingerprint, answers, state)
            if type(ended) is tuple:
                return ended[0]
            command = build if isinstance(build, Command) else None
            if isinstance(ended, Replay):
                if signals.replayed.receivers:
                    signals._send(signals.replayed, handler, command=command, key=key)
                return answers.replay(ended.record)
            if isinstance(ended, Mismatch):
                signals._send(signals.key_refused, handler, command=command, key=key, reason="mismatch")
                return answers.mismatch()
            assert isinstance(ended, InProgress)  # a claim is Acquired only inside a run
            if ended.retry_after == 0.0 and lost < 3:
                lost += 1  # lost a race that has just ended: look again at once
                continue
            now = time.monotonic()
            if not deadline:
                deadline = now + wait
            if now + pause > deadline:
                signals._send(signals.key_refused, handler, command=command, key=key, reason="in_progress")
                return answers.in_progress(ended.retry_after)
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
    except StoreUnavailable as e:
        return answers.unavailable(e)


def _shared_session(handler: Handler[t.Any, t.Any], state: AppState) -> t.Any:
    """The handler's session when the store shares its database (one transaction), else ``None``."""
    session = handler.transaction
    if session is None or not hasattr(session, "begin_nested"):
        return None
    try:
        bind = session.get_bind()  # type: ignore[union-attr]
    except Exception:
        return None
    return session if state.store.same_database(bind) else None


class _Builder(t.Generic[C]):
    """Builds the command once, after the in-transaction claim, and keeps it for a refusal's answer."""

    def __init__(self, build: C | t.Callable[[], C]) -> None:
        self.build = build
        self.command: C | None = build if isinstance(build, Command) else None

    def __call__(self) -> C:
        if self.command is None:
            self.command = t.cast("t.Callable[[], C]", self.build)()
        return self.command


def _one_transaction(
    handler: Handler[C, R],
    build: C | t.Callable[[], C],
    scoped: str,
    fingerprint: str,
    answers: Answers[C, R, T],
    state: AppState,
    session: t.Any,
) -> tuple[T] | Claim:
    store = state.store
    builder = _Builder(build)
    tokens: list[str] = []
    answered: list[T] = []

    def claim(session: t.Any) -> None:
        claimed = store.claim(scoped, fingerprint, lease=state.lease, connection=session.connection())
        if not isinstance(claimed, Acquired):
            raise _NotOurs(claimed)
        tokens.append(claimed.token)

    def finish(session: t.Any, cmd: C, result: R) -> None:
        answer = answers.render(Ran(cmd, result))
        stored = answers.stored(answer)
        if stored is None:
            raise _Fault(answer)
        connection = session.connection()
        store.complete(scoped, tokens[0], outcome="ok", ttl=state.ttl, response=stored, connection=connection)
        answered.append(answer)

    try:
        handler.run(builder, claim=claim, finish=finish)
    except _NotOurs as e:
        return e.claim
    except LeaseLost:
        # A duplicate whose claim began before ours committed its record first: our writes are
        # rolled back, and the next round replays its outcome.
        return InProgress(retry_after=0.0)
    except _Fault as e:
        return (e.answer,)
    except (Conflict, Rejected) as e:
        # The handler's writes and the claim are rolled back; the refusal is recorded apart.
        answer = answers.render(Ran(t.cast(C, builder.command), refusal=e))
        stored = answers.stored(answer)
        if stored is not None:
            claimed = store.claim(scoped, fingerprint, lease=state.lease)
            if isinstance(claimed, Acquired):
                store.complete(scoped, claimed.token, outcome=e.outcome, ttl=state.ttl, response=stored)
        return (answer,)
    return (answered[0],)


def _claim_apart(
    handler: Handler[C, R],
    build: C | t.Callable[[], C],
    scoped: str,
    fingerprint: str,
    answers: Answers[C, R, T],
    state: AppState,
) -> tuple[T] | Claim:
    store = state.store
    claimed = store.claim(scoped, fingerprint, lease=state.lease)
    if not isinstance(claimed, Acquired):
        return claimed
    token = claimed.token
    # Typed, not t.cast (a call on every request): None only when build() refused the command.
    command: C = None  # type: ignore[assignment]
    try:
        try:
            # Built before the run, as an unkeyed post is: no transaction to build inside of here.
            command = build if isinstance(build, Command) else build()
            ran: Ran[C, R] = Ran(command, handler.run(command))
        except (Conflict, Rejected) as e:
            ran = Ran(command, refusal=e)
    except BaseException:
        _release(store, scoped, token)
        raise
    try:
        answer = answers.render(ran)
    except BaseException:
        if ran.refusal is None:
            # The handler's writes are committed: never run it again (a replay says so).
            store.complete(scoped, token, outcome="ok", ttl=state.ttl)
        else:
            _release(store, scoped, token)
        raise
    stored = answers.stored(answer)
    refusal = ran.refusal
    if refusal is None:
        store.complete(scoped, token, outcome="ok", ttl=state.ttl, response=stored)
    elif stored is not None:
        store.complete(scoped, token, outcome=refusal.outcome, ttl=state.ttl, response=stored)
    else:
        _release(store, scoped, token)
    return (answer,)


def _release(store: Store, scoped: str, token: str) -> None:
    try:
        store.release(scoped, token)
    except StoreUnavailable:
        # The lease will expire on its own; the handler's fault is the error to report.
        _log.warning("Could not release idempotency key %r; its lease will expire.", scoped)


# HTTP: command_view.


class HTTPAnswers(t.Generic[C, R]):
    """The HTTP answers of a keyed run: what is stored and replayed, and the refusals of the key.

    A view subclasses it with the two answers only it can make: :meth:`render`, the response of
    a run, and :meth:`mismatch`, the response when the key was used with other values.
    """

    #: Whether the caller gets problem+json rather than HTML pages; an HTML form post waits up
    #: to ``COMMANDS_IDEMPOTENCY_WAIT`` for a running duplicate instead of a 409 at once.
    json: bool

    def render(self, ran: Ran[C, R]) -> Response:
        """The response of a run: its result, or its conflict or rejection."""
        raise NotImplementedError

    def mismatch(self) -> Response:
        """The response when the key was used with other values."""
        raise NotImplementedError

    def stored(self, answer: Response) -> StoredResponse | None:
        """What to keep of ``answer`` for replays; ``None`` for a fault (5xx, never stored)."""
        status = answer.status_code
        if status >= 500:
            return None
        # Headers yields its own (name, value) tuples: kept as they are. A loop, not a list
        # comprehension: one frame less on every keyed request.
        headers = []
        for item in answer.headers:
            if item[0].lower() not in _NOT_STORED:
                headers.append(item)
        body = answer.response
        # A body of one bytes object (jsonify, render_template, problem): itself, as get_data gives.
        if type(body) is list and len(body) == 1 and type(body[0]) is bytes:
            data: bytes = body[0]
        else:
            data = answer.get_data()
        return StoredResponse(status, headers, data)

    def replay(self, record: Record) -> Response:
        """The stored response again, marked ``Idempotent-Replayed: true``."""
        stored = record.response
        if stored is None:
            # Claim apart only: the process failed after the handler committed, before the record.
            return problem(
                409,
                detail="This request was already handled, but its response was not kept.",
                code="already_handled",
            )
        response = current_app.response_class(stored.body, status=stored.status, headers=stored.headers)
        response.headers[IDEMPOTENT_REPLAYED] = "true"
        return response

    def in_progress(self, retry_after: float) -> Response:
        """409 ``in_progress`` with ``Retry-After``: another request holds the key."""
        headers = {"Retry-After": str(max(1, round(retry_after)))}
        return problem(409, detail=_IN_PROGRESS, code="in_progress", headers=headers)

    def unavailable(self, error: StoreUnavailable) -> Response:
        """503 with ``Retry-After`` for JSON; an HTML post gets the app's own 503 page."""
        if not self.json:
            # An HTML form post: the app's own 503 page, rendered by the handler init_app registers.
            raise error
        _log.warning("The idempotency store is unavailable; answered 503.", exc_info=error)
        return problem(
            503,
            detail="The service cannot record this request right now; retry shortly.",
            code="store_unavailable",
            headers={"Retry-After": str(_UNAVAILABLE_RETRY_AFTER)},
        )


def submit(
    handler: Handler[C, R], build: t.Callable[[], C], key: str, fingerprint: str, answers: HTTPAnswers[C, R]
) -> Response:
    """Build and run a command once per ``key`` and return the response, first or replayed.

    A done key is replayed before ``build`` runs (so before the view's ``trusted`` values are
    looked up); ``build`` may raise ``CommandInvalid``, which frees the key and propagates.

    :param build: builds the command (trusted values, then ``Command.build``).
    :param fingerprint: the hash of what the client sent (see :func:`request_fingerprint`).
    :param answers: the view's answers; an HTML caller (``answers.json`` false) waits up to
        ``COMMANDS_IDEMPOTENCY_WAIT`` for a running duplicate, instead of a 409 at once.
    """
    state = app_state()
    return _execute(
        handler,
        build,
        key,
        fingerprint,
        answers,
        state=state,
        scope=state.scope(),
        wait=0.0 if answers.json else state.wait,
    )


# handle(): the CLI, jobs and scripts.


class _CallAnswers(t.Generic[C, R]):
    """Answers of ``handle()``: the result, or the refusal raised; refusals stored as problem+json."""

    def render(self, ran: Ran[C, R]) -> Ran[C, R]:
        return ran

    def stored(self, answer: Ran[C, R]) -> StoredResponse | None:
        refusal = answer.refusal
        if refusal is None:
            return StoredResponse(204, [], b"")
        response = problem(refusal.status, detail=refusal.message, code=refusal.code)
        headers = [("Content-Type", response.headers["Content-Type"])]
        return StoredResponse(refusal.status, headers, response.get_data())

    def replay(self, record: Record) -> Ran[C, R]:
        response = record.response
        if record.outcome == "ok" or response is None:
            return Ran(t.cast(C, None))
        return Ran(t.cast(C, None), refusal=_refusal_from(response))

    def mismatch(self) -> Ran[C, R]:
        raise KeyReused()

    def in_progress(self, retry_after: float) -> Ran[C, R]:
        raise KeyInProgress(retry_after)

    def unavailable(self, error: StoreUnavailable) -> Ran[C, R]:
        raise error


def handle(handler: Handler[C, R], cmd: C, key: str) -> R | None:
    """Run ``handler`` on ``cmd`` once per ``key`` (scope empty): the result, or ``None`` on a replay.

    :raises Conflict: the handler's conflict (run or replayed), or ``KeyInProgress``.
    :raises Rejected: the handler's rejection (run or replayed), or ``KeyReused``.
    :raises StoreUnavailable: the store's database cannot be reached.
    """
    answers: _CallAnswers[C, R] = _CallAnswers()
    ran = _execute(handler, cmd, key, command_fingerprint(cmd), answers, state=app_state())
    if ran.refusal is not None:
        raise ran.refusal
    return ran.result


def _refusal_from(response: StoredResponse) -> Conflict | Rejected:
    """Rebuild the ``Conflict`` or ``Rejected`` a stored problem+json response stands for."""
    try:
        body = json.loads(response.body)
        message, code = str(body["detail"]), str(body["code"])
    except (ValueError, KeyError, TypeError):
        message, code = "This command was refused earlier.", None
    return (
        Conflict(message, code=code) if response.status == Conflict.status else Rejected(message, code=code)
    )
