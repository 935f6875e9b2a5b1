"""Tests for flask_commands.handler: the unit of work on real SQLite, type checks, the registry."""

from __future__ import annotations

import contextlib
import typing as t

import flask
import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from flask_commands import Command
from flask_commands import Conflict
from flask_commands import Handler
from flask_commands import Rejected
from flask_commands import handler
from flask_commands.handler import _registry


class AddTodo(Command):
    title: str
    fail: str = ""  # "", "conflict", "rejected" or "fault": how the handler ends


class AddUrgentTodo(AddTodo):
    reason: str = ""


class EditTodo(Command):
    title: str


class Store(t.NamedTuple):
    db: SQLAlchemy
    model: t.Any
    add_todo: Handler[AddTodo, t.Any]

    def committed(self) -> list[str]:
        """Titles committed to the database, read on a connection of a separate engine."""
        engine = sa.create_engine(self.db.engine.url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text("SELECT title FROM todo ORDER BY id")).scalars())
        finally:
            engine.dispose()


def _end(cmd: AddTodo) -> None:
    if cmd.fail == "conflict":
        raise Conflict("A todo with that title exists.", code="duplicate_title")
    if cmd.fail == "rejected":
        raise Rejected("Todos cannot be added on Sundays.")
    if cmd.fail == "fault":
        raise RuntimeError("the disk is full")


@pytest.fixture
def store(db: SQLAlchemy) -> Store:
    class Todo(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "todo"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]

    db.create_all()

    @handler(AddTodo, transaction=db.session)
    def add_todo(cmd: AddTodo) -> t.Any:
        todo = Todo(title=cmd.title)
        db.session.add(todo)
        db.session.flush()  # the row is written in the transaction before the handler ends
        _end(cmd)
        return todo

    return Store(db, Todo, add_todo)


# The unit of work.


def test_call_returns_result(store: Store) -> None:
    todo = store.add_todo(AddTodo(title="Milk"))
    assert isinstance(todo, store.model)
    assert todo.title == "Milk"


def test_call_commits(store: Store) -> None:
    store.add_todo(AddTodo(title="Milk"))
    assert store.committed() == ["Milk"]


def test_call_commits_pending_work(store: Store) -> None:
    store.db.session.add(store.model(title="Pending"))
    store.add_todo(AddTodo(title="Milk"))
    assert store.committed() == ["Pending", "Milk"]


def test_call_conflict_rolls_back(store: Store) -> None:
    with pytest.raises(Conflict):
        store.add_todo(AddTodo(title="Milk", fail="conflict"))
    assert store.committed() == []


def test_call_rejected_rolls_back(store: Store) -> None:
    with pytest.raises(Rejected):
        store.add_todo(AddTodo(title="Milk", fail="rejected"))
    assert store.committed() == []


def test_call_fault_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError, match=r"^the disk is full$"):
        store.add_todo(AddTodo(title="Milk", fail="fault"))
    assert store.committed() == []


def test_call_fault_rolls_back_pending_work(store: Store) -> None:
    store.db.session.add(store.model(title="Pending"))
    with pytest.raises(RuntimeError):
        store.add_todo(AddTodo(title="Milk", fail="fault"))
    assert store.committed() == []


def test_call_session_usable_after_rollback(store: Store) -> None:
    with pytest.raises(Conflict):
        store.add_todo(AddTodo(title="Milk", fail="conflict"))
    store.add_todo(AddTodo(title="Eggs"))
    assert store.committed() == ["Eggs"]


def test_call_keyboard_interrupt_rolls_back(db: SQLAlchemy, store: Store) -> None:
    @handler(EditTodo, transaction=db.session)
    def interrupted(cmd: EditTodo) -> None:
        db.session.add(store.model(title=cmd.title))
        db.session.flush()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted(EditTodo(title="Milk"))
    assert store.committed() == []


def test_call_without_transaction() -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> str:
        return cmd.title.upper()

    assert edit_todo(EditTodo(title="milk")) == "MILK"


# Nested handlers: a savepoint.


@pytest.fixture
def outer(db: SQLAlchemy, store: Store) -> Handler[EditTodo, t.Any]:
    """A handler that writes, calls ``add_todo`` (a nested handler), and writes again."""

    @handler(EditTodo, transaction=db.session)
    def outer(cmd: EditTodo) -> list[str]:
        db.session.add(store.model(title="outer before"))
        caught = []
        try:
            store.add_todo(AddTodo(title="inner", fail=cmd.title))
        except (Conflict, Rejected, RuntimeError) as e:
            caught.append(type(e).__name__)
        db.session.add(store.model(title="outer after"))
        return caught

    return outer


def test_nested_success_commits_with_outer(store: Store, outer: Handler[EditTodo, t.Any]) -> None:
    assert outer(EditTodo(title="")) == []
    assert store.committed() == ["outer before", "inner", "outer after"]


def test_nested_conflict_keeps_outer_work(store: Store, outer: Handler[EditTodo, t.Any]) -> None:
    assert outer(EditTodo(title="conflict")) == ["Conflict"]
    assert store.committed() == ["outer before", "outer after"]


def test_nested_rejected_keeps_outer_work(store: Store, outer: Handler[EditTodo, t.Any]) -> None:
    assert outer(EditTodo(title="rejected")) == ["Rejected"]
    assert store.committed() == ["outer before", "outer after"]


def test_nested_fault_keeps_outer_work(store: Store, outer: Handler[EditTodo, t.Any]) -> None:
    assert outer(EditTodo(title="fault")) == ["RuntimeError"]
    assert store.committed() == ["outer before", "outer after"]


def test_nested_does_not_commit_alone(db: SQLAlchemy, store: Store) -> None:
    # The inner handler runs first in the transaction, so its SAVEPOINT is the first statement:
    # the outer's rollback must still undo it.
    @handler(EditTodo, transaction=db.session)
    def outer(cmd: EditTodo) -> None:
        store.add_todo(AddTodo(title="inner"))
        raise RuntimeError("the outer handler failed")

    with pytest.raises(RuntimeError, match=r"^the outer handler failed$"):
        outer(EditTodo(title="x"))
    assert store.committed() == []


def test_nested_uncaught_rolls_back_all(store: Store, db: SQLAlchemy) -> None:
    @handler(EditTodo, transaction=db.session)
    def outer(cmd: EditTodo) -> None:
        db.session.add(store.model(title="outer"))
        store.add_todo(AddTodo(title="inner", fail="conflict"))

    with pytest.raises(Conflict):
        outer(EditTodo(title="x"))
    assert store.committed() == []


def test_nested_depth_restored(store: Store, outer: Handler[EditTodo, t.Any]) -> None:
    outer(EditTodo(title="conflict"))
    store.add_todo(AddTodo(title="after"))  # a top-level call again: it commits on its own
    assert store.committed() == ["outer before", "outer after", "after"]


# A callable transaction.


def recording_transaction(log: list[str]) -> t.Callable[[], t.ContextManager[None]]:
    """A transaction callable that logs begin, commit and rollback into ``log``."""

    @contextlib.contextmanager
    def transaction() -> t.Iterator[None]:
        log.append("begin")
        try:
            yield
        except BaseException as e:
            log.append(f"rollback {type(e).__name__}")
            raise
        log.append("commit")

    return transaction


def test_transaction_callable_success() -> None:
    log: list[str] = []

    transaction = recording_transaction(log)

    @handler(EditTodo, transaction=transaction)
    def edit_todo(cmd: EditTodo) -> str:
        log.append(f"handle {cmd.title}")
        return "done"

    assert edit_todo(EditTodo(title="Milk")) == "done"
    assert log == ["begin", "handle Milk", "commit"]


@pytest.mark.parametrize("exception", [Conflict("taken"), Rejected("no"), ValueError("bad")], ids=repr)
def test_transaction_callable_exception(exception: Exception) -> None:
    log: list[str] = []

    transaction = recording_transaction(log)

    @handler(EditTodo, transaction=transaction)
    def edit_todo(cmd: EditTodo) -> None:
        raise exception

    with pytest.raises(type(exception)) as exc_info:
        edit_todo(EditTodo(title="Milk"))
    assert exc_info.value is exception
    assert log == ["begin", f"rollback {type(exception).__name__}"]


def test_transaction_callable_called_each_time() -> None:
    calls: list[int] = []

    def transaction() -> contextlib.nullcontext[None]:
        calls.append(1)
        return contextlib.nullcontext()

    @handler(EditTodo, transaction=transaction)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    edit_todo(EditTodo(title="a"))
    edit_todo(EditTodo(title="b"))
    assert len(calls) == 2


# The command type.


def test_call_wrong_command_type() -> None:
    @handler(AddTodo)
    def add_todo(cmd: AddTodo) -> None:
        pass

    with pytest.raises(TypeError) as exc_info:
        add_todo(EditTodo(title="Milk"))  # type: ignore[arg-type]
    assert exc_info.value.args == (
        "handler 'add_todo' takes AddTodo, not EditTodo; pass the command it was declared for.",
    )


def test_call_not_a_command() -> None:
    @handler(AddTodo)
    def add_todo(cmd: AddTodo) -> None:
        pass

    with pytest.raises(TypeError) as exc_info:
        add_todo({"title": "Milk"})  # type: ignore[arg-type]
    assert exc_info.value.args == (
        "handler 'add_todo' takes AddTodo, not dict; pass the command it was declared for.",
    )


def test_call_wrong_type_does_not_run() -> None:
    ran: list[Command] = []

    @handler(AddTodo)
    def add_todo(cmd: AddTodo) -> None:
        ran.append(cmd)

    with pytest.raises(TypeError):
        add_todo(EditTodo(title="Milk"))  # type: ignore[arg-type]
    assert ran == []


def test_call_subclass_accepted() -> None:
    @handler(AddTodo)
    def add_todo(cmd: AddTodo) -> str:
        return type(cmd).__name__

    assert add_todo(AddUrgentTodo(title="Milk", reason="empty fridge")) == "AddUrgentTodo"


def test_call_base_of_declared_refused() -> None:
    @handler(AddUrgentTodo)
    def add_urgent_todo(cmd: AddUrgentTodo) -> None:
        pass

    with pytest.raises(TypeError) as exc_info:
        add_urgent_todo(AddTodo(title="Milk"))  # type: ignore[arg-type]
    assert exc_info.value.args == (
        "handler 'add_urgent_todo' takes AddUrgentTodo, not AddTodo; pass the command it was declared for.",
    )


# handler() itself.


def test_handler_not_a_command() -> None:
    with pytest.raises(TypeError) as exc_info:
        handler(dict)  # type: ignore[type-var]
    assert exc_info.value.args == ("handler() takes a Command subclass, not <class 'dict'>.",)


def test_handler_command_instance() -> None:
    cmd = EditTodo(title="Milk")
    with pytest.raises(TypeError, match=r"^handler\(\) takes a Command subclass, not EditTodo\("):
        handler(cmd)  # type: ignore[arg-type]


def test_handler_command_base() -> None:
    # Command itself is a Command subclass by issubclass, and every command is an instance of it.
    @handler(Command)
    def any_command(cmd: Command) -> str:
        return type(cmd).__name__

    assert any_command(EditTodo(title="Milk")) == "EditTodo"


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_handler_max_attempts_below_one(max_attempts: int) -> None:
    with pytest.raises(ValueError, match=r"^max_attempts must be at least 1") as exc_info:
        handler(EditTodo, max_attempts=max_attempts)
    assert exc_info.value.args == (f"max_attempts must be at least 1, not {max_attempts!r}.",)


def test_handler_max_attempts_one() -> None:
    @handler(EditTodo, max_attempts=1)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    assert edit_todo.max_attempts == 1


def test_handler_defaults() -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    assert (edit_todo.command, edit_todo.transaction, edit_todo.queue, edit_todo.max_attempts) == (
        EditTodo,
        None,
        None,
        5,
    )


def test_handler_options() -> None:
    transaction = contextlib.nullcontext

    @handler(EditTodo, transaction=transaction, queue="slow", max_attempts=3)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    assert (edit_todo.transaction, edit_todo.queue, edit_todo.max_attempts) == (transaction, "slow", 3)


def test_handler_wraps_function() -> None:
    def edit_todo(cmd: EditTodo) -> None:
        """Edit a todo."""

    wrapped = handler(EditTodo)(edit_todo)
    assert (wrapped.__name__, wrapped.__qualname__, wrapped.__module__, wrapped.__doc__) == (
        "edit_todo",
        "test_handler_wraps_function.<locals>.edit_todo",
        __name__,
        "Edit a todo.",
    )
    assert wrapped.func is edit_todo


def test_handler_name() -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    assert edit_todo.name == f"{__name__}:test_handler_name.<locals>.edit_todo"


def test_handler_repr() -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    assert repr(edit_todo) == f"<handler {__name__}:test_handler_repr.<locals>.edit_todo for EditTodo>"


# The handler registry.


def test_registry_holds_handler() -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    assert _registry[edit_todo.name] is edit_todo


def test_registry_redeclared_replaces() -> None:
    def declare() -> Handler[EditTodo, None]:
        @handler(EditTodo)
        def edit_todo(cmd: EditTodo) -> None:
            pass

        return edit_todo

    declare()
    second = declare()
    assert _registry[second.name] is second


# handle() needs the extension.


def test_handle_without_extension(app: flask.Flask) -> None:
    @handler(EditTodo)
    def edit_todo(cmd: EditTodo) -> None:
        pass

    with app.app_context(), pytest.raises(RuntimeError) as exc_info:
        edit_todo.handle(EditTodo(title="Milk"))
    assert exc_info.value.args == (
        "Flask-Commands is not registered on this Flask app; call 'Commands(app)' or"
        " 'commands.init_app(app)' first.",
    )
