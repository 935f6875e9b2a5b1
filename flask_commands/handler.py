"""``@handler``: turn a command into a result inside a unit of work, and report it by signals."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
import typing as t

from flask import current_app

from . import _idempotent
from . import signals
from .command import Command
from .command import type_name
from .errors import Conflict
from .errors import Rejected

if t.TYPE_CHECKING:
    import datetime

    import sqlalchemy.orm

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
# The unit of work of a handler without a transaction: nothing to begin or end. One shared,
# stateless context manager costs a tenth of entering the generator-based _unit_of_work.
_NO_TRANSACTION: contextlib.nullcontext[None] = contextlib.nullcontext()


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
        return self.run(cmd)

    def handle(self, cmd: C, key: str | None = None) -> R | None:
        """Run the handler on ``cmd`` at most once per key, under the app's idempotency store.

        The first call with a key runs the handler and stores its outcome; later calls with the
        same key and the same command values replay it: they return ``None`` (the ``replayed``
        signal is sent) or raise the stored ``Conflict``/``Rejected`` again. A fault is not
        stored, so a retry runs the handler again.

        :param key: the idempotency key, ``str(cmd.id)`` by default; scoped by command type.
        :raises Conflict: the handler's conflict, or :class:`~flask_commands.errors.KeyInProgress`
            (code ``"in_progress"``) while another run holds the key.
        :raises Rejected: the handler's rejection, or :class:`~flask_commands.errors.KeyReused`
            (code ``"idempotency_key_reused"``) when the key was used with other values.
        :raises StoreUnavailable: the store's database cannot be reached.
        """
        self._check(cmd)
        return _idempotent.handle(self, cmd, key if key is not None else str(cmd.id))

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

    def run(
        self,
        cmd: C | t.Callable[[], C],
        *,
        claim: t.Callable[[t.Any], None] | None = None,
        finish: t.Callable[[t.Any, C, R], None] | None = None,
    ) -> R:
        """Run the handler in its unit of work, with hooks for the idempotency owner; return the result.

        ``claim(session)`` runs first inside the transaction (``session`` is ``None`` without a
        SQLAlchemy session); when it raises, the unit of work rolls back and no signal is sent.
        ``cmd`` may be a callable building the command, called after ``claim`` (so a replay is
        decided before the command is built). ``finish(session, cmd, result)`` runs after the
        handler, before the commit: what it writes commits with the handler's writes.

        :raises TypeError: the command is not of the handler's command type.
        """
        built = callable(cmd) and not isinstance(cmd, Command)
        if not built:
            self._check(cmd)
        started = False
        start = 0.0
        command: C | None = None
        try:
            unit = _NO_TRANSACTION if self.transaction is None else self._unit_of_work()
            with unit as session:
                if claim is not None:
                    claim(session)
                if built:
                    command = t.cast("t.Callable[[], C]", cmd)()
                    self._check(command)
                else:
                    command = t.cast(C, cmd)
                started = True
                if signals.handle_finished.receivers or signals.handle_failed.receivers:
                    start = time.perf_counter()
                if signals.handle_started.receivers:
                    signals._send(signals.handle_started, self, command=command)
                result = self.func(command)
                if finish is not None:
                    finish(session, command, result)
        except (Conflict, Rejected) as e:
            if started and signals.handle_finished.receivers:
                duration = time.perf_counter() - start
                kw = {e.outcome: e}
                signals._send(signals.handle_finished, self, command=command, duration=duration, **kw)
            raise
        except Exception as e:
            if started and signals.handle_failed.receivers:
                duration = time.perf_counter() - start
                signals._send(signals.handle_failed, self, command=command, exception=e, duration=duration)
            raise
        if signals.handle_finished.receivers:
            duration = time.perf_counter() - start
            signals._send(signals.handle_finished, self, command=command, result=result, duration=duration)
        return result

    @contextlib.contextmanager
    def _unit_of_work(self) -> t.Iterator[t.Any]:
        """Commit on success and roll back on any exception; nest as a savepoint inside another.

        Only for a handler with a transaction (``run`` enters ``_NO_TRANSACTION`` otherwise).
        """
        transaction = self.transaction
        assert transaction is not None
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
