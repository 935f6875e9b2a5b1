"""Every change to the board is one of these commands: a form for the board, JSON for the API."""

from __future__ import annotations

import typing as t

from flask import abort
from wtforms import validators as v

from flask_commands import Command
from flask_commands import field

from .models import TITLE_MAX

# DataRequired (rather than the implied InputRequired) also refuses a title of only spaces.
_TITLE = [
    v.DataRequired(message="Give the todo a title."),
    v.Length(max=TITLE_MAX, message=f"Keep the title to {TITLE_MAX} characters or fewer."),
]
_TITLE_KW = {"maxlength": TITLE_MAX, "autocomplete": "off"}

#: The columns are SQL INTEGER: 32 bits on PostgreSQL, so larger numbers are a field error, not a 500.
INT_MAX = 2**31 - 1
_INT = [v.NumberRange(min=-INT_MAX - 1, max=INT_MAX)]


def known_todo_id(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
    """A blueprint's URL preprocessor: an id past the INTEGER column names nothing (404)."""
    if values and values.get("todo_id", 0) > INT_MAX:
        abort(404)  # and it must never reach the database, which would overflow


class AddTodo(Command):
    """Add a todo (the board's "add" form, and ``POST /todos``)."""

    title: str = field(validators=_TITLE, label="What needs doing?", render_kw=_TITLE_KW)
    order: int | None = field(default=None, validators=_INT, label="Order")
    completed: bool = False
    actor: str = field(trusted=True)


class EditTodo(Command):
    """Change a todo's title and order (the board's inline edit)."""

    title: str = field(validators=_TITLE, label="Title", render_kw=_TITLE_KW)
    order: int | None = field(default=None, validators=_INT, label="Order")
    version: int = field(validators=_INT)
    todo_id: int = field(trusted=True)
    actor: str = field(trusted=True)


class SetCompleted(Command):
    """Mark a todo done or not done (the board's checkbox)."""

    completed: bool = field(default=False, label="Done")
    version: int = field(validators=_INT)
    todo_id: int = field(trusted=True)
    actor: str = field(trusted=True)


class UpdateTodo(Command):
    """Change any of a todo's title, completion and order (``PATCH /todos/<id>``).

    A field left out (or ``null``) stays as it is. ``version``, when sent, must be the todo's
    current version, or the update conflicts.
    """

    title: str | None = field(default=None, validators=[_TITLE[1]], label="Title")
    completed: bool | None = None
    order: int | None = field(default=None, validators=_INT)
    version: int | None = field(default=None, validators=_INT)
    todo_id: int = field(trusted=True)
    actor: str = field(trusted=True)


class DeleteTodo(Command):
    """Delete a todo; the board offers to undo it (the row is kept, with ``deleted_at`` set)."""

    version: int | None = field(default=None, validators=_INT)
    todo_id: int = field(trusted=True)
    actor: str = field(trusted=True)


class RestoreTodo(Command):
    """Undo a delete."""

    todo_id: int = field(trusted=True)
    actor: str = field(trusted=True)


class ClearCompleted(Command):
    """Ask for the completed todos to be cleared: the board records a job and enqueues it."""

    actor: str = field(trusted=True)


class RunClearCompleted(Command):
    """Clear the completed todos (a background job; its ``id`` is the board's job id)."""

    actor: str = field(trusted=True)


class ClearTodos(Command):
    """Delete every todo (``DELETE /todos``)."""

    actor: str = field(trusted=True)
