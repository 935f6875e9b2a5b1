"""Tests for flask_commands.views: ``@command_view`` over plain form posts, htmx posts and JSON."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import json
import re
import typing as t
import urllib.parse
import uuid
from html import unescape

import flask
import jinja2
import pytest
import wtforms
from flask_wtf.csrf import CSRFProtect
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands import htmx
from flask_commands.views import CommandSpec


class AddTodo(Command):
    title: str = field(validators=[v.InputRequired(), v.Length(max=30)], label="Title")
    order: int | None = None
    actor_id: int = field(trusted=True)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Everything(Command):
    """A command with one field of every kind, for the fuzz test."""

    text: str = field(validators=[v.Length(max=10)])
    number: int | None = None
    ratio: float | None = None
    amount: decimal.Decimal | None = None
    flag: bool = False
    day: datetime.date | None = None
    colour: Colour | None = None
    ref: uuid.UUID | None = None
    owner: int = field(trusted=True)


#: Every todo the handler added, in order.
ADDED: list[AddTodo] = []


@handler(AddTodo)
def add_todo(cmd: AddTodo) -> dict[str, t.Any]:
    if cmd.title == "taken":
        raise Conflict("A todo with that title exists.", code="duplicate_title")
    if cmd.title == "forbidden":
        raise Rejected("Forbidden is not a title.", code="forbidden_title")
    if cmd.title == "boom":
        raise RuntimeError("the database is on fire")
    ADDED.append(cmd)
    return {"title": cmd.title, "order": cmd.order}


@handler(Everything)
def handle_everything(cmd: Everything) -> str:
    return cmd.text


class Ranged(Command, fast_path=False):
    """A number with a range, always built by the real form (the live validation's slow path)."""

    count: int = field(validators=[v.NumberRange(min=1, max=5)])


@handler(Ranged)
def handle_ranged(cmd: Ranged) -> int:
    return cmd.count


PAGE = """\
{%- from "commands/macros.html" import flashes -%}
<html><body><p id="page">the page</p>{{ flashes() }}
{% block new_form %}{{ commands_macros.render_form(form) }}{% endblock %}
</body></html>"""

PARTIAL = '{% from "commands/macros.html" import render_form %}{{ render_form(form) }}'

LIST = "<h1>List {{ list_id }}</h1>{% block form %}{{ commands_macros.render_form(form) }}{% endblock %}"

HX4 = {
    "HX-Request": "true",
    "HX-Request-Type": "partial",
    "HX-Source": "form",
    "HX-Target": "form",
    "HX-Current-URL": "http://localhost/todos/new",
    "Accept": "text/html",
}
HX2 = {"HX-Request": "true", "HX-Target": "new", "HX-Trigger": "new", "Accept": "*/*"}


def make_app() -> flask.Flask:
    """An app with one command view of each kind."""
    app = flask.Flask(__name__)
    app.config["TESTING"] = True
    app.secret_key = "test"
    app.jinja_loader = jinja2.DictLoader({"page.html": PAGE, "partial.html": PARTIAL, "list.html": LIST})
    Commands(app)

    @app.route("/todos/new", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @command_view(AddTodo, add_todo, template="page.html", block="new_form", trusted=lambda: {"actor_id": 7})
    def new_todo(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return {**result, "actor_id": cmd.actor_id, "id": str(cmd.id)}, 201

    @app.route("/partial", methods=["GET", "POST"])
    @command_view(AddTodo, add_todo, template="partial.html", trusted=lambda: {"actor_id": 7})
    def partial(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return flask.redirect("/todos")

    @app.route("/api/todos", methods=["GET", "POST"])
    @command_view(AddTodo, add_todo, trusted=lambda: {"actor_id": 7})
    def api_add(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return result, 201

    @app.route("/lists/<int:list_id>/todos", methods=["GET", "POST"])
    @command_view(
        AddTodo, add_todo, template="list.html", block="form", trusted=lambda list_id: {"actor_id": list_id}
    )
    def list_add(result: dict[str, t.Any], cmd: AddTodo, list_id: int) -> flask.typing.ResponseReturnValue:
        return {"list_id": list_id, "actor_id": cmd.actor_id}

    @app.post("/ranged")
    @command_view(Ranged, handle_ranged)
    def ranged(result: int, cmd: Ranged) -> flask.typing.ResponseReturnValue:
        return {"count": result}, 201

    @app.route("/everything", methods=["GET", "POST", "PUT"])
    @command_view(Everything, handle_everything, template="partial.html", trusted=lambda: {"owner": 1})
    def everything(result: str, cmd: Everything) -> flask.typing.ResponseReturnValue:
        return result

    return app


@pytest.fixture
def app() -> flask.Flask:
    ADDED.clear()
    return make_app()


# view.command_spec


def test_command_spec_holds_arguments() -> None:
    trusted = lambda: {"actor_id": 7}  # noqa: E731
    responses = {201: {"type": "object"}}

    @command_view(
        AddTodo, add_todo, template="page.html", block="new_form", trusted=trusted, responses=responses
    )
    def add(result: t.Any, cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return "", 201

    spec = add.command_spec  # type: ignore[attr-defined]
    assert isinstance(spec, CommandSpec)
    assert (spec.command, spec.handler, spec.template, spec.block, spec.trusted) == (
        AddTodo,
        add_todo,
        "page.html",
        "new_form",
        trusted,
    )
    assert spec.func.__name__ == "add"
    assert spec.responses == responses


def test_command_spec_responses_default_empty() -> None:
    @command_view(AddTodo, add_todo)
    def add(result: t.Any, cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return ""

    assert add.command_spec.responses == {}  # type: ignore[attr-defined]


def test_command_spec_read_only() -> None:
    @command_view(AddTodo, add_todo)
    def add(result: t.Any, cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return ""

    with pytest.raises(dataclasses.FrozenInstanceError):
        add.command_spec.template = "other.html"  # type: ignore[attr-defined]


def test_command_spec_survives_wraps() -> None:
    """A view wrapped by a decorator using ``functools.wraps`` is still known as a command view."""

    def logged(view: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: t.Any) -> t.Any:
            return view(**kwargs)

        return wrapper

    @command_view(AddTodo, add_todo, trusted=lambda: {"actor_id": 7})
    def add(result: t.Any, cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return result, 201

    wrapped = logged(add)
    assert wrapped.command_spec is add.command_spec  # type: ignore[attr-defined]


def hidden_id(html: str) -> str:
    match = re.search(r'name="id" type="hidden" value="([^"]*)"', html)
    assert match is not None, html
    return match.group(1)


# GET


def test_get_renders_the_page(client: flask.testing.FlaskClient) -> None:
    response = client.get("/todos/new")
    assert response.status_code == 200
    assert 'id="page"' in response.text
    assert '<label for="title">Title</label>' in response.text
    uuid.UUID(hidden_id(response.text))


def test_get_fresh_id_each_time(client: flask.testing.FlaskClient) -> None:
    assert hidden_id(client.get("/todos/new").text) != hidden_id(client.get("/todos/new").text)


def test_get_htmx_renders_the_block(client: flask.testing.FlaskClient) -> None:
    response = client.get("/todos/new", headers=HX4)
    assert response.status_code == 200
    assert 'id="page"' not in response.text
    assert response.text.strip().startswith("<form")
    assert "HX-Request" in response.vary


def test_get_htmx_boosted_renders_the_page(client: flask.testing.FlaskClient) -> None:
    response = client.get("/todos/new", headers={**HX4, "HX-Boosted": "true", "HX-Request-Type": "full"})
    assert 'id="page"' in response.text


def test_get_htmx_history_restore_renders_the_page(client: flask.testing.FlaskClient) -> None:
    response = client.get("/todos/new", headers={**HX2, "HX-History-Restore-Request": "true"})
    assert 'id="page"' in response.text


def test_get_json_only_view_405(client: flask.testing.FlaskClient) -> None:
    response = client.get("/api/todos")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert response.headers["Allow"] == "POST"
    assert response.json == {
        "type": "about:blank",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": "/api/todos takes JSON submissions (POST); it renders no form.",
        "code": "method_not_allowed",
    }


def test_get_url_params_reach_the_template(client: flask.testing.FlaskClient) -> None:
    assert "<h1>List 5</h1>" in client.get("/lists/5/todos").text


# Success


def test_success_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "Milk", "order": "2"})
    assert response.status_code == 201
    assert response.json is not None
    assert response.json["title"] == "Milk"
    assert response.json["order"] == 2
    assert response.json["actor_id"] == 7


def test_success_htmx_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "Milk"}, headers=HX4)
    assert response.status_code == 201
    assert response.json is not None
    assert response.json["title"] == "Milk"


def test_success_json_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", json={"title": "Milk", "order": 3})
    assert response.status_code == 201
    assert response.json == {"title": "Milk", "order": 3}


def test_success_plus_json_content_type(client: flask.testing.FlaskClient) -> None:
    response = client.post(
        "/api/todos", data=json.dumps({"title": "Milk"}), content_type="application/merge-patch+json"
    )
    assert response.status_code == 201


def test_success_json_post_to_form_view(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", json={"title": "Milk"})
    assert response.status_code == 201


def test_success_redirect(client: flask.testing.FlaskClient) -> None:
    response = client.post("/partial", data={"title": "Milk"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/todos"


def test_success_keeps_the_submitted_id(client: flask.testing.FlaskClient) -> None:
    ident = str(uuid.uuid4())
    response = client.post("/todos/new", data={"title": "Milk", "id": ident})
    assert response.json is not None
    assert response.json["id"] == ident


def test_json_id_that_is_no_uuid_is_refused(client: flask.testing.FlaskClient) -> None:
    # An id that is no UUID gives no idempotency key: the post runs unkeyed, and build refuses it.
    response = client.post("/api/todos", json={"title": "Milk", "id": "not-a-uuid"})
    assert response.status_code == 422
    assert response.json is not None
    assert list(response.json["errors"]) == ["id"]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_success_other_methods(client: flask.testing.FlaskClient, method: str) -> None:
    response = client.open("/todos/new", method=method, json={"title": "Milk"})
    assert response.status_code == 201


def test_success_url_params(client: flask.testing.FlaskClient) -> None:
    response = client.post("/lists/5/todos", data={"title": "Milk"})
    assert response.status_code == 200
    assert response.json == {"list_id": 5, "actor_id": 5}


# Trusted values


def test_trusted_form_field_ignored(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "Milk", "actor_id": "999"})
    assert response.json is not None
    assert response.json["actor_id"] == 7


def test_trusted_json_key_ignored(client: flask.testing.FlaskClient) -> None:
    client.post("/api/todos", json={"title": "Milk", "actor_id": 999})
    assert ADDED[-1].actor_id == 7


def test_trusted_url_param_not_spoofable(client: flask.testing.FlaskClient) -> None:
    response = client.post("/lists/5/todos", data={"title": "Milk", "actor_id": "6", "list_id": "6"})
    assert response.json == {"list_id": 5, "actor_id": 5}


# Invalid input: 422


def test_invalid_form_post(client: flask.testing.FlaskClient) -> None:
    submitted = str(uuid.uuid4())
    response = client.post("/todos/new", data={"title": "", "order": "x", "id": submitted})
    assert response.status_code == 422
    assert 'id="page"' in response.text
    assert "This field is required." in response.text
    assert "Not a valid integer value." in response.text
    assert 'aria-invalid="true"' in response.text
    assert hidden_id(response.text) != submitted
    assert ADDED == []


def test_invalid_form_post_keeps_values(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "Milk", "order": "x"})
    assert 'value="Milk"' in response.text


def test_invalid_htmx_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": ""}, headers=HX4)
    assert response.status_code == 422
    assert 'id="page"' not in response.text
    assert "This field is required." in response.text
    assert response.headers["HX-Retarget"] == "this"
    assert response.headers["HX-Reswap"] == "outerHTML"


def test_invalid_htmx2_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": ""}, headers=HX2)
    assert response.status_code == 422
    assert 'id="page"' not in response.text
    assert response.headers["HX-Retarget"] == "this"


def test_invalid_htmx_post_retargets_a_wrapper(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "HX-Target": "div#new-todo"}
    response = client.post("/todos/new", data={"title": ""}, headers=headers)
    assert response.headers["HX-Retarget"] == "#new-todo"


def test_invalid_htmx2_post_retargets_a_wrapper(client: flask.testing.FlaskClient) -> None:
    headers = {**HX2, "HX-Target": "new-todo"}
    response = client.post("/todos/new", data={"title": ""}, headers=headers)
    assert response.headers["HX-Retarget"] == "#new-todo"


def test_invalid_htmx_post_retargets_an_odd_id(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "HX-Target": "div#new%20todo"}
    response = client.post("/todos/new", data={"title": ""}, headers=headers)
    assert response.headers["HX-Retarget"] == '[id="new todo"]'


def test_invalid_json_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", json={"title": "", "order": "x"})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.json == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "The input is not valid; see errors.",
        "code": "invalid",
        "errors": {"title": ["This field is required."], "order": ["Not a valid integer value."]},
    }


def test_invalid_json_post_to_form_view(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", json={"title": ""})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


def test_invalid_form_post_accepting_json(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": ""}, headers={"Accept": "application/json"})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"


def test_invalid_xss_stays_inert(client: flask.testing.FlaskClient) -> None:
    payload = "<script>alert(1)</script>" + "x" * 30
    response = client.post("/todos/new", data={"title": payload, "order": '"><img src=x onerror=alert(1)>'})
    assert response.status_code == 422
    assert "<script>alert(1)</script>" not in response.text
    assert "<img" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


# Conflict: 409


def test_conflict_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "taken"})
    assert response.status_code == 409
    assert 'id="page"' in response.text
    assert "A todo with that title exists." in response.text
    assert response.text.count("A todo with that title exists.") == 1
    assert 'value="taken"' in response.text


def test_conflict_form_post_fresh_id(client: flask.testing.FlaskClient) -> None:
    submitted = str(uuid.uuid4())
    response = client.post("/todos/new", data={"title": "taken", "id": submitted})
    assert hidden_id(response.text) not in ("", submitted)


def test_conflict_flash_not_shown_again(client: flask.testing.FlaskClient) -> None:
    client.post("/todos/new", data={"title": "taken"})
    assert "A todo with that title exists." not in client.get("/todos/new").text


def test_conflict_htmx_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "taken"}, headers=HX4)
    assert response.status_code == 409
    assert 'id="page"' not in response.text
    assert re.search(r'role="alert">\s*<p>A todo with that title exists.</p>', response.text)
    assert response.headers["HX-Retarget"] == "this"
    assert response.headers["HX-Reswap"] == "outerHTML"


def test_conflict_json_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", json={"title": "taken"})
    assert response.status_code == 409
    assert response.json == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "A todo with that title exists.",
        "code": "duplicate_title",
    }


# Rejected: 422


def test_rejected_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "forbidden"})
    assert response.status_code == 422
    assert 'id="page"' in response.text
    assert re.search(r'role="alert">\s*<p>Forbidden is not a title.</p>', response.text)


def test_rejected_htmx_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "forbidden"}, headers=HX4)
    assert response.status_code == 422
    assert 'id="page"' not in response.text
    assert "Forbidden is not a title." in response.text
    assert response.headers["HX-Reswap"] == "outerHTML"


def test_rejected_json_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", json={"title": "forbidden"})
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["code"] == "forbidden_title"
    assert response.json["detail"] == "Forbidden is not a title."


# Faults


def test_fault_propagates(client: flask.testing.FlaskClient) -> None:
    with pytest.raises(RuntimeError, match="on fire"):
        client.post("/todos/new", data={"title": "boom"})


def test_fault_is_500_without_details(app: flask.Flask) -> None:
    app.config["TESTING"] = False
    response = app.test_client().post("/api/todos", json={"title": "boom"})
    assert response.status_code == 500
    assert "on fire" not in response.text


# Live validation


def test_validate_returns_only_the_field(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "X-Commands-Validate": "order"}
    response = client.post("/todos/new", data={"title": "", "order": "x"}, headers=headers)
    assert response.status_code == 200
    assert response.text.strip().startswith(
        '<div class="commands-field commands-field-invalid" id="order-field">'
    )
    assert "Not a valid integer value." in response.text
    assert "This field is required." not in response.text
    # A morph keeps what the user typed while the request was in flight.
    assert response.headers["HX-Reswap"] == "outerMorph"
    assert ADDED == []


def test_validate_htmx2_swaps_outer_html(client: flask.testing.FlaskClient) -> None:
    headers = {**HX2, "X-Commands-Validate": "order"}
    response = client.post("/todos/new", data={"title": "", "order": "x"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["HX-Reswap"] == "outerHTML"  # htmx 2 has no morph swap of its own


def test_validate_valid_field(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "X-Commands-Validate": "title"}
    response = client.post("/todos/new", data={"title": "Milk", "order": "x"}, headers=headers)
    assert response.status_code == 200
    assert 'id="title-field"' in response.text
    assert "aria-invalid" not in response.text
    assert "Not a valid integer value." not in response.text


def test_validate_does_not_handle(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "X-Commands-Validate": "title"}
    client.post("/todos/new", data={"title": "taken"}, headers=headers)
    assert ADDED == []


def test_validate_unknown_field(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "X-Commands-Validate": "actor_id"}
    response = client.post("/todos/new", data={"title": "Milk"}, headers=headers)
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "unknown_field"
    assert response.json["detail"] == (
        "X-Commands-Validate names 'actor_id', which is not a field of AddTodo;"
        " use one of 'id', 'title', 'order'."
    )


def test_validate_json(client: flask.testing.FlaskClient) -> None:
    headers = {"X-Commands-Validate": "order"}
    response = client.post("/api/todos", json={"title": "", "order": [1]}, headers=headers)
    assert response.status_code == 200
    assert response.json == {"errors": {"order": ["Not a valid value."]}}


def test_validate_json_builds_no_form(
    client: flask.testing.FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON live validation the compiled plan decides builds no form."""
    built: list[object] = []
    real = AddTodo.Form

    def counting(*args: t.Any, **kwargs: t.Any) -> wtforms.Form:
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(AddTodo, "Form", counting)
    headers = {"X-Commands-Validate": "title"}
    response = client.post("/api/todos", json={"title": "", "order": "soon"}, headers=headers)
    assert response.json == {"errors": {"title": ["This field is required."]}}
    response = client.post("/api/todos", json={"title": "Milk"}, headers=headers)
    assert response.json == {"errors": {"title": []}}
    assert built == []


def test_validate_type_error_alone_as_submit(client: flask.testing.FlaskClient) -> None:
    """Live validation words a field as a submission does: a number that does not parse gets its
    type error alone, not also the range check after it."""
    headers = {"X-Commands-Validate": "count"}
    response = client.post("/ranged", json={"count": "abc"}, headers=headers)
    assert response.json == {"errors": {"count": ["Not a valid integer value."]}}
    submitted = client.post("/ranged", json={"count": "abc"})
    assert submitted.status_code == 422
    assert submitted.json is not None
    assert submitted.json["errors"] == {"count": ["Not a valid integer value."]}


def test_validate_escapes_the_value(client: flask.testing.FlaskClient) -> None:
    headers = {**HX4, "X-Commands-Validate": "title"}
    response = client.post("/todos/new", data={"title": "<script>alert(1)</script>" * 3}, headers=headers)
    assert "<script>" not in response.text


def _live_input(html: str) -> tuple[str, dict[str, str]]:
    """The title input's tag in ``html`` and its live-validation headers."""
    tag = re.search(r'<input[^>]*name="title"[^>]*>', html)
    assert tag is not None, html
    headers = re.search(r'hx-headers="([^"]+)"', tag.group(0))
    assert headers is not None
    return tag.group(0), json.loads(unescape(headers.group(1)))


CUSTOM_FIELD = (
    '{{ commands_macros.render_field(form.title, url="/todos/new", trigger="keyup changed delay:400ms",'
    ' placeholder="Buy milk", class="wide", autofocus=true) }}'
)


def _without(tag: str, *names: str) -> str:
    for name in names:
        tag = re.sub(rf' {name}="[^"]*"', "", tag)
    return tag


def test_validate_renders_the_field_as_rendered(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    with app.test_request_context("/todos/new"):
        form = AddTodo.form()
        form.title.id = form.title.label.field_id = "new-title"
        page_tag, headers = _live_input(flask.render_template_string(CUSTOM_FIELD, form=form))
    response = client.post("/todos/new", data={"title": ""}, headers={**HX4, **headers})
    assert response.status_code == 200
    tag, _ = _live_input(response.text)
    assert 'placeholder="Buy milk"' in tag
    assert 'hx-trigger="keyup changed delay:400ms"' in tag
    assert 'class="wide"' in tag
    assert 'id="new-title"' in tag
    assert 'aria-invalid="true"' in tag
    assert 'aria-describedby="new-title-errors"' in tag
    assert '<label for="new-title">' in response.text
    # Nothing else differs: the same attributes, in the same order, the same signed arguments.
    assert _without(tag, "aria-invalid", "aria-describedby", "hx-headers") == _without(page_tag, "hx-headers")
    again = client.post("/todos/new", data={"title": "Milk"}, headers={**HX4, **headers})
    tag, _ = _live_input(again.text)
    assert 'value="Milk"' in tag
    assert "aria-invalid" not in tag
    assert _without(tag, "value", "hx-headers") == _without(page_tag, "value", "hx-headers")


def test_validate_ignores_render_arguments_not_signed_by_the_app(
    app: flask.Flask, client: flask.testing.FlaskClient
) -> None:
    forged = URLSafeSerializer("another secret", salt="flask-commands.render-field").dumps(
        {"attrs": {"onfocus": "alert(1)"}, "trigger": "load"}
    )
    for token in (forged, "not a token", json.dumps({"attrs": {"onfocus": "alert(1)"}})):
        headers = {**HX4, "X-Commands-Validate": "title", "X-Commands-Render": token}
        response = client.post("/todos/new", data={"title": ""}, headers=headers)
        assert response.status_code == 200
        tag, _ = _live_input(response.text)
        assert "onfocus" not in tag
        assert 'hx-trigger="change delay:250ms, input delay:400ms"' in tag


def test_json_post_runs_the_handler_once(app: flask.Flask) -> None:
    with app.test_request_context("/api/todos", method="POST", json={"title": "Milk"}):
        response = app.view_functions["api_add"]()
    assert response.status_code == 201
    assert len(ADDED) == 1


# command_view's own errors


def test_command_view_not_a_command() -> None:
    with pytest.raises(TypeError, match=r"^command_view\(\) takes a Command subclass, not <class 'int'>\.$"):
        command_view(int, add_todo)  # type: ignore[type-var]


def test_command_view_not_a_handler() -> None:
    def plain(cmd: AddTodo) -> None:
        pass

    with pytest.raises(TypeError, match=r"decorate it with @handler\(AddTodo\)\.$"):
        command_view(AddTodo, plain)  # type: ignore[arg-type]


def test_command_view_wrong_handler() -> None:
    with pytest.raises(TypeError) as excinfo:
        command_view(AddTodo, handle_everything)  # type: ignore[arg-type]
    assert excinfo.value.args == (
        "handler 'handle_everything' takes Everything, not AddTodo; pass the handler of the command.",
    )


def test_command_view_block_without_template() -> None:
    with pytest.raises(TypeError) as excinfo:
        command_view(AddTodo, add_todo, block="form")
    assert excinfo.value.args == ("command_view() got block='form' without a template; pass template= too.",)


def test_command_view_keeps_the_name(app: flask.Flask) -> None:
    assert app.view_functions["new_todo"].__name__ == "new_todo"


# Static htmx and its SRI hash


def test_static_htmx_immutable(client: flask.testing.FlaskClient) -> None:
    response = client.get(f"/_commands/static/{htmx.HTMX_FILENAME}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    response.close()


def test_static_other_files_not_immutable(client: flask.testing.FlaskClient) -> None:
    response = client.get("/_commands/static/htmx-LICENSE")
    assert response.status_code == 200
    assert "immutable" not in response.headers.get("Cache-Control", "")
    response.close()


def test_htmx_script_integrity_matches_the_file(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    with app.test_request_context():
        tag = flask.render_template_string(
            '{% from "commands/macros.html" import htmx_script %}{{ htmx_script() }}'
        )
    pattern = r'<script src="([^"]+)" integrity="sha384-([^"]+)" crossorigin="anonymous"></script>'
    match = re.match(pattern, tag)  # the first tag, htmx; the package's commands.js follows
    assert match is not None, tag
    response = client.get(match.group(1))
    digest = base64.b64encode(hashlib.sha384(response.data).digest()).decode()
    response.close()
    assert match.group(2) == digest
    assert htmx.HTMX_VERSION in match.group(1)


# CSRF (Flask-WTF)


@pytest.fixture
def csrf_app(app: flask.Flask) -> flask.Flask:
    CSRFProtect(app)
    return app


def csrf_token(client: flask.testing.FlaskClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/todos/new").text)
    assert match is not None
    return match.group(1)


def test_csrf_form_post_with_token(csrf_app: flask.Flask) -> None:
    client = csrf_app.test_client()
    token = csrf_token(client)
    response = client.post("/todos/new", data={"title": "Milk", "csrf_token": token})
    assert response.status_code == 201


def test_csrf_htmx_post_with_header(csrf_app: flask.Flask) -> None:
    client = csrf_app.test_client()
    token = csrf_token(client)
    response = client.post("/todos/new", data={"title": "Milk"}, headers={**HX4, "X-CSRFToken": token})
    assert response.status_code == 201


def test_csrf_htmx_post_tampered_rerenders_the_form(csrf_app: flask.Flask) -> None:
    client = csrf_app.test_client()
    csrf_token(client)
    submitted = str(uuid.uuid4())
    data = {"title": "Milk", "csrf_token": "tampered", "id": submitted}
    response = client.post("/todos/new", data=data, headers=HX4)
    assert response.status_code == 400
    assert 'id="page"' not in response.text
    assert re.search(
        r'role="alert">\s*<p>The CSRF token is invalid. Submit the form again.</p>', response.text
    )
    assert 'value="Milk"' in response.text
    assert hidden_id(response.text) != submitted
    assert response.headers["HX-Retarget"] == "this"
    assert response.headers["HX-Reswap"] == "outerHTML"
    assert ADDED == []


def test_csrf_htmx_post_again_with_the_new_token(csrf_app: flask.Flask) -> None:
    client = csrf_app.test_client()
    csrf_token(client)
    response = client.post("/todos/new", data={"title": "Milk", "csrf_token": "x"}, headers=HX4)
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert match is not None
    response = client.post("/todos/new", data={"title": "Milk", "csrf_token": match.group(1)}, headers=HX4)
    assert response.status_code == 201


def test_csrf_htmx_post_elsewhere_gets_a_fragment(csrf_app: flask.Flask) -> None:
    @csrf_app.post("/plain")
    def plain() -> str:
        return "ok"

    response = csrf_app.test_client().post("/plain", data={"title": "Milk"}, headers=HX4)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert response.text == (
        '<div class="commands-errors commands-csrf-error" role="alert"><p>The CSRF token is missing.'
        " Reload the page and try again.</p></div>"
    )
    assert response.headers["HX-Retarget"] == "closest form"
    assert response.headers["HX-Reswap"] == "afterbegin"


def test_csrf_live_validation_swaps_nothing(csrf_app: flask.Flask) -> None:
    headers = {**HX4, "X-Commands-Validate": "title"}
    response = csrf_app.test_client().post("/todos/new", data={"title": ""}, headers=headers)
    assert response.status_code == 400
    assert response.headers["HX-Reswap"] == "none"


def test_csrf_json_post_without_token(csrf_app: flask.Flask) -> None:
    response = csrf_app.test_client().post("/api/todos", json={"title": "Milk"})
    assert response.status_code == 400
    assert response.json == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "The CSRF token is missing.",
        "code": "csrf_failed",
    }


def test_csrf_plain_post_without_token(csrf_app: flask.Flask) -> None:
    response = csrf_app.test_client().post("/todos/new", data={"title": "Milk"})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "The CSRF token is missing." in response.text


def test_csrf_plain_post_uses_the_apps_400_handler(csrf_app: flask.Flask) -> None:
    csrf_app.register_error_handler(400, lambda e: ("custom 400", 400))
    response = csrf_app.test_client().post("/todos/new", data={"title": "Milk"})
    assert response.text == "custom 400"


def test_csrf_apps_own_handler_wins() -> None:
    app = flask.Flask(__name__)
    app.secret_key = "test"
    from flask_wtf.csrf import CSRFError

    app.register_error_handler(CSRFError, lambda e: ("mine", 400))
    Commands(app)
    CSRFProtect(app)

    @app.post("/x")
    def x() -> str:
        return "ok"

    assert app.test_client().post("/x", headers=HX4).text == "mine"


def test_csrf_exempt_view(csrf_app: flask.Flask) -> None:
    csrf = csrf_app.extensions["csrf"]
    csrf.exempt(csrf_app.view_functions["api_add"])
    response = csrf_app.test_client().post("/api/todos", json={"title": "Milk"})
    assert response.status_code == 201


def test_csrf_exempt_blueprint() -> None:
    app = flask.Flask(__name__)
    app.secret_key = "test"
    Commands(app)
    csrf = CSRFProtect(app)
    api = flask.Blueprint("api", __name__)

    @api.post("/todos")
    @command_view(AddTodo, add_todo, trusted=lambda: {"actor_id": 1})
    def add(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return result, 201

    csrf.exempt(api)
    app.register_blueprint(api, url_prefix="/api")
    assert app.test_client().post("/api/todos", json={"title": "Milk"}).status_code == 201


def test_csrf_live_validation_with_token(csrf_app: flask.Flask) -> None:
    client = csrf_app.test_client()
    token = csrf_token(client)
    headers = {**HX4, "X-Commands-Validate": "title", "X-CSRFToken": token}
    response = client.post("/todos/new", data={"title": ""}, headers=headers)
    assert response.status_code == 200
    assert "This field is required." in response.text


# Fuzz: no input is a 500


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/problem+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "text/html",
    "application/xml",
    "",
    "garbage",
]
# Any code point: lone surrogates, NUL and the other control characters included.
CHARACTERS = (
    st.characters(exclude_categories=())
    | st.integers(0xD800, 0xDFFF).map(chr)
    | st.integers(0, 0x1F).map(chr)
    | st.sampled_from(["\x7f", "\x85", "\u2028", "\ufeff"])
)
KEYS = st.sampled_from(
    ["text", "number", "ratio", "amount", "flag", "day", "colour", "ref", "owner", "id", "issued_at"]
) | st.text(CHARACTERS, max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(CHARACTERS, max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
FORM_VALUES = st.text(CHARACTERS, max_size=12) | st.sampled_from(
    ["1", "-3", "1.5", "1e400", "NaN", "y", "red", "2024-02-30", "2024-01-01", str(uuid.uuid4()), ""]
)


def _quote(text: str) -> bytes:
    return urllib.parse.quote_from_bytes(text.encode("utf-8", "surrogatepass")).encode()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes | dict[str, t.Any] | None]:
    """A body: JSON of a random value, url-encoded pairs, or random bytes."""
    kind = draw(st.sampled_from(["json", "form", "bytes", "none"]))
    if kind == "json":
        value = draw(st.dictionaries(KEYS, JSON_VALUES, max_size=6) | JSON_VALUES)
        return kind, json.dumps(value).encode()
    if kind == "form":
        # Encoded here: the test client cannot encode a lone surrogate; a client sends its bytes.
        pairs = draw(st.dictionaries(KEYS, FORM_VALUES, max_size=6)).items()
        return kind, b"&".join(_quote(name) + b"=" + _quote(value) for name, value in pairs)
    if kind == "bytes":
        return kind, draw(st.binary(max_size=64))
    return kind, None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/everything", "/api/todos", "/todos/new"]),
    method=st.sampled_from(["POST", "PUT", "GET"]),
    body=bodies(),
    content_type=st.sampled_from(CONTENT_TYPES),
    htmx_request=st.booleans(),
    accept=st.sampled_from(["", "*/*", "application/json", "text/html", "application/problem+json;q=0.5"]),
    validate=st.none() | KEYS.filter(lambda k: k.isascii() and k.isprintable()),
)
def test_fuzz_never_500(
    path: str,
    method: str,
    body: tuple[str, t.Any],
    content_type: str,
    htmx_request: bool,
    accept: str,
    validate: str | None,
) -> None:
    app = _fuzz_app()
    headers: dict[str, str] = {}
    if htmx_request:
        headers.update(HX4)
    if accept:
        headers["Accept"] = accept
    if validate is not None:
        headers["X-Commands-Validate"] = validate
    kind, data = body
    if method == "PUT" and path != "/everything":
        method = "POST"
    if kind == "form":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = app.test_client().open(path, method=method, data=data, headers=headers)
    else:
        if content_type:
            headers["Content-Type"] = content_type
        response = app.test_client().open(path, method=method, data=data or b"", headers=headers)
    assert response.status_code < 500, response.text
    read_as_text = kind == "form" or (kind == "json" and "json" in content_type)
    if method != "GET" and read_as_text and _has_lone_surrogate(data):
        # Never built, validated or handled: refused (400), or not read at all (413, 415).
        assert response.status_code in (400, 413, 415), response.text
    if response.status_code in (400, 413, 415) and response.mimetype == "application/problem+json":
        problem = json.loads(response.text)
        assert set(problem) <= {"type", "title", "status", "detail", "code", "errors"}


def _has_lone_surrogate(data: bytes) -> bool:
    """Whether a JSON or url-encoded body carries a lone surrogate (as an escape or its bytes)."""
    try:
        text = urllib.parse.unquote_to_bytes(data).decode("utf-8", "surrogatepass")
        decoded = json.loads(text) if text.lstrip().startswith(("{", "[", '"')) else text
    except ValueError:
        return False
    return any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(decoded, ensure_ascii=False))


_FUZZ_APPS: list[flask.Flask] = []


def _fuzz_app() -> flask.Flask:
    if not _FUZZ_APPS:
        app = make_app()
        app.config["MAX_CONTENT_LENGTH"] = 10_000
        _FUZZ_APPS.append(app)
    return _FUZZ_APPS[0]


def test_missing_template_names_it_and_where_flask_looked() -> None:
    app = flask.Flask(__name__, template_folder="no-such-folder")
    app.secret_key = "test"
    app.testing = True
    Commands(app)

    @app.route("/todos/new", methods=["GET", "POST"])
    @command_view(AddTodo, add_todo, template="todos/new.html", block="form", trusted=lambda: {"actor_id": 1})
    def new_todo(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return "added", 201

    client = app.test_client()
    for headers in ({}, HX4):
        with pytest.raises(jinja2.TemplateNotFound) as excinfo:
            client.get("/todos/new", headers=headers)
        message = str(excinfo.value)
        assert excinfo.value.name == "todos/new.html"
        assert message.startswith(
            "The command view 'test_missing_template_names_it_and_where_flask_looked.<locals>.new_todo'"
            " renders the template 'todos/new.html', which Flask cannot find. It looked in: "
        )
        assert f"{app.root_path}/no-such-folder (the app)" in message
        assert message.endswith(
            "Create 'todos/new.html' in one of these folders, or pass command_view(..., template=)"
            " the name of an existing template."
        )


class Rename(Command):
    title: str = field(validators=[v.InputRequired()], label="Title")
    order: int | None = field(default=None, label="Order")
    version: int = field(form_field=wtforms.IntegerField(widget=wtforms.widgets.HiddenInput()))


@handler(Rename)
def rename(cmd: Rename) -> str:
    if cmd.version != 3:
        current = {"title": "Edited in tab A", "order": None, "version": 3}
        raise Conflict("This todo was changed elsewhere.", code="stale_version", current=current)
    return cmd.title


@pytest.fixture
def rename_client() -> flask.testing.FlaskClient:
    app = flask.Flask(__name__)
    app.testing = True
    app.secret_key = "test"
    app.jinja_loader = jinja2.DictLoader(
        {"rename.html": "{{ commands_macros.render_form(form, theirs='/todo') }}"}
    )
    Commands(app)

    @app.route("/rename", methods=["GET", "POST"])
    @command_view(Rename, rename, template="rename.html")
    def rename_view(result: str, cmd: Rename) -> flask.typing.ResponseReturnValue:
        return result

    return app.test_client()


@pytest.mark.parametrize("headers", [{}, HX4], ids=["no-js", "htmx"])
def test_conflict_keeps_the_text_and_shows_the_current_state(
    rename_client: flask.testing.FlaskClient, headers: dict[str, str]
) -> None:
    response = rename_client.post("/rename", data={"title": "Mine", "version": "2"}, headers=headers)
    assert response.status_code == 409
    html = response.text
    assert re.search(r'<input autofocus[^>]* name="title"[^>]* value="Mine">', html), html
    assert "This todo was changed elsewhere." in html
    assert html.count("This todo was changed elsewhere.") == 1
    assert 'Title is now “<span class="commands-conflict-current">Edited in tab A</span>”.' in html
    assert "Order is now" not in html  # unchanged: not shown
    assert '<a href="/todo" class="commands-conflict-theirs">take theirs</a>' in html
    # The hidden version is the current one: submitting again saves over the change.
    assert re.search(r'name="version" type="hidden" value="3"', html), html
    fresh_id = re.search(r'name="id" type="hidden" value="([^"]+)"', html)
    assert fresh_id is not None
    again = rename_client.post("/rename", data={"title": "Mine", "version": "3", "id": fresh_id.group(1)})
    assert again.status_code == 200
    assert again.text == "Mine"


def test_conflict_json_carries_the_current_state(rename_client: flask.testing.FlaskClient) -> None:
    response = rename_client.post("/rename", json={"title": "Mine", "version": 2})
    assert response.status_code == 409
    assert response.json == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "This todo was changed elsewhere.",
        "code": "stale_version",
        "current": {"title": "Edited in tab A", "order": None, "version": 3},
    }


def test_conflict_without_current_state_shows_the_message_once(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "taken"})
    assert response.text.count("A todo with that title exists.") == 1  # the page's flashes()
    assert "commands-conflict" not in response.text.replace("commands-flash-conflict", "")
    assert "autofocus" not in response.text


# The unkeyed path (no Idempotency-Key, no id): the same outcomes as through the idempotency code


class _AppResponse(flask.Response):
    """An app's own response class, to tell its responses from werkzeug's."""


def _unkeyed_app() -> flask.Flask:
    import werkzeug

    from flask_commands import CommandInvalid

    app = flask.Flask(__name__)
    app.response_class = _AppResponse
    Commands(app)

    @handler(Ranged)
    def strict(cmd: Ranged) -> int:
        if cmd.count == 5:
            raise CommandInvalid({"count": ["Five is taken."]})
        return cmd.count

    @app.post("/plain")
    @command_view(Ranged, strict)
    def plain(result: int, cmd: Ranged) -> flask.typing.ResponseReturnValue:
        return werkzeug.Response(f"{result}", status=201, headers={"X-Count": str(result)})

    @app.post("/own")
    @command_view(Ranged, strict)
    def own(result: int, cmd: Ranged) -> flask.typing.ResponseReturnValue:
        return _AppResponse(f"{result}", status=202)

    return app


def test_unkeyed_success_of_another_response_class_made_the_apps() -> None:
    app = _unkeyed_app()
    with app.test_request_context("/plain", method="POST", json={"count": 3}):
        response = app.view_functions["plain"]()
    assert type(response) is _AppResponse
    assert (response.status_code, response.get_data(), response.headers["X-Count"]) == (201, b"3", "3")


def test_unkeyed_success_of_the_apps_class_returned_as_is() -> None:
    app = _unkeyed_app()
    with app.test_request_context("/own", method="POST", json={"count": 3}):
        response = app.view_functions["own"]()
    assert type(response) is _AppResponse
    assert (response.status_code, response.get_data()) == (202, b"3")


def test_unkeyed_command_invalid_from_the_handler_is_a_422() -> None:
    response = _unkeyed_app().test_client().post("/plain", json={"count": 5})
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert (response.json["code"], response.json["errors"]) == ("invalid", {"count": ["Five is taken."]})
