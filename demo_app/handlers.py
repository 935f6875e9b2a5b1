"""The handlers: each turns one command into changes to the todos, or a conflict.

Every handler returns :class:`Changes`, which says what changed in words the activity log keeps
(``TitleChanged``, ``TodoCompleted``, ...); :mod:`demo_app.activity` records them from the
``handle_finished`` signal.
"""

from __future__ import annotations

import dataclasses
import typing as t
import uuid

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import handler

from .commands import AddTodo
from .commands import ClearCompleted
from .commands import ClearTodos
from .commands import DeleteTodo
from .commands import EditTodo
from .commands import RestoreTodo
from .commands import RunClearCompleted
from .commands import SetCompleted
from .commands import UpdateTodo
from .models import Job
from .models import Todo
from .models import db
from .models import live_todo
from .models import utcnow

STALE = "This todo was changed elsewhere."
GONE = "This todo was deleted elsewhere."

ChangeKind = t.Literal[
    "TodoAdded",
    "TitleChanged",
    "TodoCompleted",
    "TodoReopened",
    "OrderChanged",
    "TodoDeleted",
    "TodoRestored",
    "CompletedCleared",
    "TodosCleared",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One meaningful change, as the activity log shows it."""

    kind: ChangeKind
    todo_id: int | None = None
    title: str = ""
    detail: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Changes:
    """What a handler did: the todo it acted on (if one) and the changes, in order."""

    todo: Todo | None
    changes: tuple[Change, ...] = ()


_UNCHANGED: t.Any = object()


def _live(todo_id: int) -> Todo:
    """The todo, or ``Conflict`` when it does not exist or was deleted."""
    todo = live_todo(todo_id)
    if todo is None:
        raise Conflict(GONE, code="todo_deleted")
    return todo


def _check_version(todo: Todo, version: int | None) -> None:
    if version is not None and version != todo.version:
        # The current state: the board's edit form shows it next to the user's own text.
        current = {
            "title": todo.title,
            "completed": todo.completed,
            "order": todo.order,
            "version": todo.version,
        }
        raise Conflict(STALE, code="stale_version", current=current)


def _flush() -> None:
    """Write now, so that a writer that slipped in since we read the todo is a conflict, not a 500."""
    try:
        db.session.flush()
    except StaleDataError:
        raise Conflict(STALE, code="stale_version") from None


def _clean_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise Rejected("Give the todo a title.", code="blank_title")
    return title


def _titles(todos: t.Sequence[Todo], limit: int = 300) -> str:
    """``2 todos: “Milk”, “Eggs”``, cut short to fit the activity log's detail column."""
    text = f"{len(todos)} todo{'' if len(todos) == 1 else 's'}"
    if todos:
        text += ": " + ", ".join(f"“{todo.title}”" for todo in todos)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _order_text(order: int | None) -> str:
    return "none" if order is None else str(order)


def _apply(
    todo: Todo, *, title: str | None = None, completed: bool | None = None, order: t.Any = _UNCHANGED
) -> Changes:
    """Set the given values on ``todo`` and return the changes they made (none if all were equal)."""
    changes: list[Change] = []
    if title is not None and title != todo.title:
        changes.append(Change("TitleChanged", todo.id, title, f"was “{todo.title}”"))
        todo.title = title
    if completed is not None and completed != todo.completed:
        changes.append(Change("TodoCompleted" if completed else "TodoReopened", todo.id, todo.title))
        todo.completed = completed
    if order is not _UNCHANGED and order != todo.order:
        detail = f"{_order_text(todo.order)} → {_order_text(order)}"
        changes.append(Change("OrderChanged", todo.id, todo.title, detail))
        todo.order = order
    _flush()
    return Changes(todo, tuple(changes))


@handler(AddTodo, transaction=db.session)
def add_todo(cmd: AddTodo) -> Changes:
    """Add a todo at the end of the board (or at ``order``)."""
    todo = Todo(title=_clean_title(cmd.title), order=cmd.order, completed=cmd.completed)
    db.session.add(todo)
    db.session.flush()
    changes = [Change("TodoAdded", todo.id, todo.title)]
    if cmd.completed:
        changes.append(Change("TodoCompleted", todo.id, todo.title))
    return Changes(todo, tuple(changes))


@handler(EditTodo, transaction=db.session)
def edit_todo(cmd: EditTodo) -> Changes:
    """Replace a todo's title and order, if nobody changed it since the form was rendered."""
    todo = _live(cmd.todo_id)
    _check_version(todo, cmd.version)
    return _apply(todo, title=_clean_title(cmd.title), order=cmd.order)


@handler(SetCompleted, transaction=db.session)
def set_completed(cmd: SetCompleted) -> Changes:
    """Mark a todo done or not done, if nobody changed it since the form was rendered."""
    todo = _live(cmd.todo_id)
    _check_version(todo, cmd.version)
    return _apply(todo, completed=cmd.completed)


@handler(UpdateTodo, transaction=db.session)
def update_todo(cmd: UpdateTodo) -> Changes:
    """Change the fields sent, leave the others; a ``version`` sent must be the current one."""
    todo = _live(cmd.todo_id)
    _check_version(todo, cmd.version)
    title = _clean_title(cmd.title) if cmd.title is not None else None
    order = cmd.order if cmd.order is not None else _UNCHANGED
    return _apply(todo, title=title, completed=cmd.completed, order=order)


@handler(DeleteTodo, transaction=db.session)
def delete_todo(cmd: DeleteTodo) -> Changes:
    """Delete a todo, keeping the row (``deleted_at``) so that it can be restored."""
    todo = _live(cmd.todo_id)
    _check_version(todo, cmd.version)
    todo.deleted_at = utcnow()
    _flush()
    return Changes(todo, (Change("TodoDeleted", todo.id, todo.title),))


@handler(RestoreTodo, transaction=db.session)
def restore_todo(cmd: RestoreTodo) -> Changes:
    """Bring a deleted todo back; restoring one that is not deleted changes nothing."""
    todo = db.session.get(Todo, cmd.todo_id)
    if todo is None:
        raise Conflict("This todo no longer exists.", code="todo_missing")
    if todo.live:
        return Changes(todo)
    todo.deleted_at = None
    _flush()
    return Changes(todo, (Change("TodoRestored", todo.id, todo.title),))


@handler(ClearCompleted, transaction=db.session)
def clear_completed_later(cmd: ClearCompleted) -> Job:
    """Record a pending job and enqueue :func:`clear_completed` for a worker; return the job.

    The job leaves with this transaction (the outbox): it is published only once the job's row
    has committed, and never if this transaction rolls back.
    """
    job = Job(id=str(uuid.uuid4()), kind="clear_completed")
    db.session.add(job)
    db.session.flush()
    clear_completed.enqueue(RunClearCompleted(id=uuid.UUID(job.id), actor=cmd.actor))
    return job


@handler(RunClearCompleted, transaction=db.session, max_attempts=6, backoff=0.5)
def clear_completed(cmd: RunClearCompleted) -> Changes:
    """Delete every completed todo (as a background job) and mark the board's job done."""
    job = db.session.get(Job, str(cmd.id))
    if job is None:
        # Published only after the row committed, so only a job enqueued by hand gets here.
        raise Rejected(f"There is no board job {cmd.id}.", code="no_job")
    now = utcnow()
    todos = db.session.scalars(
        sa.select(Todo).where(Todo.completed.is_(True), Todo.live)
    ).all()
    for todo in todos:
        todo.deleted_at = now
    job.status = "done"
    job.finished_at = now
    job.detail = f"Cleared {len(todos)} completed todo{'' if len(todos) == 1 else 's'}."
    db.session.flush()
    return Changes(None, (Change("CompletedCleared", None, "", _titles(todos)),))


@handler(ClearTodos, transaction=db.session)
def clear_todos(cmd: ClearTodos) -> Changes:
    """Delete every todo (the Todo-Backend ``DELETE /todos``)."""
    now = utcnow()
    todos = db.session.scalars(sa.select(Todo).where(Todo.live)).all()
    for todo in todos:
        todo.deleted_at = now
    db.session.flush()
    return Changes(None, (Change("TodosCleared", None, "", _titles(todos)),))
