"""Tests for flask_commands._body: reading a command view's request body, or a clear 4xx."""

from __future__ import annotations

import io
import json
import typing as t

import flask
import jinja2
import pytest
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler


class AddTodo(Command):
    title: str = field(validators=[v.InputRequired(), v.Length(max=30)], label="Title")
    order: int | None = None


#: Every todo the handler added, in order.
ADDED: list[AddTodo] = []


@handler(AddTodo)
def add_todo(cmd: AddTodo) -> dict[str, t.Any]:
    ADDED.append(cmd)
    return {"title": cmd.title, "order": cmd.order}


PAGE = (
    """<html><body>{% block new_form %}{{ commands_macros.render_form(form) }}{% endblock %}</body></html>"""
)

HX4 = {
    "HX-Request": "true",
    "HX-Request-Type": "partial",
    "HX-Source": "form",
    "HX-Target": "form",
    "HX-Current-URL": "http://localhost/todos/new",
    "Accept": "text/html",
}


def make_app() -> flask.Flask:
    """An app with a form view (``/todos/new``) and a JSON-only view (``/api/todos``)."""
    app = flask.Flask(__name__)
    app.config["TESTING"] = True
    app.secret_key = "test"
    app.jinja_loader = jinja2.DictLoader({"page.html": PAGE})
    Commands(app)

    @app.route("/todos/new", methods=["GET", "POST", "DELETE"])
    @command_view(AddTodo, add_todo, template="page.html", block="new_form")
    def new_todo(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return result, 201

    @app.route("/api/todos", methods=["POST"])
    @command_view(AddTodo, add_todo)
    def api_add(result: dict[str, t.Any], cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return result, 201

    return app


@pytest.fixture
def app() -> flask.Flask:
    ADDED.clear()
    return make_app()


# Malformed bodies: 400, 413, 415


def test_malformed_json(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data='{"title": ', content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["code"] == "malformed_json"
    assert response.json["detail"] == (
        "The request body is not valid JSON: Expecting value at line 1 column 11."
    )


def test_malformed_json_form_view(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data="{", content_type="application/json", headers=HX4)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_malformed_json_nan(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data='{"title": "a", "order": NaN}', content_type="application/json")
    assert response.status_code == 400


def test_malformed_json_deep(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data="[" * 100_000, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("body", "kind"), [("[1, 2]", "an array"), ('"a"', "a string"), ("3", "a number"), ("null", "null")]
)
def test_json_not_an_object(client: flask.testing.FlaskClient, body: str, kind: str) -> None:
    response = client.post("/api/todos", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "not_an_object"
    assert response.json["detail"] == f"The request body must be a JSON object, not {kind}."


def test_json_not_an_object_htmx(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data="[]", content_type="application/json", headers=HX4)
    assert response.status_code == 400


def test_empty_json_body_is_an_empty_object(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data="", content_type="application/json")
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"title": ["This field is required."]}


def test_empty_body_without_content_type(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos")
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"title": ["This field is required."]}


def test_empty_body_form_view_rerenders(client: flask.testing.FlaskClient) -> None:
    response = client.delete("/todos/new")
    assert response.status_code == 422
    assert "This field is required." in response.text


def test_empty_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={}, headers=HX4)
    assert response.status_code == 422
    assert "This field is required." in response.text


def test_form_post_to_json_view_415(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data={"title": "Milk"})
    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["code"] == "unsupported_media_type"
    assert response.json["detail"] == (
        "The content type 'application/x-www-form-urlencoded' is not accepted here; send application/json."
    )
    assert ADDED == []


def test_text_plain_to_json_view_415(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data="title=Milk", content_type="text/plain")
    assert response.status_code == 415
    assert response.mimetype == "application/problem+json"


def test_text_plain_form_view_415(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data="title=Milk", content_type="text/plain")
    assert response.status_code == 415
    assert response.mimetype == "text/html"


def test_text_plain_htmx_415(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data="title=Milk", content_type="text/plain", headers=HX4)
    assert response.status_code == 415


def test_body_without_content_type_415(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data=b'{"title": "Milk"}', headers={"Content-Type": ""})
    assert response.status_code == 415
    assert response.json is not None
    assert response.json["detail"] == "The request body has no content type; send application/json."


def test_too_large_json(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = client.post("/api/todos", json={"title": "x" * 200})
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["code"] == "content_too_large"
    assert response.json["detail"] == "The request body is larger than the limit of 100 bytes."


def test_too_large_form_post(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = client.post("/todos/new", data={"title": "x" * 200})
    assert response.status_code == 413
    assert ADDED == []


def test_too_large_htmx_post(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = client.post("/todos/new", data={"title": "x" * 200}, headers=HX4)
    assert response.status_code == 413


def test_too_large_multipart(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    app.config["MAX_FORM_MEMORY_SIZE"] = 50
    response = client.post("/todos/new", data={"title": "x" * 200}, content_type="multipart/form-data")
    assert response.status_code == 413


def test_too_large_json_without_content_length(app: flask.Flask, client: flask.testing.FlaskClient) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 100
    body = json.dumps({"title": "x" * 200}).encode()
    response = client.post(
        "/api/todos",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        # What a server sets when it ends a chunked body; werkzeug reads nothing otherwise.
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413


def test_too_large_form_post_without_content_length(
    app: flask.Flask, client: flask.testing.FlaskClient
) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 100
    response = client.post(
        "/todos/new",
        input_stream=io.BytesIO(b"title=" + b"x" * 200),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"},
        environ_base={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert ADDED == []


def test_multipart_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data={"title": "Milk"}, content_type="multipart/form-data")
    assert response.status_code == 201


# Text that is not valid Unicode: 400 before anything is built


def test_invalid_utf8_json(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data=b'{"title": "\xff"}', content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["code"] == "invalid_unicode"
    assert response.json["detail"] == (
        "The request body is not valid UTF-8 text: byte 0xff at position 11 (invalid start byte);"
        " send the text encoded as UTF-8."
    )


def test_invalid_utf8_encoded_surrogate_json(client: flask.testing.FlaskClient) -> None:
    # ED A0 80 would be U+D800 in UTF-8, which UTF-8 forbids (CESU-8 and "WTF-8" write it so).
    response = client.post("/api/todos", data=b'{"title": "\xed\xa0\x80"}', content_type="application/json")
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "invalid_unicode"
    assert ADDED == []


@pytest.mark.parametrize("escape", ["\\ud800", "\\uDFFF", "a\\udc00b", "\\ude00\\ud83d"])
def test_lone_surrogate_escape_json(client: flask.testing.FlaskClient, escape: str) -> None:
    body = '{"title": "' + escape + '"}'
    response = client.post("/api/todos", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "invalid_unicode"
    assert ADDED == []


def test_lone_surrogate_escape_json_detail(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data='{"title": "\\ud800"}', content_type="application/json")
    assert response.json is not None
    assert response.json["detail"] == (
        "The request body is not valid Unicode: the JSON escape '\\ud800' is a lone surrogate, half of"
        " a pair; escape the whole character, or send it as UTF-8."
    )


def test_lone_surrogate_in_a_key_json(client: flask.testing.FlaskClient) -> None:
    body = '{"title": "Milk", "\\ud800": 1}'
    response = client.post("/api/todos", data=body, content_type="application/json")
    assert response.status_code == 400
    assert ADDED == []


def test_lone_surrogate_nested_json(client: flask.testing.FlaskClient) -> None:
    body = '{"title": "Milk", "extra": [{"x": ["\\udbff"]}]}'
    response = client.post("/api/todos", data=body, content_type="application/json")
    assert response.status_code == 400


def test_surrogate_pair_escape_json(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data='{"title": "\\ud83d\\ude00"}', content_type="application/json")
    assert response.status_code == 201
    assert ADDED[0].title == "\U0001f600"


def test_escaped_backslash_before_u_json(client: flask.testing.FlaskClient) -> None:
    # "\\ud800" is a backslash and the letters "ud800", not an escape.
    response = client.post("/api/todos", data='{"title": "\\\\ud800"}', content_type="application/json")
    assert response.status_code == 201
    assert ADDED[0].title == "\\ud800"


def test_utf16_json(client: flask.testing.FlaskClient) -> None:
    response = client.post(
        "/api/todos", data='{"title": "Milk"}'.encode("utf-16-le"), content_type="application/json"
    )
    assert response.status_code == 201


def test_utf8_bom_json(client: flask.testing.FlaskClient) -> None:
    response = client.post(
        "/api/todos", data=b"\xef\xbb\xbf" + b'{"title": "Milk"}', content_type="application/json"
    )
    assert response.status_code == 201


def test_lone_surrogate_json_to_form_view(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data='{"title": "\\ud800"}', content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_invalid_utf8_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post(
        "/todos/new", data=b"title=%ED%A0%80", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "not valid UTF-8 text" in response.text
    assert ADDED == []


def test_invalid_utf8_form_post_accepting_json(client: flask.testing.FlaskClient) -> None:
    response = client.post(
        "/todos/new",
        data=b"title=%FF",
        content_type="application/x-www-form-urlencoded",
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "invalid_unicode"
    assert response.json["detail"] == (
        "The form post is not valid UTF-8 text: byte 0xff at position 6 (invalid start byte);"
        " send the text encoded as UTF-8."
    )


def test_invalid_utf8_raw_byte_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post("/todos/new", data=b"title=\xff", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert ADDED == []


def test_utf8_form_post(client: flask.testing.FlaskClient) -> None:
    response = client.post(
        "/todos/new", data=b"title=caf%C3%A9+%F0%9F%98%80", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 201
    assert ADDED[0].title == "café \U0001f600"


# JSON around the object: decoded and worded as json.loads does


def test_json_object_with_whitespace_around(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data=' \n{"title": "Milk"}\r\n ', content_type="application/json")
    assert response.status_code == 201
    assert response.json == {"title": "Milk", "order": None}


def test_json_object_followed_by_another(client: flask.testing.FlaskClient) -> None:
    body = '{"title": "a"} {"title": "b"}'
    response = client.post("/api/todos", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "malformed_json"
    assert response.json["detail"] == "The request body is not valid JSON: Extra data at line 1 column 16."


@pytest.mark.parametrize("body", [b" ", b"\t\r\n", b"\x0b\x0c "])
def test_whitespace_json_body_is_an_empty_object(client: flask.testing.FlaskClient, body: bytes) -> None:
    response = client.post("/api/todos", data=body, content_type="application/json")
    assert response.status_code == 422
    assert response.json is not None
    assert response.json["errors"] == {"title": ["This field is required."]}


def test_json_body_of_a_bom_alone(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/todos", data=b"\xef\xbb\xbf", content_type="application/json")
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "malformed_json"
