"""``@handler``: turn a command into a result inside a unit of work, and report it by signals."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import sys
import time
import typing as t

from flask import current_app

from . import signals
from .command import Command
from .command import type_name
from .errors import Conflict
from .errors import Rejected
from .errors import _InProgress
from .errors import _KeyReused
from .idempotency.store import Acquired
from .idempotency.store import InProgress
from .idempotency.store import Mismatch
from .idempotency.store import OutcomeKind
from .idempotency.store import Replay
from .idempotency.store import StoredResponse
from .idempotency.store import StoreUnavailable
from .idempotency.store import fingerprint

if t.TYPE_CHECKING:
    import datetime

    import sqlalchemy.orm

    from .extension import _AppState

C = t.TypeVar("C", bound=Command)
R = t.TypeVar("R")

#: A SQLAlchemy session (or scoped_session), or a callable returning a context manager.
Transaction: t.TypeAlias = (
    "sqlalchemy.orm.Session | sqlalchemy.orm.scoped_session[t.Any] | t.Callable[[], t.ContextManager[t.Any]]"
)

#: Every handler by name (``"module:qualname"``): jobs resolve only these, never an import path.
_registry: dict[str, Handler[t.Any, t.Any]] = {}

_log = logging.getLogger("flask_commands")

# The Celery task that runs job envelopes, registered by flask_commands.celery.init_celery.
_JOB_TASK = "flask_commands.run_command"

# Nesting depth of handler transactions per session, kept in ``session.info``.
_DEPTH = "_commands_depth"
# The session of the innermost running handler: enqueue writes to its outbox (flask_commands.outbox).
_SESSION: contextvars.ContextVar[sqlalchemy.orm.Session | None] = contextvars.ContextVar(
    "_commands_session", default=None
)


class Handler(t.Generic[C, R]):
    """A function that handles one command type, wrapped by :func:`handler`.

    Call it with a command to run it in its transaction, or use :meth:`handle` to run it under
    the app's idempotency store.
    """

    def __init__(
        self,
        command: type[C],
        func: t.Callable[[C], R],
        *,
        transaction: Transaction | None,
        queue: str | None,
        max_attempts: int,
        backoff: float = 1.0,
    ) -> None:
        self.command = command
        self.func = func
        self.transaction = transaction
        self.queue = queue
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.name = f"{func.__module__}:{func.__qualname__}"
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__doc__ = func.__doc__

    def __repr__(self) -> str:
        return f"<handler {self.name} for {self.command.__name__}>"

    def __call__(self, cmd: C) -> R:
        """Run the handler on ``cmd`` in its transaction and return the result.

        :raises Conflict: the state of the world refuses the command.
        :raises Rejected: a business rule refuses the command.
        :raises TypeError: ``cmd`` is not of the handler's command type.
        """
        return self._run(cmd)

    def handle(self, cmd: C, key: str | None = None) -> R | None:
        """Run the handler on ``cmd`` at most once per key, under the app's idempotency store.

        The first call with a key runs the handler and stores its outcome; later calls with the
        same key and the same command values replay it: they return ``None`` (the ``replayed``
        signal is sent) or raise the stored ``Conflict``/``Rejected`` again. A fault is not
        stored, so a retry runs the handler again.

        :param key: the idempotency key, ``str(cmd.id)`` by default; scoped by command type.
        :raises Conflict: the handler's conflict, or code ``"in_progress"`` while another run holds
            the key (``retry_after`` says for how long at most).
        :raises Rejected: the handler's rejection, or code ``"idempotency_key_reused"`` when the key
            was used with other values.
        """
        self._check(cmd)
        state = _app_state()
        store = state.store
        scoped = f"{type_name(self.command)}:{key if key is not None else cmd.id}"
        ran = self._run_claimed(cmd, scoped, state)
        if isinstance(ran, Replay):
            if signals.replayed.receivers:
                given = key if key is not None else str(cmd.id)
                signals._send(signals.replayed, self, command=cmd, key=given)
            response = ran.record.response
            if ran.record.outcome != "ok" and response is not None:
                raise _refusal_from(response)
            return None
        if isinstance(ran, InProgress):
            raise _InProgress(ran.retry_after)
        if isinstance(ran, Mismatch):
            raise _KeyReused()
        if ran.refusal is not None:
            store.complete(
                scoped, ran.token, outcome=ran.outcome, ttl=ran.ttl, response=_refusal_response(ran.refusal)
            )
            raise ran.refusal
        if not ran.completed:
            store.complete(scoped, ran.token, outcome="ok", ttl=ran.ttl)
        return ran.result

    def _run_claimed(self, cmd: C, scoped: str, state: _AppState) -> _Ran[R] | Replay | InProgress | Mismatch:
        """Claim ``scoped`` and, if it is ours, run the handler; the caller stores the outcome.

        A successful run on the store's database has its completion record written inside the
        handler's transaction (``completed``); a fault releases the claim and propagates.
        """
        store = state.store
        claim = store.claim(scoped, _fingerprint(cmd), lease=state.lease)
        if not isinstance(claim, Acquired):
            return claim
        ran: _Ran[R] = _Ran(claim.token, state.ttl)

        def complete_with_writes(session: t.Any) -> None:
            # On the store's database the record commits in the handler's own transaction, so a
            # crash can never leave the writes without the record (and run the handler twice).
            if session is not None and store.same_database(connection := session.connection()):
                store.complete(scoped, ran.token, outcome="ok", ttl=state.ttl, connection=connection)
                ran.completed = True

        try:
            ran.result = self._run(cmd, complete_with_writes)
        except (Conflict, Rejected) as e:
            ran.refusal = e
            ran.outcome = "conflict" if isinstance(e, Conflict) else "rejected"
        except BaseException:
            try:
                store.release(scoped, claim.token)
            except StoreUnavailable:
                # The lease will expire on its own; the handler's fault is the error to report.
                _log.warning("Could not release idempotency key %r; its lease will expire.", scoped)
            raise
        return ran

    def enqueue(self, cmd: C, *, countdown: float | None = None, eta: datetime.datetime | None = None) -> str:
        """Send ``cmd`` to a Celery worker, which runs :meth:`handle` on it; return the task id.

        The job is a JSON envelope naming the command type, this handler and ``cmd.to_dict()``;
        its task id is ``str(cmd.id)``, so enqueueing a command twice still runs it once. It goes
        to the handler's ``queue``, else the Celery app's default queue. The Celery app is the
        current Flask app's ``extensions["celery"]``, or outside an app context the one that
        :func:`flask_commands.celery.init_celery` made Celery's default.

        Inside a handler's unit of work on a SQLAlchemy session, the job is written to the outbox
        table in that transaction and published right after the outermost commit; a rollback
        sends nothing (see :mod:`flask_commands.outbox`). Elsewhere it is sent at once.

        :param countdown: seconds to wait before the job runs.
        :param eta: when the job runs, an aware datetime.
        :raises RuntimeError: there is no Celery app made by ``init_celery`` to send it with, or
            the session's database has no outbox table.
        :raises TypeError: ``cmd`` is not of the handler's command type.
        """
        self._check(cmd)
        celery_app = _celery_app(self)
        envelope = {"type": type_name(type(cmd)), "handler": self.name, "command": cmd.to_dict()}
        queue = self.queue or celery_app.conf.task_default_queue
        session = _SESSION.get()
        if session is not None:
            from . import outbox

            at = eta.timestamp() if eta is not None else None
            if countdown is not None:
                at = time.time() + countdown
            outbox.stage(session, celery_app, task_id=str(cmd.id), queue=queue, envelope=envelope, eta=at)
            return str(cmd.id)
        result = celery_app.send_task(
            _JOB_TASK,
            args=[envelope],
            task_id=str(cmd.id),
            queue=queue,
            countdown=countdown,
            eta=eta,
            serializer="json",
        )
        return str(result.id)

    def _check(self, cmd: object) -> None:
        if not isinstance(cmd, self.command):
            raise TypeError(
                f"handler {self.__name__!r} takes {self.command.__name__}, not {type(cmd).__name__};"
                " pass the command it was declared for."
            )

    def _run(self, cmd: C, before_commit: t.Callable[[t.Any], None] | None = None) -> R:
        """Run in the unit of work; ``before_commit(session_or_None)`` runs inside it on success."""
        self._check(cmd)
        timed = signals.handle_finished.receivers or signals.handle_failed.receivers
        start = time.perf_counter() if timed else 0.0
        if signals.handle_started.receivers:
            signals._send(signals.handle_started, self, command=cmd)
        try:
            with self._unit_of_work() as session:
                result = self.func(cmd)
                if before_commit is not None:
                    before_commit(session)
        except (Conflict, Rejected) as e:
            if signals.handle_finished.receivers:
                kind = "conflict" if isinstance(e, Conflict) else "rejected"
                duration = time.perf_counter() - start
                signals._send(signals.handle_finished, self, command=cmd, duration=duration, **{kind: e})
            raise
        except Exception as e:
            if signals.handle_failed.receivers:
                duration = time.perf_counter() - start
                signals._send(signals.handle_failed, self, command=cmd, exception=e, duration=duration)
            raise
        if signals.handle_finished.receivers:
            duration = time.perf_counter() - start
            signals._send(signals.handle_finished, self, command=cmd, result=result, duration=duration)
        return result

    @contextlib.contextmanager
    def _unit_of_work(self) -> t.Iterator[t.Any]:
        """Commit on success and roll back on any exception; nest as a savepoint inside another."""
        transaction = self.transaction
        if transaction is None:
            yield None
            return
        if not hasattr(transaction, "begin_nested"):
            with transaction():
                yield None
            return
        session = t.cast("sqlalchemy.orm.Session", transaction)
        depth = session.info.get(_DEPTH, 0)
        session.info[_DEPTH] = depth + 1
        token = _SESSION.set(session)
        try:
            if depth:
                # Inside another handler: a savepoint, so our failure does not undo its work.
                with session.begin_nested():
                    yield session
            else:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        finally:
            _SESSION.reset(token)
            session.info[_DEPTH] = depth


@dataclasses.dataclass(slots=True)
class _Ran(t.Generic[R]):
    """A claimed run of a handler: its token, and how it ended."""

    token: str
    ttl: float
    result: R | None = None
    refusal: Conflict | Rejected | None = None
    outcome: OutcomeKind = "ok"
    completed: bool = False  # the "ok" record was written in the handler's transaction


def _app_state() -> _AppState:
    """Return the current app's Flask-Commands state; ``RuntimeError`` without the extension."""
    try:
        extension = current_app.extensions["commands"]
    except KeyError:
        raise RuntimeError(
            "Flask-Commands is not registered on the current app; call 'Commands(app)' or"
            " 'commands.init_app(app)' first."
        ) from None
    return t.cast("_AppState", extension._state())


def _celery_app(handler: Handler[t.Any, t.Any]) -> t.Any:
    """Return the Celery app to enqueue with; ``RuntimeError`` when ``init_celery`` made none."""
    fix = "call flask_commands.celery.init_celery(app) first."
    if current_app:
        celery_app = current_app.extensions.get("celery")
        where = f"the Flask app {current_app.name!r}"
    else:
        # Not imported here (handler.py works without Celery): if Celery was never imported, no
        # Celery app exists to send with.
        celery = sys.modules.get("celery")
        celery_app = celery.current_app._get_current_object() if celery is not None else None
        where = "Celery's current app (there is no app context)"
    if celery_app is None or _JOB_TASK not in celery_app.tasks:
        raise RuntimeError(
            f"handler {handler.__name__!r} cannot enqueue: {where} has no Celery app with the task"
            f" {_JOB_TASK!r}; {fix}"
        )
    return celery_app


def _fingerprint(cmd: Command) -> str:
    """Hash of the command type and its values, without ``id`` and ``issued_at``."""
    values = cmd.to_dict()
    del values["id"], values["issued_at"]
    return fingerprint(type_name(type(cmd)), values)


def _refusal_response(e: Conflict | Rejected) -> StoredResponse:
    """The problem+json response a refusal is stored as, so any later replay can show it."""
    status = 409 if isinstance(e, Conflict) else 422
    title = e.__class__.__name__
    body = {"type": "about:blank", "title": title, "status": status, "detail": e.message, "code": e.code}
    headers = [("Content-Type", "application/problem+json")]
    return StoredResponse(status, headers, json.dumps(body).encode())


def _refusal_from(response: StoredResponse) -> Conflict | Rejected:
    """Rebuild the ``Conflict`` or ``Rejected`` a stored refusal response stands for."""
    try:
        body = json.loads(response.body)
        message, code = str(body["detail"]), str(body["code"])
    except (ValueError, KeyError, TypeError):
        message, code = "This command was refused earlier.", None
    return Conflict(message, code=code) if response.status == 409 else Rejected(message, code=code)


def handler(
    command: type[C],
    *,
    transaction: Transaction | None = None,
    queue: str | None = None,
    max_attempts: int = 5,
    backoff: float = 1.0,
) -> t.Callable[[t.Callable[[C], R]], Handler[C, R]]:
    """Declare the decorated function as the handler of ``command``.

    :param command: the command class it takes (subclasses are accepted too).
    :param transaction: a SQLAlchemy ``Session``/``scoped_session`` (committed on success, rolled
        back on any exception, a savepoint when nested), or a callable returning a context manager.
    :param queue: the Celery queue of its background jobs; the app's default queue when ``None``.
    :param max_attempts: how many times a background job runs at most, the first run included.
    :param backoff: the base delay of retries in seconds: after its n-th run fails, a job waits a
        random time between 0 and ``min(600, backoff * 2 ** (n - 1))`` seconds (full jitter).
    """
    if not (isinstance(command, type) and issubclass(command, Command)):
        raise TypeError(f"handler() takes a Command subclass, not {command!r}.")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts!r}.")
    if not backoff >= 0:
        raise ValueError(f"backoff must be a number of seconds, 0 or more, not {backoff!r}.")

    def decorate(func: t.Callable[[C], R]) -> Handler[C, R]:
        wrapped = Handler(
            command, func, transaction=transaction, queue=queue, max_attempts=max_attempts, backoff=backoff
        )
        _registry[wrapped.name] = wrapped
        return wrapped

    return decorate
