"""Tests for flask_commands.signals: what is sent when, receiver isolation, and log_to()."""

from __future__ import annotations

import gc
import logging
import re
import typing as t

import flask
import pytest
from blinker import NamedSignal

from flask_commands import Command
from flask_commands import CommandInvalid
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import handler
from flask_commands import signals


class AddTodo(Command):
    title: str
    fail: str = ""  # "", "conflict", "rejected" or "fault": how the handler ends


class EditTodo(Command):
    title: str


CONFLICT = Conflict("A todo with that title exists.", code="duplicate_title")
REJECTED = Rejected("Todos cannot be added on Sundays.")
FAULT = RuntimeError("the disk is full")


@handler(AddTodo)
def add_todo(cmd: AddTodo) -> str:
    if cmd.fail == "conflict":
        raise CONFLICT
    if cmd.fail == "rejected":
        raise REJECTED
    if cmd.fail == "fault":
        raise FAULT
    return f"added {cmd.title}"


SIGNALS = {
    "build_started": signals.build_started,
    "build_finished": signals.build_finished,
    "handle_started": signals.handle_started,
    "handle_finished": signals.handle_finished,
    "handle_failed": signals.handle_failed,
    "replayed": signals.replayed,
}


class Sent(t.NamedTuple):
    name: str
    sender: t.Any
    kwargs: dict[str, t.Any]


@pytest.fixture
def sent() -> t.Iterator[list[Sent]]:
    """Record every signal sent during the test, in order."""
    record: list[Sent] = []
    receivers = []
    for name, signal in SIGNALS.items():

        def receive(sender: t.Any, *, _name: str = name, **kwargs: t.Any) -> None:
            record.append(Sent(_name, sender, kwargs))

        signal.connect(receive, weak=False)
        receivers.append((signal, receive))
    yield record
    for signal, receive in receivers:
        signal.disconnect(receive)


def without_duration(entry: Sent) -> tuple[str, t.Any, dict[str, t.Any]]:
    """The entry with its ``duration`` checked (a float, 0 or more) and dropped."""
    kwargs = dict(entry.kwargs)
    if "duration" in kwargs:
        duration = kwargs.pop("duration")
        assert isinstance(duration, float)
        assert duration >= 0
        kwargs["duration"] = "<float>"
    return entry.name, entry.sender, kwargs


# The module.


def test_signals_names() -> None:
    assert {name: signal.name for name, signal in SIGNALS.items()} == {
        "build_started": "build-started",
        "build_finished": "build-finished",
        "handle_started": "handle-started",
        "handle_finished": "handle-finished",
        "handle_failed": "handle-failed",
        "replayed": "replayed",
    }


def test_signals_are_named_signals() -> None:
    assert all(isinstance(signal, NamedSignal) for signal in SIGNALS.values())


def test_signals_private_namespace() -> None:
    assert signals.build_started is not __import__("blinker").signal("build-started")


# What is sent, in which order, with which keyword arguments.


def test_build_ok(sent: list[Sent]) -> None:
    data = {"title": "Milk"}
    cmd = AddTodo.build(data)
    assert [without_duration(s) for s in sent] == [
        ("build_started", AddTodo, {"data": data}),
        ("build_finished", AddTodo, {"command": cmd, "duration": "<float>"}),
    ]
    assert sent[0].kwargs["data"] is data


def test_build_invalid(sent: list[Sent]) -> None:
    data = {"title": ""}
    with pytest.raises(CommandInvalid):
        AddTodo.build(data)
    assert [without_duration(s) for s in sent] == [
        ("build_started", AddTodo, {"data": data}),
        (
            "build_finished",
            AddTodo,
            {"errors": {"title": ["This field is required."]}, "duration": "<float>"},
        ),
    ]


def test_handle_ok(sent: list[Sent]) -> None:
    cmd = AddTodo(title="Milk")
    assert add_todo(cmd) == "added Milk"
    assert [without_duration(s) for s in sent] == [
        ("handle_started", add_todo, {"command": cmd}),
        ("handle_finished", add_todo, {"command": cmd, "result": "added Milk", "duration": "<float>"}),
    ]


def test_handle_conflict(sent: list[Sent]) -> None:
    cmd = AddTodo(title="Milk", fail="conflict")
    with pytest.raises(Conflict):
        add_todo(cmd)
    assert [without_duration(s) for s in sent] == [
        ("handle_started", add_todo, {"command": cmd}),
        ("handle_finished", add_todo, {"command": cmd, "conflict": CONFLICT, "duration": "<float>"}),
    ]


def test_handle_rejected(sent: list[Sent]) -> None:
    cmd = AddTodo(title="Milk", fail="rejected")
    with pytest.raises(Rejected):
        add_todo(cmd)
    assert [without_duration(s) for s in sent] == [
        ("handle_started", add_todo, {"command": cmd}),
        ("handle_finished", add_todo, {"command": cmd, "rejected": REJECTED, "duration": "<float>"}),
    ]


def test_handle_failed(sent: list[Sent]) -> None:
    cmd = AddTodo(title="Milk", fail="fault")
    with pytest.raises(RuntimeError):
        add_todo(cmd)
    assert [without_duration(s) for s in sent] == [
        ("handle_started", add_todo, {"command": cmd}),
        ("handle_failed", add_todo, {"command": cmd, "exception": FAULT, "duration": "<float>"}),
    ]


def test_build_then_handle(sent: list[Sent]) -> None:
    add_todo(AddTodo.build({"title": "Milk"}))
    assert [s.name for s in sent] == ["build_started", "build_finished", "handle_started", "handle_finished"]


def test_handle_wrong_type_sends_nothing(sent: list[Sent]) -> None:
    with pytest.raises(TypeError):
        add_todo(EditTodo(title="Milk"))  # type: ignore[arg-type]
    assert sent == []


def test_build_not_a_mapping_sends_no_finish(sent: list[Sent]) -> None:
    with pytest.raises(TypeError):
        AddTodo.build(["title"])  # type: ignore[arg-type]
    assert [s.name for s in sent if s.name == "build_finished"] == []


def test_replayed(sent: list[Sent]) -> None:
    app = flask.Flask(__name__)
    Commands(app)
    cmd = AddTodo(title="Milk")
    with app.app_context():
        assert add_todo.handle(cmd, key="k-1") == "added Milk"
        del sent[:]
        assert add_todo.handle(cmd, key="k-1") is None
    assert [without_duration(s) for s in sent] == [("replayed", add_todo, {"command": cmd, "key": "k-1"})]


# Receivers: filtering by sender, and isolation.


def test_receiver_for_sender_only() -> None:
    received: list[t.Any] = []

    def receive(sender: t.Any, **kwargs: t.Any) -> None:
        received.append(sender)

    with signals.build_finished.connected_to(receive, sender=EditTodo):
        AddTodo.build({"title": "Milk"})
        EditTodo.build({"title": "Milk"})
    assert received == [EditTodo]


def test_receiver_for_handler_only() -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    received: list[t.Any] = []

    def receive(sender: t.Any, **kwargs: t.Any) -> None:
        received.append(sender)

    with signals.handle_started.connected_to(receive, sender=edit_todo):
        add_todo(AddTodo(title="Milk"))
        edit_todo(EditTodo(title="Milk"))
    assert received == [edit_todo]


def _raise(sender: t.Any, **kwargs: t.Any) -> None:
    raise ValueError("the metrics exporter is down")


def test_raising_receiver_logged(caplog: pytest.LogCaptureFixture) -> None:
    with signals.build_started.connected_to(_raise):
        AddTodo.build({"title": "Milk"})
    [record] = caplog.records
    assert (record.name, record.levelno, record.getMessage()) == (
        "flask_commands",
        logging.ERROR,
        "A receiver of the 'build-started' signal raised; it was skipped.",
    )
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "the metrics exporter is down"


def test_raising_receiver_build_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with signals.build_started.connected_to(_raise), signals.build_finished.connected_to(_raise):
        cmd = AddTodo.build({"title": "Milk"})
    assert cmd.title == "Milk"
    assert len(caplog.records) == 2


def test_raising_receiver_invalid_still_invalid(caplog: pytest.LogCaptureFixture) -> None:
    with signals.build_finished.connected_to(_raise), pytest.raises(CommandInvalid) as exc_info:
        AddTodo.build({})
    assert exc_info.value.errors == {"title": ["This field is required."]}
    # The invalid build was sent, and the receiver's error logged rather than raised.
    assert [r.getMessage() for r in caplog.records] == [
        "A receiver of the 'build-finished' signal raised; it was skipped."
    ]


def test_raising_receiver_handle_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with signals.handle_started.connected_to(_raise), signals.handle_finished.connected_to(_raise):
        assert add_todo(AddTodo(title="Milk")) == "added Milk"
    assert [r.getMessage() for r in caplog.records] == [
        "A receiver of the 'handle-started' signal raised; it was skipped.",
        "A receiver of the 'handle-finished' signal raised; it was skipped.",
    ]


def test_raising_receiver_keeps_handler_exception(caplog: pytest.LogCaptureFixture) -> None:
    received: list[BaseException] = []

    def record(sender: t.Any, **kwargs: t.Any) -> None:
        received.append(kwargs["exception"])

    with (
        signals.handle_failed.connected_to(_raise),
        signals.handle_failed.connected_to(record),
        pytest.raises(RuntimeError) as exc_info,
    ):
        add_todo(AddTodo(title="Milk", fail="fault"))
    assert exc_info.value is FAULT
    assert received == [FAULT]  # handle_failed was sent with the handler's own exception
    assert [r.getMessage() for r in caplog.records] == [
        "A receiver of the 'handle-failed' signal raised; it was skipped."
    ]


def test_raising_receiver_later_receivers_run(caplog: pytest.LogCaptureFixture) -> None:
    received: list[str] = []

    def first(sender: t.Any, **kwargs: t.Any) -> None:
        received.append("first")

    def last(sender: t.Any, **kwargs: t.Any) -> None:
        received.append("last")

    with (
        signals.build_started.connected_to(first),
        signals.build_started.connected_to(_raise),
        signals.build_started.connected_to(last),
    ):
        AddTodo.build({"title": "Milk"})
    assert sorted(received) == ["first", "last"]
    assert len(caplog.records) == 1


def test_raising_receiver_base_exception_propagates() -> None:
    # Only Exception is isolated: KeyboardInterrupt and SystemExit still stop the process.
    def interrupt(sender: t.Any, **kwargs: t.Any) -> None:
        raise KeyboardInterrupt

    with signals.build_started.connected_to(interrupt), pytest.raises(KeyboardInterrupt):
        AddTodo.build({"title": "Milk"})


def test_no_receivers_send_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without receivers, build and handle never reach _send: they check ``receivers`` first, so
    # an unobserved command pays for no timing or keyword arguments.
    for signal in SIGNALS.values():  # whatever other tests or plugins connected
        monkeypatch.setattr(signal, "receivers", {})

    def send(*args: t.Any, **kwargs: t.Any) -> None:
        raise AssertionError("_send was called for a signal without receivers")

    monkeypatch.setattr(signals, "_send", send)
    cmd = AddTodo.build({"title": "Milk"})
    assert add_todo(cmd) == "added Milk"
    with pytest.raises(CommandInvalid):
        AddTodo.build({})
    with pytest.raises(Conflict):
        add_todo(AddTodo(title="Milk", fail="conflict"))
    with pytest.raises(RuntimeError):
        add_todo(AddTodo(title="Milk", fail="fault"))


def test_send_muted() -> None:
    # blinker's documented way to silence a signal in tests.
    received: list[t.Any] = []

    def receive(sender: t.Any, **kwargs: t.Any) -> None:
        received.append(sender)

    with signals.build_started.connected_to(receive), signals.build_started.muted():
        AddTodo.build({"title": "Milk"})
    assert received == []


def test_send_no_receivers_returns_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # _send must not even look up receivers for a signal that has none.
    def receivers_for(sender: t.Any) -> t.Any:
        raise AssertionError("receivers were looked up")

    monkeypatch.setattr(signals.build_started, "receivers", {})
    monkeypatch.setattr(signals.build_started, "receivers_for", receivers_for)
    signals._send(signals.build_started, AddTodo, data={})


def test_send_reaches_the_receivers_blinker_would() -> None:
    # _send calls each receiver itself (to log and skip one that raises); whatever the
    # connections, it must call those blinker's own send() calls.
    class Other(Command):
        title: str

    signal = NamedSignal("test-dispatch")
    called: list[str] = []

    def receiver(name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, **kwargs: t.Any) -> None:
            called.append(name)

        return receive

    def both(sender: t.Any) -> tuple[list[str], list[str]]:
        del called[:]
        signals._send(signal, sender)
        ours = sorted(called)
        del called[:]
        signal.send(sender)
        return ours, sorted(called)

    any_sender, only_add, only_other = receiver("any"), receiver("add"), receiver("other")
    assert both(AddTodo) == ([], [])
    signal.connect(any_sender, weak=False)
    assert both(AddTodo) == (["any"], ["any"])
    signal.connect(only_add, sender=AddTodo, weak=False)
    assert both(AddTodo) == (["add", "any"], ["add", "any"])
    assert both(Other) == (["any"], ["any"])
    signal.connect(only_other, sender=Other, weak=False)
    signal.disconnect(only_add)  # leaves AddTodo's bucket empty
    assert both(AddTodo) == (["any"], ["any"])
    assert both(Other) == (["any", "other"], ["any", "other"])
    signal.disconnect(any_sender)
    assert both(AddTodo) == ([], [])
    assert both(Other) == (["other"], ["other"])


def test_send_skips_collected_weak_receiver() -> None:
    signal = NamedSignal("test-weak")
    called: list[str] = []

    class Receiver:
        def __call__(self, sender: t.Any, **kwargs: t.Any) -> None:
            called.append("weak")

    receiver = Receiver()
    signal.connect(receiver)  # weakly
    signals._send(signal, AddTodo)
    assert called == ["weak"]
    del receiver
    gc.collect()
    signals._send(signal, AddTodo)
    assert called == ["weak"]
    assert not signal.receivers


def test_send_receiver_disconnects_another() -> None:
    # A receiver that changes the signal's connections does not break the send in progress, and
    # one it disconnected is not called, as with blinker's send().
    signal = NamedSignal("test-disconnect")
    called: list[str] = []

    def receiver(name: str) -> t.Callable[..., None]:
        def receive(sender: t.Any, **kwargs: t.Any) -> None:
            called.append(name)
            signal.disconnect(first)
            signal.disconnect(second)
            signal.connect(third, weak=False)

        return receive

    first, second = receiver("first"), receiver("second")

    def third(sender: t.Any, **kwargs: t.Any) -> None:
        called.append("third")

    signal.connect(first, weak=False)
    signal.connect(second, weak=False)
    signals._send(signal, AddTodo)
    assert called in (["first"], ["second"])  # whichever ran first disconnected the other
    del called[:]
    signals._send(signal, AddTodo)
    assert called == ["third"]


# log_to().


@pytest.fixture
def log_to() -> t.Iterator[t.Callable[..., t.Callable[[], None]]]:
    """signals.log_to, disconnected at the end of the test whatever happens."""
    stops: list[t.Callable[[], None]] = []

    def connect(*args: t.Any, **kwargs: t.Any) -> t.Callable[[], None]:
        stop = signals.log_to(*args, **kwargs)
        stops.append(stop)
        return stop

    yield connect
    for stop in stops:
        stop()


def test_log_to_each_signal(
    log_to: t.Callable[..., t.Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_commands")
    log_to()
    cmd = AddTodo.build({"title": "Milk"})
    add_todo(cmd)
    with pytest.raises(Conflict):
        add_todo(AddTodo(title="Milk", fail="conflict"))
    with pytest.raises(RuntimeError):
        add_todo(AddTodo(title="Milk", fail="fault"))
    messages = [r.getMessage() for r in caplog.records]
    patterns = [
        r"build-started AddTodo data=\{'title': 'Milk'\}",
        r"build-finished AddTodo command=AddTodo\(id=UUID\('[0-9a-f-]{36}'\), .*, title='Milk', fail=''\)"
        r" duration=\d+\.\d{3}ms",
        r"handle-started add_todo command=AddTodo\(.*\)",
        r"handle-finished add_todo command=AddTodo\(.*\) result='added Milk' duration=\d+\.\d{3}ms",
        r"handle-started add_todo command=AddTodo\(.*\)",
        r"handle-finished add_todo command=AddTodo\(.*\) duration=\d+\.\d{3}ms"
        r" conflict=Conflict\('A todo with that title exists\.'\)",
        r"handle-started add_todo command=AddTodo\(.*\)",
        r"handle-failed add_todo command=AddTodo\(.*\) exception=RuntimeError\('the disk is full'\)"
        r" duration=\d+\.\d{3}ms",
    ]
    assert len(messages) == len(patterns), messages
    for message, pattern in zip(messages, patterns, strict=True):
        assert re.fullmatch(pattern, message), message


def test_log_to_records(
    log_to: t.Callable[..., t.Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_commands")
    log_to()
    AddTodo.build({"title": "Milk"})
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("flask_commands", logging.INFO),
        ("flask_commands", logging.INFO),
    ]


def test_log_to_logger_and_level(
    log_to: t.Callable[..., t.Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.commands")
    log_to(logging.getLogger("app.commands"), logging.DEBUG)
    AddTodo.build({"title": "Milk"})
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("app.commands", logging.DEBUG),
        ("app.commands", logging.DEBUG),
    ]


def test_log_to_level_disabled(
    log_to: t.Callable[..., t.Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_commands")
    log_to()
    AddTodo.build({"title": "Milk"})
    assert caplog.records == []


def test_log_to_stop_disconnects(
    log_to: t.Callable[..., t.Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_commands")
    # Other modules (the demo's activity log) may have receivers of their own connected.
    before = {name: dict(signal.receivers) for name, signal in SIGNALS.items()}
    stop = log_to()
    stop()
    AddTodo.build({"title": "Milk"})
    add_todo(AddTodo(title="Milk"))
    assert caplog.records == []
    assert {name: dict(signal.receivers) for name, signal in SIGNALS.items()} == before


def test_log_to_held_strongly(
    log_to: t.Callable[..., t.Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    import gc

    caplog.set_level(logging.INFO, logger="flask_commands")
    log_to()
    gc.collect()
    AddTodo.build({"title": "Milk"})
    assert len(caplog.records) == 2


# key_refused: the idempotency store refused a keyed run, so the handler did not run.


@pytest.fixture
def refused() -> t.Iterator[list[Sent]]:
    """Record the key_refused signals and the handler runs sent during the test, in order."""
    record: list[Sent] = []

    def receive(sender: t.Any, **kwargs: t.Any) -> None:
        record.append(Sent("key_refused", sender, kwargs))

    def started(sender: t.Any, **kwargs: t.Any) -> None:
        record.append(Sent("handle_started", sender, kwargs))

    signals.key_refused.connect(receive)
    signals.handle_started.connect(started)
    yield record
    signals.key_refused.disconnect(receive)
    signals.handle_started.disconnect(started)


def test_key_refused_name() -> None:
    assert signals.key_refused.name == "key-refused"
    assert signals.key_refused in signals._ALL


def test_key_refused_mismatch(refused: list[Sent]) -> None:
    app = flask.Flask(__name__)
    Commands(app)
    other = AddTodo(title="Tea")
    with app.app_context():
        add_todo.handle(AddTodo(title="Milk"), key="k-1")
        del refused[:]
        with pytest.raises(Rejected, match="idempotency key"):
            add_todo.handle(other, key="k-1")
    assert refused == [Sent("key_refused", add_todo, {"command": other, "key": "k-1", "reason": "mismatch"})]


def test_key_refused_in_progress(refused: list[Sent]) -> None:
    app = flask.Flask(__name__)
    Commands(app)
    inner: list[BaseException] = []

    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        # This run holds the key "k-2" while it runs: the same key again is in progress.
        try:
            edit_todo.handle(cmd, key="k-2")
        except Conflict as e:
            inner.append(e)

    cmd = EditTodo(title="Milk")
    with app.app_context():
        edit_todo.handle(cmd, key="k-2")
    (e,) = inner
    assert e.code == "in_progress"
    assert refused == [
        Sent("handle_started", edit_todo, {"command": cmd}),
        Sent("key_refused", edit_todo, {"command": cmd, "key": "k-2", "reason": "in_progress"}),
    ]
