"""The board: a server-rendered todo list where every change is a command posted by a form.

With JavaScript, htmx posts each form and swaps the board (``#board``) with the response; without,
the same forms post, and a success redirects back to the board (post/redirect/get) while invalid
input re-renders the whole page. Every form carries a fresh hidden ``id``, the command's
idempotency key, so a double submit is handled once.
"""

from __future__ import annotations

import datetime
import functools
import secrets
import typing as t

import sqlalchemy as sa
import wtforms
from flask import Blueprint
from flask import Response
from flask import abort
from flask import make_response
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from jinja2_fragments.flask import render_block
from jinja2_fragments.flask import render_blocks

from flask_commands import Command
from flask_commands import command_view
from flask_commands import htmx
from flask_commands.handler import Handler

from .commands import AddTodo
from .commands import ClearCompleted
from .commands import DeleteTodo
from .commands import EditTodo
from .commands import RestoreTodo
from .commands import SetCompleted
from .commands import known_todo_id
from .handlers import Changes
from .handlers import add_todo
from .handlers import clear_completed_later
from .handlers import delete_todo
from .handlers import edit_todo
from .handlers import restore_todo
from .handlers import set_completed
from .models import Activity
from .models import Job
from .models import Todo
from .models import db
from .models import live_todo
from .models import live_todos
from .models import utcnow

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

board = Blueprint("board", __name__)

board.url_value_preprocessor(known_todo_id)


TEMPLATE = "index.html"
#: The command of each board change, by endpoint name: what :meth:`Board.button_form` renders.
_CHANGES: dict[str, type[Command]] = {}
_UNDO = "undo"
_VISITOR = "visitor"
_VISITOR_ID = "visitor_id"
# secrets.token_urlsafe(16): 22 characters.
_VISITOR_ID_LENGTH = 22
#: The id of the background job this browser started last, until its result has been shown.
_LAST_JOB = "last_job"
#: A pending job older than this is probably waiting for a worker that is not running.
WORKER_HINT_AFTER = datetime.timedelta(seconds=5)


def visitor() -> str:
    """This browser's name on the board (``guest-1a2b``), the actor of its commands.

    A display name only: two browsers may draw the same one. :func:`visitor_id` is the identity.
    """
    name = session.get(_VISITOR)
    if not isinstance(name, str):
        name = f"guest-{secrets.token_hex(2)}"
        session[_VISITOR] = name
    return name


def visitor_id() -> str:
    """This browser's identity: 128 random bits kept in its (signed) session, never shown on the board.

    Unguessable and, unlike the short display name, unique: the idempotency scope is built on it.
    """
    identity = session.get(_VISITOR_ID)
    if not isinstance(identity, str) or len(identity) < _VISITOR_ID_LENGTH:
        identity = secrets.token_urlsafe(16)
        session[_VISITOR_ID] = identity
    return identity


def idempotency_scope() -> str:
    """``COMMANDS_IDEMPOTENCY_SCOPE``: a board visitor's keys are theirs alone; API clients share one scope.

    Scoped by :func:`visitor_id`, never by the display name, so a visitor can never be answered with
    another visitor's stored response, whatever key is sent.
    """
    if request.blueprint == board.name:
        return f"board:{visitor_id()}"
    return "api"


def _trusted(**view_args: t.Any) -> dict[str, t.Any]:
    return {"actor": visitor(), **view_args}


class Board:
    """What the board template shows, each part read from the database on first use."""

    @functools.cached_property
    def todos(self) -> list[Todo]:
        return live_todos()

    @property
    def left(self) -> int:
        return sum(1 for todo in self.todos if not todo.completed)

    @property
    def done(self) -> int:
        return sum(1 for todo in self.todos if todo.completed)

    @functools.cached_property
    def pending_jobs(self) -> list[Job]:
        query = sa.select(Job).where(Job.status == "pending").order_by(Job.created_at)
        return list(db.session.scalars(query))

    @functools.cached_property
    def undo(self) -> Todo | None:
        """The todo this browser deleted last, while it is still deleted."""
        todo_id = session.get(_UNDO)
        todo = db.session.get(Todo, todo_id) if isinstance(todo_id, int) else None
        return todo if todo is not None and not todo.live else None

    @functools.cached_property
    def finished_job(self) -> Job | None:
        """The job this browser started last, once a worker has run it; shown once, by the button."""
        job_id = session.get(_LAST_JOB)
        job = db.session.get(Job, job_id) if isinstance(job_id, str) else None
        if job is None or job.status != "pending":
            session.pop(_LAST_JOB, None)
        return job if job is not None and job.status != "pending" else None

    @staticmethod
    def waiting_for_worker(job: Job) -> bool:
        return utcnow() - job.created_at > WORKER_HINT_AFTER

    @staticmethod
    def button_form(kind: str, todo: Todo | None = None) -> wtforms.Form:
        """A fresh form for the button of the board change ``kind`` (``toggle``, ``delete``, ...):
        a new hidden ``id`` each time it is rendered, and ``todo``'s version."""
        return _CHANGES[kind].form({"version": todo.version} if todo is not None else None)

    @staticmethod
    def add_form(form: wtforms.Form | None = None) -> wtforms.Form:
        """The add form: ``form`` when it is an ``AddTodo`` form being re-rendered, else a fresh one."""
        return form if isinstance(form, AddTodo.Form) else AddTodo.form()

    @staticmethod
    def editing(
        form: wtforms.Form | None, editing: int | None = None, todo_id: int | None = None
    ) -> tuple[int | None, wtforms.Form | None]:
        """The todo in edit mode and its re-rendered form: ``(editing, None)`` for the edit page,
        ``(todo_id, form)`` for an edit that failed (invalid, rejected, conflict), else nothing."""
        if editing is not None:
            return editing, None
        failed = isinstance(form, EditTodo.Form) and (
            form.errors or form.form_errors or getattr(form, "commands_conflict", None)
        )
        return (todo_id, form) if failed else (None, None)

    @staticmethod
    def failed_button(form: wtforms.Form | None) -> bool:
        """Whether ``form`` is a board button's form that failed (invalid or rejected)."""
        if form is None or isinstance(form, (AddTodo.Form, EditTodo.Form)):
            return False
        return bool(form.errors or form.form_errors)

    @staticmethod
    def edit_form(todo: Todo, form: wtforms.Form | None = None) -> wtforms.Form:
        """The inline edit form of ``todo`` (``form``, when re-rendered), with ids unique on the page."""
        if form is None:
            form = EditTodo.form({"title": todo.title, "order": todo.order, "version": todo.version})
        for field in form:
            field.id = f"edit-{todo.id}-{field.name}"
            field.label.field_id = field.id
        return form


@board.app_context_processor
def _board_context() -> dict[str, t.Any]:
    return {"board": Board(), "visitor": visitor}


def _board_changed(focus: str | None = None) -> ResponseReturnValue:
    """After a successful change: the board for htmx, else a redirect to it (post/redirect/get).

    :param focus: the id of the element that takes the focus, the one that had it being gone
        (the Undo button after a delete) or disabled while the request was in flight, which blurs
        it, so that htmx cannot keep it there by its id.
    """
    if htmx.details():
        return board_fragment(focus=focus)
    return redirect(url_for("board.index"), 303)


def board_fragment(**context: t.Any) -> Response:
    """The ``board`` block, swapped in place of ``#board`` whatever element made the request."""
    response = make_response(render_block(TEMPLATE, "board", **context))
    response.vary.add(htmx.HX_REQUEST)
    return htmx.retarget(htmx.reswap(response, "outerHTML"), "#board")


@board.get("/")
def index() -> ResponseReturnValue:
    return render_template(TEMPLATE)


@board.get("/board")
def board_view() -> ResponseReturnValue:
    """The board alone (htmx: cancel an edit, refresh); the page otherwise."""
    if htmx.details():
        return board_fragment(focus=request.args.get("focus"))
    return redirect(url_for("board.index"))


@board.post("/items")
@command_view(AddTodo, add_todo, template=TEMPLATE, block="add_form", trusted=_trusted)
def add(result: Changes, cmd: AddTodo) -> ResponseReturnValue:
    session.pop(_UNDO, None)
    if htmx.details():
        # A fresh form in place of the posted one, and the board out of band.
        response = make_response(render_blocks(TEMPLATE, ["add_form", "board"], oob=True), 201)
        response.vary.add(htmx.HX_REQUEST)
        return response
    return redirect(url_for("board.index"), 303)


@board.get("/items/<int:todo_id>/edit")
def edit_form(todo_id: int) -> ResponseReturnValue:
    """The board with ``todo_id`` in edit mode (the htmx fragment, or the whole page)."""
    if live_todo(todo_id) is None:
        abort(404)
    if htmx.details():
        return board_fragment(editing=todo_id)
    return render_template(TEMPLATE, editing=todo_id)


def board_change(
    rule: str, command: type[Command], handler: Handler[t.Any, t.Any]
) -> t.Callable[[t.Callable[..., str | None]], t.Callable[..., Response]]:
    """Register POST ``rule`` as a board change: ``command`` run by ``handler`` on the board's template.

    Invalid input, a conflict or a rejection re-render the board (its ``board`` block for htmx). After
    a success the decorated function does what is particular to the change and returns the id of
    the element that takes the focus; the board (htmx) or a redirect to it follows.
    """

    def decorate(func: t.Callable[..., str | None]) -> t.Callable[..., Response]:
        _CHANGES[func.__name__] = command

        @functools.wraps(func)
        def changed(result: t.Any, cmd: Command, **view_args: t.Any) -> ResponseReturnValue:
            session.pop(_UNDO, None)
            return _board_changed(focus=func(result, cmd, **view_args))

        view = command_view(command, handler, template=TEMPLATE, block="board", trusted=_trusted)(changed)
        board.add_url_rule(rule, func.__name__, view, methods=["POST"])
        return view

    return decorate


@board_change("/items/<int:todo_id>/edit", EditTodo, edit_todo)
def edit(result: Changes, cmd: EditTodo, todo_id: int) -> str:
    """Save an inline edit; the focus goes back to the todo's Edit link."""
    return f"edit-link-{todo_id}"


@board_change("/items/<int:todo_id>/toggle", SetCompleted, set_completed)
def toggle(result: Changes, cmd: SetCompleted, todo_id: int) -> str:
    """Mark a todo done or not done."""
    return f"toggle-{todo_id}"


@board_change("/items/<int:todo_id>/delete", DeleteTodo, delete_todo)
def delete(result: Changes, cmd: DeleteTodo, todo_id: int) -> str:
    """Delete a todo, and offer to undo it."""
    session[_UNDO] = todo_id
    return "undo"


@board_change("/items/<int:todo_id>/restore", RestoreTodo, restore_todo)
def restore(result: Changes, cmd: RestoreTodo, todo_id: int) -> str:
    """Undo a delete."""
    return f"toggle-{todo_id}"


@board_change("/items/clear-completed", ClearCompleted, clear_completed_later)
def clear_completed(result: Job, cmd: ClearCompleted) -> None:
    """Clear the completed todos in the background; the outcome shows beside the button."""
    session[_LAST_JOB] = result.id


@board.get("/jobs/<job_id>")
def job(job_id: str) -> ResponseReturnValue:
    """A job's status: polled by htmx while pending; once done, the board with its outcome."""
    found = db.session.get(Job, job_id)
    if found is None:
        abort(404)
    if not htmx.details():
        return redirect(url_for("board.index"))
    if found.status == "pending":
        return render_template("job.html", job=found)
    # The board, with the outcome next to the "Clear completed" button (Board.finished_job).
    return board_fragment()


@board.get("/activity")
def activity() -> ResponseReturnValue:
    query = sa.select(Activity).order_by(Activity.id.desc()).limit(200)
    return render_template("activity.html", entries=list(db.session.scalars(query)))
