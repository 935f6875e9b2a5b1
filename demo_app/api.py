"""The Todo-Backend JSON API (https://todobackend.com) at ``/todos``, on the board's commands.

Every change goes through the same commands and handlers as the board: ``POST /todos`` is
``AddTodo``, ``DELETE /todos/<id>`` is ``DeleteTodo``; ``PATCH`` is ``UpdateTodo`` (any of title,
completed and order) and ``DELETE /todos`` is ``ClearTodos``. CORS is open to every origin, so
the Todo-Backend spec runner and client apps on other origins can use it.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import abort
from flask import jsonify
from flask import request
from flask import url_for
from werkzeug.exceptions import HTTPException

from flask_commands import command_view
from flask_commands.problem import problem

from .commands import AddTodo
from .commands import ClearTodos
from .commands import DeleteTodo
from .commands import UpdateTodo
from .commands import known_todo_id
from .handlers import Changes
from .handlers import add_todo
from .handlers import clear_todos
from .handlers import delete_todo
from .handlers import update_todo
from .models import Todo
from .models import live_todo
from .models import live_todos

if t.TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

api = Blueprint("api", __name__)

api.url_value_preprocessor(known_todo_id)


_PREFIX = "/todos"
_ACTOR = "api"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Idempotency-Key",
    "Access-Control-Expose-Headers": "Location, Idempotent-Replayed, Retry-After",
    "Access-Control-Max-Age": "86400",
}


#: The JSON Schema of :func:`todo_json`, the success body the OpenAPI document declares.
TODO_SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "required": ["id", "title", "completed", "order", "url", "version"],
    "properties": {
        "id": {"type": "integer"},
        "title": {"type": "string"},
        "completed": {"type": "boolean"},
        "order": {"type": ["integer", "null"]},
        "url": {"type": "string", "format": "uri"},
        "version": {"type": "integer"},
    },
}


def todo_json(todo: Todo) -> dict[str, t.Any]:
    """A todo as Todo-Backend clients expect it, with its absolute ``url`` (and ``version``)."""
    return {
        "id": todo.id,
        "title": todo.title,
        "completed": todo.completed,
        "order": todo.order,
        "url": url_for("api.get_todo", todo_id=todo.id, _external=True),
        "version": todo.version,
    }


def _live_todo(todo_id: int) -> Todo:
    todo = live_todo(todo_id)
    if todo is None:
        abort(404, f"There is no todo {todo_id}.")
    return todo


def _anyone() -> dict[str, t.Any]:
    return {"actor": _ACTOR}


def _existing(todo_id: int) -> dict[str, t.Any]:
    # A todo that does not exist is a 404 before any command is built.
    _live_todo(todo_id)
    return {"todo_id": todo_id, "actor": _ACTOR}


@api.after_request
def cors(response: Response) -> Response:
    """Let pages on any origin call the API (no credentials are involved)."""
    response.headers.update(_CORS)
    return response


@api.get(_PREFIX)
def list_todos() -> ResponseReturnValue:
    return jsonify([todo_json(todo) for todo in live_todos()])


@api.post(_PREFIX)
@command_view(AddTodo, add_todo, trusted=_anyone, responses={201: TODO_SCHEMA})
def create_todo(result: Changes, cmd: AddTodo) -> ResponseReturnValue:
    assert result.todo is not None
    body = todo_json(result.todo)
    return jsonify(body), 201, {"Location": body["url"]}


@api.delete(_PREFIX)
@command_view(ClearTodos, clear_todos, trusted=_anyone, responses={204: None})
def delete_todos(result: Changes, cmd: ClearTodos) -> ResponseReturnValue:
    return "", 204


@api.get(f"{_PREFIX}/<int:todo_id>")
def get_todo(todo_id: int) -> ResponseReturnValue:
    return jsonify(todo_json(_live_todo(todo_id)))


@api.patch(f"{_PREFIX}/<int:todo_id>")
@command_view(UpdateTodo, update_todo, trusted=_existing, responses={200: TODO_SCHEMA})
def patch_todo(result: Changes, cmd: UpdateTodo, todo_id: int) -> ResponseReturnValue:
    assert result.todo is not None
    return jsonify(todo_json(result.todo))


@api.delete(f"{_PREFIX}/<int:todo_id>")
@command_view(DeleteTodo, delete_todo, trusted=_existing, responses={204: None})
def delete_todo_view(result: Changes, cmd: DeleteTodo, todo_id: int) -> ResponseReturnValue:
    return "", 204


def _is_api_path(path: str) -> bool:
    return path == _PREFIX or path.startswith(_PREFIX + "/")


def register_error_handlers(app: Flask) -> None:
    """Answer errors under ``/todos`` (unknown ids, unknown URLs, wrong methods) in problem+json."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> ResponseReturnValue:
        if not _is_api_path(request.path) or error.code is None or error.code < 400:
            return error
        headers = {}
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        description = error.description if error.description != type(error).description else None
        response = problem(error.code, detail=description, headers=headers)
        # Routing errors happen before the blueprint is known, so its after_request would not run.
        response.headers.update(_CORS)
        return response
