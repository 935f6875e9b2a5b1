"""Signals sent while commands are built and handled, for logs, metrics and tests.

Connect with blinker as usual (``build_finished.connect(receiver, sender=AddTodo)``). A signal
with no receivers costs one attribute check. A receiver that raises is logged on the
``flask_commands`` logger and skipped: it never breaks the command.
"""

from __future__ import annotations

import logging
import typing as t
import weakref

from blinker import NamedSignal
from blinker import Namespace

try:  # blinker's bookkeeping, read by _send; without it, _send asks receivers_for()
    from blinker._utilities import make_id
    from blinker.base import ANY_ID
except ImportError:  # pragma: no cover
    make_id = ANY_ID = None  # type: ignore[assignment]

_signals = Namespace()
_log = logging.getLogger("flask_commands")

build_started = _signals.signal("build-started")
"""Sent before input is validated. Sender: the command class. Keyword arguments: ``data``."""

build_finished = _signals.signal("build-finished")
"""Sent after input was validated. Sender: the command class. Keyword arguments: ``command``
(when it built) or ``errors`` (``{field: [message, ...]}``), and ``duration`` in seconds."""

handle_started = _signals.signal("handle-started")
"""Sent before a handler runs. Sender: the handler. Keyword arguments: ``command``."""

handle_finished = _signals.signal("handle-finished")
"""Sent when a handler returned or refused. Sender: the handler. Keyword arguments: ``command``,
one of ``result``, ``conflict`` or ``rejected`` (the exception), and ``duration`` in seconds."""

handle_failed = _signals.signal("handle-failed")
"""Sent when a handler raised a fault. Sender: the handler. Keyword arguments: ``command``,
``exception`` and ``duration`` in seconds."""

replayed = _signals.signal("replayed")
"""Sent when a stored outcome is replayed instead of running the handler again. Sender: the
handler. Keyword arguments: ``command`` and ``key`` (the idempotency key as given)."""

key_refused = _signals.signal("key-refused")
"""Sent when the idempotency store refuses a keyed run, so the handler does not run. Sender: the
handler. Keyword arguments: ``command`` (``None`` over HTTP, where the refusal comes before the
command is built), ``key`` (as given) and ``reason``: ``"in_progress"`` (another run holds the key:
409 over HTTP, ``KeyInProgress`` from ``handle()``) or ``"mismatch"`` (the key was used with other
values: 422, ``KeyReused``)."""

_ALL = (
    build_started,
    build_finished,
    handle_started,
    handle_finished,
    handle_failed,
    replayed,
    key_refused,
)


def _send(signal: NamedSignal, sender: t.Any, /, **kwargs: t.Any) -> None:
    """Send ``signal`` to each receiver in turn, logging and skipping any receiver that raises."""
    # blinker lets a receiver's exception escape and skips the receivers after it; we call each
    # receiver ourselves so that a faulty metrics exporter cannot fail a command; so we also
    # honour blinker's muted() (documented for tests), which only send() checks.
    receivers = signal.receivers
    if not receivers or signal.is_muted:
        return
    by_sender = getattr(signal, "_by_sender", None)
    if by_sender is None or make_id is None or (len(by_sender) > 1 and by_sender.get(make_id(sender))):
        for receiver in signal.receivers_for(sender):  # some receivers listen to this sender only
            _call(signal, receiver, sender, kwargs)
        return
    # Every receiver for this sender listens to any sender (instrument(), log_to()): read them from
    # that one bucket, sparing the generator, the sender's id and the copy of the set that
    # receivers_for() makes. Each is looked up when its turn comes, as blinker does: one that an
    # earlier receiver disconnected is skipped.
    for receiver_id in tuple(by_sender.get(ANY_ID, ())):
        found: t.Any = receivers.get(receiver_id)
        if isinstance(found, weakref.ref):
            found = found()  # None once collected: its weakref callback disconnects it
        if found is not None:
            try:
                found(sender, **kwargs)
            except Exception:
                _log.exception("A receiver of the %r signal raised; it was skipped.", signal.name)


def _call(
    signal: NamedSignal, receiver: t.Callable[..., t.Any], sender: t.Any, kwargs: dict[str, t.Any]
) -> None:
    try:
        receiver(sender, **kwargs)
    except Exception:
        _log.exception("A receiver of the %r signal raised; it was skipped.", signal.name)


def _describe(value: t.Any) -> str:
    if isinstance(value, float):
        return f"{value * 1000:.3f}ms"
    if isinstance(value, BaseException):
        return f"{type(value).__name__}({str(value)!r})"
    return repr(value)


def log_to(logger: logging.Logger | None = None, level: int = logging.INFO) -> t.Callable[[], None]:
    """Log every signal to ``logger`` and return a function that stops it.

    The receivers are held strongly (``weak=False``), so they live until the returned function is
    called. Each record reads ``<signal> <sender> key=value ...``.

    :param logger: the ``flask_commands`` logger by default.
    :param level: the level of the records, ``logging.INFO`` by default.
    """
    target = logger if logger is not None else _log
    connected: list[tuple[NamedSignal, t.Callable[..., None]]] = []
    for signal in _ALL:

        def receive(sender: t.Any, *, _name: str = signal.name, **kwargs: t.Any) -> None:
            if target.isEnabledFor(level):
                details = " ".join(f"{key}={_describe(value)}" for key, value in kwargs.items())
                target.log(level, "%s %s %s", _name, getattr(sender, "__qualname__", sender), details)

        signal.connect(receive, weak=False)
        connected.append((signal, receive))

    def stop() -> None:
        for signal, receive in connected:
            signal.disconnect(receive)

    return stop
