"""The pytest plugin: the ``command_signals`` fixture and :func:`assert_invalid`.

Installed with the package (``pytest11`` entry point), so tests use them without imports::

    def test_add(command_signals):
        add_todo(AddTodo(title="Milk"))
        assert command_signals.names() == ["handle_started", "handle_finished"]
"""

from __future__ import annotations

import dataclasses
import typing as t

import pytest

from . import signals
from .command import Command
from .command import command_fields
from .errors import CommandInvalid

_NAMES = {
    signals.build_started: "build_started",
    signals.build_finished: "build_finished",
    signals.handle_started: "handle_started",
    signals.handle_finished: "handle_finished",
    signals.handle_failed: "handle_failed",
    signals.replayed: "replayed",
    signals.key_refused: "key_refused",
}


@dataclasses.dataclass(frozen=True)
class SentSignal:
    """One signal sent during a test: its name, sender and keyword arguments."""

    name: str
    sender: t.Any
    kwargs: dict[str, t.Any]


class SignalRecorder:
    """Records every Flask-Commands signal sent while it is connected."""

    def __init__(self) -> None:
        self.sent: list[SentSignal] = []

    def names(self) -> list[str]:
        """Return the names of the signals sent, in order."""
        return [s.name for s in self.sent]

    def of(self, name: str) -> list[SentSignal]:
        """Return the signals named ``name`` (``"handle_finished"``), in order."""
        if name not in _NAMES.values():
            valid = sorted(_NAMES.values())
            raise ValueError(f"{name!r} is not a Flask-Commands signal; use one of {valid}.")
        return [s for s in self.sent if s.name == name]

    def clear(self) -> None:
        """Forget the signals recorded so far, to check only those sent after this call."""
        self.sent.clear()

    def _receiver(self, name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, **kwargs: t.Any) -> None:
            self.sent.append(SentSignal(name, sender, kwargs))

        return receive


@pytest.fixture
def command_signals() -> t.Iterator[SignalRecorder]:
    """Record every Flask-Commands signal sent during the test."""
    recorder = SignalRecorder()
    connected = [(signal, recorder._receiver(name)) for signal, name in _NAMES.items()]
    for signal, receive in connected:
        signal.connect(receive, weak=False)
    try:
        yield recorder
    finally:
        for signal, receive in connected:
            signal.disconnect(receive)


def assert_invalid(
    command: type[Command],
    data: t.Mapping[str, t.Any],
    *,
    field: str,
    message: str | None = None,
    **trusted: t.Any,
) -> CommandInvalid:
    """Assert that ``command.build(data, **trusted)`` fails with an error on ``field``.

    :param field: the field expected to be invalid: ``"id"`` or a field that input sets.
    :param message: when given, one of the field's messages must equal it.
    :returns: the ``CommandInvalid`` raised, for further checks.
    :raises ValueError: when ``field`` is not a field that input can set (a typo, a trusted field).
    """
    __tracebackhide__ = True
    settable = ["id", *(info.name for info in command_fields(command) if not info.trusted)]
    if field not in settable:
        names = ", ".join(repr(name) for name in settable)
        raise ValueError(f"{command.__name__} has no field {field!r} that input can set; use one of {names}.")
    try:
        built = command.build(data, **trusted)
    except CommandInvalid as e:
        error = e
    else:
        pytest.fail(f"{command.__name__}.build({data!r}) was valid: {built!r}")
    # Failing outside the except clause keeps the CommandInvalid traceback out of the report.
    if field not in error.errors:
        pytest.fail(f"{command.__name__} was invalid, but not on {field!r}: {error.errors!r}")
    if message is not None and message not in error.errors[field]:
        pytest.fail(f"{command.__name__}.{field} errors are {error.errors[field]!r}, not {message!r}")
    return error
