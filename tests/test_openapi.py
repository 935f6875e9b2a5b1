"""The OpenAPI 3.1 document of command views: its shape, its validity, and a fuzzed app that keeps to it."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import functools
import json
import pathlib
import typing as t
import uuid

import flask
import hypothesis
import jinja2
import jsonschema
import pytest
import schemathesis
from flask_wtf.csrf import CSRFProtect
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import checks
from schemathesis.generation.modes import GenerationMode
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands.openapi import _document
from flask_commands.problem import problem

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROBLEMS = {"400", "409", "413", "415", "422", "503"}


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class OaAddNote(Command):
    """Add a note to a board."""

    text: str = field(validators=[v.Length(min=1, max=40)])
    rank: int | None = field(default=None, validators=[v.NumberRange(min=0, max=1000)])
    pinned: bool = False
    priority: Priority = Priority.LOW
    colour: t.Literal["red", "blue"] | None = None
    due: datetime.date | None = None
    price: decimal.Decimal | None = None
    parent: uuid.UUID | None = None
    board_id: int = field(trusted=True)


class OaClear(Command):
    board_id: int = field(trusted=True)


NOTES: dict[int, list[str]] = collections.defaultdict(list)


@handler(OaAddNote)
def add_note(cmd: OaAddNote) -> dict[str, t.Any]:
    notes = NOTES[cmd.board_id]
    if cmd.text in notes:
        raise Conflict("That note is on the board already.", code="duplicate_note")
    if cmd.pinned and cmd.priority is Priority.LOW:
        raise Rejected("Only high-priority notes may be pinned.", code="pin_low")
    notes.append(cmd.text)
    return {"text": cmd.text, "board": cmd.board_id, "count": len(notes)}


@handler(OaClear)
def clear_board(cmd: OaClear) -> int:
    return len(NOTES.pop(cmd.board_id, []))


def make_app() -> flask.Flask:
    """An app with a JSON-only view, a form view, a view on two URLs and a plain route."""
    app = flask.Flask("notes")
    app.config["TESTING"] = True
    app.config["MAX_CONTENT_LENGTH"] = 600
    app.secret_key = "test"
    app.jinja_loader = jinja2.DictLoader({"form.html": "{{ commands_macros.render_form(form) }}"})
    Commands(app)

    def board(board_id: int) -> dict[str, int]:
        if board_id > 100:
            flask.abort(404)
        return {"board_id": board_id}

    @app.post("/boards/<int:board_id>/notes")
    @command_view(OaAddNote, add_note, trusted=board)
    def create_note(
        result: dict[str, t.Any], cmd: OaAddNote, board_id: int
    ) -> flask.typing.ResponseReturnValue:
        """Pin a note on the board."""
        return flask.jsonify(result), 201, {"Location": f"/boards/{board_id}/notes/{result['count']}"}

    @app.route("/notes/new", methods=["GET", "POST"])
    @command_view(OaAddNote, add_note, template="form.html", trusted=lambda: {"board_id": 0})
    def new_note(result: dict[str, t.Any], cmd: OaAddNote) -> flask.typing.ResponseReturnValue:
        return flask.redirect("/notes", 303)

    @app.route("/boards/<int:board_id>", methods=["DELETE"])
    @app.route("/boards/<int:board_id>/clear", methods=["POST", "PUT"])
    @command_view(OaClear, clear_board, trusted=board)
    def clear(result: int, cmd: OaClear, board_id: int) -> flask.typing.ResponseReturnValue:
        return "", 204

    @app.get("/notes")
    def list_notes() -> flask.typing.ResponseReturnValue:
        return flask.jsonify(NOTES)

    return app


@pytest.fixture
def app() -> flask.Flask:
    NOTES.clear()
    return make_app()


@pytest.fixture
def doc(app: flask.Flask) -> dict[str, t.Any]:
    return _document(app)


# The document's shape


def test_openapi_document_valid(doc: dict[str, t.Any]) -> None:
    OpenAPIV31SpecValidator(doc).validate()
    assert doc["openapi"] == "3.1.0"


def test_openapi_document_is_json(doc: dict[str, t.Any]) -> None:
    assert json.loads(json.dumps(doc)) == doc


def test_openapi_info_defaults(doc: dict[str, t.Any]) -> None:
    assert doc["info"] == {"title": "notes", "version": "1.0.0"}


def test_openapi_info_given(app: flask.Flask) -> None:
    info = _document(app, title="Notes API", version="2.1")["info"]
    assert info == {"title": "Notes API", "version": "2.1"}


def test_openapi_paths_only_command_views(doc: dict[str, t.Any]) -> None:
    assert {path: list(item) for path, item in doc["paths"].items()} == {
        "/boards/{board_id}": ["delete"],
        "/boards/{board_id}/clear": ["post", "put"],
        "/boards/{board_id}/notes": ["post"],
        "/notes/new": ["post"],
    }


def test_openapi_no_command_views() -> None:
    app = flask.Flask("empty")
    Commands(app)
    doc = _document(app)
    OpenAPIV31SpecValidator(doc).validate()
    assert doc["paths"] == {}


def test_openapi_operation_ids(doc: dict[str, t.Any]) -> None:
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert sorted(ids) == ["clear", "clear_post", "clear_put", "create_note", "new_note"]


def test_openapi_summary_from_view_docstring(doc: dict[str, t.Any]) -> None:
    assert doc["paths"]["/boards/{board_id}/notes"]["post"]["summary"] == "Pin a note on the board."


def test_openapi_summary_from_command_docstring(doc: dict[str, t.Any]) -> None:
    assert doc["paths"]["/notes/new"]["post"]["summary"] == "Add a note to a board."


def test_openapi_summary_absent(doc: dict[str, t.Any]) -> None:
    # OaClear has no docstring: the signature dataclasses writes in its place is not a summary.
    assert "summary" not in doc["paths"]["/boards/{board_id}"]["delete"]


def test_openapi_tags_blueprint() -> None:
    app = flask.Flask("bp")
    Commands(app)
    bp = flask.Blueprint("api", __name__)

    @bp.post("/clear")
    @command_view(OaClear, clear_board, trusted=lambda: {"board_id": 1})
    def clear(result: int, cmd: OaClear) -> flask.typing.ResponseReturnValue:
        return "", 204

    app.register_blueprint(bp, url_prefix="/v1")
    operation = _document(app)["paths"]["/v1/clear"]["post"]
    assert (operation["operationId"], operation["tags"]) == ("api.clear", ["api"])


# Parameters


def _parameters(doc: dict[str, t.Any], path: str, method: str = "post") -> list[dict[str, t.Any]]:
    return t.cast("list[dict[str, t.Any]]", doc["paths"][path][method]["parameters"])


def test_openapi_path_parameter_int(doc: dict[str, t.Any]) -> None:
    assert _parameters(doc, "/boards/{board_id}/notes")[0] == {
        "name": "board_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }


@pytest.mark.parametrize(
    ("rule", "schema"),
    [
        ("/x/<name>", {"type": "string", "pattern": "^(?:[^/]{1,})$"}),
        ("/x/<string(length=2):name>", {"type": "string", "pattern": "^(?:[^/]{2})$"}),
        ("/x/<int(signed=True):name>", {"type": "integer"}),
        ("/x/<int(min=3, max=9):name>", {"type": "integer", "minimum": 3, "maximum": 9}),
        ("/x/<uuid:name>", {"type": "string", "format": "uuid"}),
        ("/x/<any(b, a):name>", {"type": "string", "enum": ["a", "b"]}),
        ("/x/<path:name>", {"type": "string", "pattern": "^(?:[^/].*?)$"}),
    ],
)
def test_openapi_path_parameter_converter(rule: str, schema: dict[str, t.Any]) -> None:
    app = flask.Flask("conv")
    Commands(app)
    app.add_url_rule(
        rule,
        "clear",
        command_view(OaClear, clear_board, trusted=lambda name: {"board_id": 1})(lambda r, c, name: ""),
        methods=["POST"],
    )
    doc = _document(app)
    assert list(doc["paths"]) == ["/x/{name}"]
    assert _parameters(doc, "/x/{name}")[0]["schema"] == schema
    OpenAPIV31SpecValidator(doc).validate()


def test_openapi_idempotency_key_parameter(doc: dict[str, t.Any]) -> None:
    assert _parameters(doc, "/notes/new") == [{"$ref": "#/components/parameters/IdempotencyKey"}]
    parameter = doc["components"]["parameters"]["IdempotencyKey"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("Idempotency-Key", "header", False)


@pytest.mark.parametrize(("key", "valid"), [("abc", True), ('"a b"', True), ("a b", False), ('"a"b"', False)])
def test_openapi_idempotency_key_pattern(doc: dict[str, t.Any], key: str, valid: bool) -> None:
    schema = doc["components"]["parameters"]["IdempotencyKey"]["schema"]
    assert jsonschema.Draft202012Validator(schema).is_valid(key) is valid


# Request bodies


def test_openapi_request_body_schema(doc: dict[str, t.Any]) -> None:
    body = doc["paths"]["/boards/{board_id}/notes"]["post"]["requestBody"]
    assert body["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/OaAddNote"}}}
    expected = OaAddNote.json_schema()
    del expected["$schema"]
    assert doc["components"]["schemas"]["OaAddNote"] == expected


def test_openapi_request_body_optional_json_only(doc: dict[str, t.Any]) -> None:
    assert doc["paths"]["/boards/{board_id}"]["delete"]["requestBody"]["required"] is False


def test_openapi_request_body_required_form_view(doc: dict[str, t.Any]) -> None:
    # Without a JSON content type, a view with a template takes the request as a form post.
    assert doc["paths"]["/notes/new"]["post"]["requestBody"]["required"] is True


def test_openapi_form_view_without_csrf_takes_json_and_forms(doc: dict[str, t.Any]) -> None:
    content = doc["paths"]["/notes/new"]["post"]["requestBody"]["content"]
    ref = {"schema": {"$ref": "#/components/schemas/OaAddNote"}}
    assert content == {
        "application/json": ref,
        "application/x-www-form-urlencoded": ref,
        "multipart/form-data": ref,
    }


def test_openapi_json_view_takes_json_only(doc: dict[str, t.Any]) -> None:
    assert list(doc["paths"]["/boards/{board_id}/notes"]["post"]["requestBody"]["content"]) == [
        "application/json"
    ]


def _csrf_app(exempt: bool) -> flask.Flask:
    app = make_app()
    csrf = CSRFProtect(app)
    if exempt:
        csrf.exempt(app.view_functions["new_note"])
    return app


def test_openapi_form_view_behind_csrf_takes_form_posts_only() -> None:
    doc = _document(_csrf_app(exempt=False))
    OpenAPIV31SpecValidator(doc).validate()
    body = doc["paths"]["/notes/new"]["post"]["requestBody"]
    assert list(body["content"]) == ["application/x-www-form-urlencoded", "multipart/form-data"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["allOf"] == [{"$ref": "#/components/schemas/OaAddNote"}]
    assert schema["required"] == ["csrf_token"]
    assert "JSON is refused (400, csrf_failed)" in body["description"]
    # A JSON-only view is not a form: CSRFProtect checks it too, but the document says JSON.
    assert "application/json" in doc["paths"]["/boards/{board_id}/notes"]["post"]["requestBody"]["content"]


def test_openapi_form_view_exempt_from_csrf_takes_json() -> None:
    content = _document(_csrf_app(exempt=True))["paths"]["/notes/new"]["post"]["requestBody"]["content"]
    assert "application/json" in content


def test_openapi_form_view_errors_may_be_html(doc: dict[str, t.Any]) -> None:
    response = doc["paths"]["/notes/new"]["post"]["responses"]["422"]
    assert set(response["content"]) == {"application/problem+json", "text/html"}


def test_openapi_summary_is_plain_text() -> None:
    app = flask.Flask("plain")
    Commands(app)

    @app.post("/notes")
    @command_view(OaAddNote, add_note, trusted=lambda: {"board_id": 1})
    def add(result: t.Any, cmd: OaAddNote) -> flask.typing.ResponseReturnValue:
        """Add ``text`` to the board with :func:`~flask_commands.command_view`, see :class:`Command`.

        More here.
        """
        return "", 204

    summary = _document(app)["paths"]["/notes"]["post"]["summary"]
    assert summary == "Add text to the board with command_view, see Command."


NOTE_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def test_openapi_declared_success_responses() -> None:
    app = flask.Flask("declared")
    Commands(app)

    @app.post("/notes")
    @command_view(OaAddNote, add_note, trusted=lambda: {"board_id": 1}, responses={201: NOTE_SCHEMA})
    def add(result: t.Any, cmd: OaAddNote) -> flask.typing.ResponseReturnValue:
        return result, 201

    @app.delete("/notes")
    @command_view(OaClear, clear_board, trusted=lambda: {"board_id": 1}, responses={204: None})
    def clear(result: t.Any, cmd: OaClear) -> flask.typing.ResponseReturnValue:
        return "", 204

    doc = _document(app)
    OpenAPIV31SpecValidator(doc).validate()
    created = doc["paths"]["/notes"]["post"]["responses"]
    assert "2XX" not in created
    assert created["201"]["content"] == {"application/json": {"schema": NOTE_SCHEMA}}
    assert created["201"]["headers"] == {
        "Idempotent-Replayed": {"$ref": "#/components/headers/IdempotentReplayed"}
    }
    assert "content" not in doc["paths"]["/notes"]["delete"]["responses"]["204"]


def test_openapi_wrapped_command_view() -> None:
    """A command view under another decorator (``functools.wraps``) is still documented."""
    app = flask.Flask("wrapped")
    Commands(app)

    def logged(view: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        @functools.wraps(view)
        def wrapper(**kwargs: t.Any) -> t.Any:
            return view(**kwargs)

        return wrapper

    @app.post("/notes")
    @logged
    @command_view(OaAddNote, add_note, trusted=lambda: {"board_id": 1}, responses={201: NOTE_SCHEMA})
    def add(result: t.Any, cmd: OaAddNote) -> flask.typing.ResponseReturnValue:
        return result, 201

    doc = _document(app)
    assert list(doc["paths"]) == ["/notes"]
    assert doc["paths"]["/notes"]["post"]["responses"]["201"]["content"] == {
        "application/json": {"schema": NOTE_SCHEMA}
    }


@pytest.mark.parametrize(
    ("responses", "message"),
    [
        ({404: None}, "command_view(responses=) got the status 404; use a success status from 200 to 399"),
        (
            {"201": None},
            "command_view(responses=) got the status '201'; use a success status from 200 to 399",
        ),
        ({201: "Note"}, "command_view(responses=) got 'Note' for 201; give the JSON Schema of the body"),
        ([201], "command_view(responses=) takes a dict {status: schema}, not [201]."),
    ],
)
def test_openapi_declared_responses_checked(responses: t.Any, message: str) -> None:
    with pytest.raises(TypeError) as excinfo:
        command_view(OaAddNote, add_note, responses=responses)
    assert str(excinfo.value).startswith(message)


def test_openapi_demo_document_is_true(tmp_path: pathlib.Path) -> None:
    from demo_app import create_app

    demo = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}"})
    doc = _document(demo)
    OpenAPIV31SpecValidator(doc).validate()
    for path, item in doc["paths"].items():
        for operation in item.values():
            content = operation["requestBody"]["content"]
            # The board's forms are behind CSRF: no JSON; the API takes JSON only.
            expected = ["application/json"] if path.startswith("/todos") else list(content)
            assert list(content) == expected, path
            if not path.startswith("/todos"):
                assert "application/json" not in content, path
            assert "``" not in operation.get("summary", ""), path
    created = doc["paths"]["/todos"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["required"][:2] == ["id", "title"]


def test_openapi_schema_names_collide() -> None:
    def declare() -> type[Command]:
        class OaClear(Command):
            board_id: int = field(trusted=True)

        return OaClear

    other = declare()

    @handler(other)
    def clear_other(cmd: t.Any) -> None:
        return None

    app = flask.Flask("collide")
    Commands(app)
    for path, command, run in (("/a", OaClear, clear_board), ("/b", other, clear_other)):
        view = command_view(command, run, trusted=lambda: {"board_id": 1})(lambda r, c: "")
        app.add_url_rule(path, path[1:], view, methods=["POST"])
    doc = _document(app)
    OpenAPIV31SpecValidator(doc).validate()
    assert sorted(doc["components"]["schemas"]) == [
        "Problem",
        f"{__name__}.OaClear",
        f"{__name__}.test_openapi_schema_names_collide._locals_.declare._locals_.OaClear",
    ]


# Responses


def test_openapi_problem_responses(doc: dict[str, t.Any]) -> None:
    responses = doc["paths"]["/boards/{board_id}/notes"]["post"]["responses"]
    assert set(responses) == {"2XX", "404", *PROBLEMS}
    for status in PROBLEMS:
        ref = responses[status]["$ref"].rpartition("/")[2]
        content = doc["components"]["responses"][ref]["content"]
        assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_openapi_success_response_any_body(doc: dict[str, t.Any]) -> None:
    success = doc["paths"]["/boards/{board_id}/notes"]["post"]["responses"]["2XX"]
    assert success["content"] == {"*/*": {"schema": {}}}
    assert success["headers"] == {"Idempotent-Replayed": {"$ref": "#/components/headers/IdempotentReplayed"}}


def test_openapi_redirect_response_form_view(doc: dict[str, t.Any]) -> None:
    assert set(doc["paths"]["/notes/new"]["post"]["responses"]) == {"2XX", "3XX", *PROBLEMS}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"detail": "Bad."},
        {"detail": "Taken.", "code": "duplicate_note"},
        {"detail": "See errors.", "code": "invalid", "errors": {"text": ["This field is required."]}},
    ],
)
def test_openapi_problem_schema_fits_problem(doc: dict[str, t.Any], kwargs: dict[str, t.Any]) -> None:
    body = json.loads(problem(422, **kwargs).get_data())
    jsonschema.Draft202012Validator(doc["components"]["schemas"]["Problem"]).validate(body)


# The CLI


def test_openapi_cli_prints_document(app: flask.Flask, doc: dict[str, t.Any]) -> None:
    result = app.test_cli_runner().invoke(args=["commands", "openapi"])
    assert result.exit_code == 0
    assert json.loads(result.output) == doc


def test_openapi_cli_title_and_version(app: flask.Flask) -> None:
    args = ["commands", "openapi", "--title", "Notes API", "--api-version", "3"]
    result = app.test_cli_runner().invoke(args=args)
    assert json.loads(result.output)["info"] == {"title": "Notes API", "version": "3"}


# The app keeps to its document: schemathesis generates requests from it (valid and invalid
# bodies, headers and path parameters) and checks every response against it, through the WSGI app.

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def fuzz(
    app: flask.Flask, max_examples: int, known: t.Callable[[], dict[str, t.Any]] | None = None
) -> collections.Counter[tuple[str, int]]:
    """Run every operation of ``app``'s document with valid and invalid input; count the statuses.

    :param known: returns path parameters naming something that exists, for the valid input.
    """
    schema = schemathesis.openapi.from_dict(_document(app))
    schema.app = app
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            fixed = None
            if known is not None and mode is GenerationMode.POSITIVE and len(operation.path_parameters):
                fixed = known()
            strategy = operation.as_strategy(mode, path_parameters=fixed)

            # Derandomized, so a run is repeatable, and not shrunk, so a failing one stays short.
            @hypothesis.settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=strategy)
            def call(case: t.Any) -> None:
                response = case.call_and_validate(checks=CHECKS)
                statuses[(case.operation.label, response.status_code)] += 1

            call()
    return statuses


def test_openapi_fuzz_app(app: flask.Flask) -> None:
    statuses = fuzz(app, max_examples=25, known=lambda: {"board_id": 7})
    seen = {status for (_, status) in statuses}
    # Not only refusals: the generated valid input reaches the handlers.
    assert {201, 204, 303, 400, 422} <= seen, statuses


def test_openapi_fuzz_demo(tmp_path: pathlib.Path) -> None:
    if not (ROOT / "demo_app" / "api.py").exists():
        pytest.skip("the demo has no JSON API yet (demo_app/api.py)")
    from demo_app import create_app

    demo = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}",
            "CELERY": {"broker_url": "memory://", "task_default_queue": f"demo-{uuid.uuid4()}"},
            # The board's views are in the document too; with CSRF on, every JSON post to them is
            # a 400 csrf_failed problem, which would reach no handler.
            "WTF_CSRF_ENABLED": False,
        }
    )
    client = demo.test_client()

    def new_todo() -> dict[str, t.Any]:
        return {"todo_id": client.post("/todos", json={"title": "Seeded"}).get_json()["id"]}

    statuses = fuzz(demo, max_examples=20, known=new_todo)
    assert statuses[("POST /todos", 201)] > 0, statuses
    assert statuses[("PATCH /todos/{todo_id}", 200)] > 0, statuses


def test_openapi_rule_without_view(doc: dict[str, t.Any], app: flask.Flask) -> None:
    app.add_url_rule("/later", "later")  # a view function may be registered after its rule
    assert _document(app)["paths"] == doc["paths"]


def test_openapi_view_without_weak_reference(doc: dict[str, t.Any], app: flask.Flask) -> None:
    class View:
        __slots__ = ()

        def __call__(self) -> str:
            return ""

    app.add_url_rule("/callable", "callable", View())
    assert _document(app)["paths"] == doc["paths"]
