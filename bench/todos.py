"""The endpoint every HTTP bench serves (http_view.py, otel.py, peers.py): ``POST /todos``.

Not a bench itself. ``{"title": str 1..200, "order": int | null, "completed": bool}`` is
validated, a no-op handler runs, and the answer is 201 with the todo as JSON or 422 with the
errors: :func:`bare_app` writes the checks by hand (the limit), :func:`command_app` is
``@command_view(AddTodo, add_todo)``. The peers in peers.py answer with :func:`todo`.
"""

from __future__ import annotations

import uuid

import flask
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler

BODY = {"title": "Buy milk", "order": 3, "completed": False}


class AddTodo(Command):
    """The benchmark's command."""

    title: str = field(validators=[v.InputRequired(), v.Length(max=200)])
    order: int | None = None
    completed: bool = False


@handler(AddTodo)
def add_todo(cmd: AddTodo) -> AddTodo:
    """A no-op handler."""
    return cmd


def todo(ident: str, title: str, order: int | None, completed: bool) -> flask.Response:
    """The 201 answer every app gives: the todo as JSON."""
    response = flask.jsonify({"id": ident, "title": title, "order": order, "completed": completed})
    response.status_code = 201
    return response


def bare_app() -> flask.Flask:
    """Flask, the same checks written by hand."""
    app = flask.Flask("bare")

    @app.post("/todos")
    def create() -> flask.typing.ResponseReturnValue:
        data = flask.request.get_json(silent=True)
        if not isinstance(data, dict):
            return {"detail": "The request body must be a JSON object."}, 400
        errors: dict[str, list[str]] = {}
        title = data.get("title")
        if not isinstance(title, str) or not title:
            errors["title"] = ["This field is required."]
        elif len(title) > 200:
            errors["title"] = ["Field cannot be longer than 200 characters."]
        order = data.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
            errors["order"] = ["Not a valid integer value."]
        completed = data.get("completed", False)
        if completed is None:
            completed = False
        if not isinstance(completed, bool):
            errors["completed"] = ["Not a valid value."]
        if errors:
            return {"errors": errors}, 422
        assert isinstance(title, str)
        return todo(str(uuid.uuid4()), title, order, completed)

    return app


def command_app() -> flask.Flask:
    """Flask-Commands' command view (default memory idempotency store)."""
    app = flask.Flask("command")
    Commands(app)

    @app.post("/todos")
    @command_view(AddTodo, add_todo)
    def create(result: AddTodo, cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return todo(str(cmd.id), cmd.title, cmd.order, cmd.completed)

    return app
