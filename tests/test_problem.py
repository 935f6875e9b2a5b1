"""Tests for flask_commands.problem: RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import json

import flask
import pytest

from flask_commands.problem import problem


@pytest.fixture
def app() -> flask.Flask:
    return flask.Flask(__name__)


def test_problem_minimal(app: flask.Flask) -> None:
    with app.app_context():
        response = problem(400)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert json.loads(response.data) == {"type": "about:blank", "title": "Bad Request", "status": 400}


def test_problem_all_members(app: flask.Flask) -> None:
    with app.app_context():
        response = problem(
            422,
            detail="The input is not valid; see errors.",
            code="invalid",
            errors={"title": ["This field is required."]},
        )
    assert json.loads(response.data) == {
        "type": "about:blank",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "The input is not valid; see errors.",
        "code": "invalid",
        "errors": {"title": ["This field is required."]},
    }


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (400, "Bad Request"),
        (405, "Method Not Allowed"),
        (409, "Conflict"),
        (413, "Content Too Large"),
        (415, "Unsupported Media Type"),
        (422, "Unprocessable Content"),
        (429, "Too Many Requests"),
        (503, "Service Unavailable"),
        (499, "Client Error"),
        (599, "Server Error"),
    ],
)
def test_problem_title_per_status(app: flask.Flask, status: int, title: str) -> None:
    with app.app_context():
        assert json.loads(problem(status).data)["title"] == title


def test_problem_title_given(app: flask.Flask) -> None:
    with app.app_context():
        body = json.loads(problem(409, title="Todo exists", type="https://example.com/todo-exists").data)
    assert body["title"] == "Todo exists"
    assert body["type"] == "https://example.com/todo-exists"


def test_problem_headers(app: flask.Flask) -> None:
    with app.app_context():
        response = problem(405, headers={"Allow": "POST"})
    assert response.headers["Allow"] == "POST"


def test_problem_non_ascii(app: flask.Flask) -> None:
    with app.app_context():
        response = problem(409, detail="Déjà là")
    assert json.loads(response.data)["detail"] == "Déjà là"


def test_problem_without_app_context() -> None:
    response = problem(400)
    assert response.status_code == 400


def test_problem_uses_the_apps_response_class(app: flask.Flask) -> None:
    class MyResponse(flask.Response):
        pass

    app.response_class = MyResponse
    with app.app_context():
        assert isinstance(problem(400), MyResponse)


@pytest.mark.parametrize("status", [200, 302, 600, "400"])
def test_problem_not_an_error_status(status: object) -> None:
    with pytest.raises(ValueError, match=r"^problem") as excinfo:
        problem(status)  # type: ignore[arg-type]
    assert excinfo.value.args == (f"problem() takes an HTTP error status from 400 to 599, not {status!r}.",)
