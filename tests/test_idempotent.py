"""Idempotency over HTTP (flask_commands._idempotent through command_view)."""

from __future__ import annotations

import re
import threading
import typing as t

import flask
import pytest
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands.command import type_name
from flask_commands.idempotency.memory import MemoryStore
from flask_commands.idempotency.sql import SQLAlchemyStore

RUNS: list[str] = []
GATE: dict[str, threading.Event] = {}


class PostNote(Command):
    text: str = field(validators=[v.InputRequired(), v.Length(max=40)])
    author: str = field(trusted=True)


@handler(PostNote)
def post_note(cmd: PostNote) -> str:
    if "entered" in GATE:  # lets a test hold the first request while it holds the key
        GATE["entered"].set()
        GATE["release"].wait(5)
    if cmd.text == "fail-once" and "fail-once" not in RUNS:
        RUNS.append("fail-once")
        raise RuntimeError("a transient fault")
    if cmd.text == "taken":
        raise Conflict("That note exists.", code="duplicate")
    RUNS.append(cmd.text)
    return cmd.text


@pytest.fixture(autouse=True)
def _reset() -> t.Iterator[None]:
    RUNS.clear()
    GATE.clear()
    yield
    GATE.clear()


def make_app(store: t.Any = "memory", **config: t.Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY="test", COMMANDS_IDEMPOTENCY_STORE=store, **config)
    Commands(app)

    @app.route("/notes", methods=["GET", "POST"])
    @command_view(PostNote, post_note, template="note.html", trusted=lambda: {"author": "ann"})
    def notes(result: str, cmd: PostNote) -> t.Any:
        response = flask.make_response(f"<p>posted {result}</p>", 201)
        response.headers["X-Note"] = result
        response.headers["HX-Trigger"] = "noteAdded"
        response.set_cookie("seen", "1")
        return response

    @app.route("/api/notes", methods=["POST"])
    @command_view(PostNote, post_note, trusted=lambda: {"author": flask.request.headers.get("X-User", "ann")})
    def api_notes(result: str, cmd: PostNote) -> t.Any:
        return {"text": result, "id": str(cmd.id)}, 201

    app.jinja_loader = __import__("jinja2").DictLoader(
        {"note.html": "{% from 'commands/macros.html' import render_form %}{{ render_form(form) }}"}
    )
    return app


@pytest.fixture
def app() -> flask.Flask:
    return make_app()


KEY = {"Idempotency-Key": '"note-1"'}


def test_json_replay_same_status_body_and_headers(client: flask.testing.FlaskClient) -> None:
    first = client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    second = client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    assert RUNS == ["milk"]
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.get_data() == first.get_data()
    assert second.headers["Content-Type"] == first.headers["Content-Type"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


def test_replay_keeps_app_and_htmx_headers_not_cookies(client: flask.testing.FlaskClient) -> None:
    data = {"text": "milk", "id": "6f1c4c9e-4d0b-4c1e-9d57-3f1a2b3c4d5e"}
    first = client.post("/notes", data=data)
    second = client.post("/notes", data=data)
    assert RUNS == ["milk"]
    assert "seen=1" in first.headers["Set-Cookie"]
    assert (second.headers["X-Note"], second.headers["HX-Trigger"]) == ("milk", "noteAdded")
    assert "Set-Cookie" not in second.headers
    assert second.text == "<p>posted milk</p>"


def test_bare_token_key_equals_quoted_key(client: flask.testing.FlaskClient) -> None:
    client.post("/api/notes", json={"text": "milk"}, headers={"Idempotency-Key": "note-1"})
    second = client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    assert RUNS == ["milk"]
    assert second.headers["Idempotent-Replayed"] == "true"


def test_no_key_runs_every_time(client: flask.testing.FlaskClient) -> None:
    client.post("/api/notes", json={"text": "milk"})
    client.post("/api/notes", json={"text": "milk"})
    assert RUNS == ["milk", "milk"]


def test_client_id_is_the_key(client: flask.testing.FlaskClient) -> None:
    body = {"text": "milk", "id": "6f1c4c9e-4d0b-4c1e-9d57-3f1a2b3c4d5e"}
    client.post("/api/notes", json=body)
    second = client.post("/api/notes", json=body)
    assert RUNS == ["milk"]
    assert second.json == {"text": "milk", "id": body["id"]}


def test_json_key_reused_with_other_payload_422(client: flask.testing.FlaskClient) -> None:
    client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    response = client.post("/api/notes", json={"text": "eggs"}, headers=KEY)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.json is not None
    assert response.json["code"] == "idempotency_key_reused"
    assert RUNS == ["milk"]


def test_form_restored_from_history_rerenders_with_fresh_id(client: flask.testing.FlaskClient) -> None:
    ident = "6f1c4c9e-4d0b-4c1e-9d57-3f1a2b3c4d5e"
    client.post("/notes", data={"text": "milk", "id": ident})
    response = client.post("/notes", data={"text": "eggs", "id": ident})
    assert response.status_code == 422
    assert "This form was already submitted with other values. Check it and submit again." in response.text
    assert 'value="eggs"' in response.text
    assert ident not in response.text
    assert RUNS == ["milk"]


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("x" * 256, "The Idempotency-Key header has 256 characters; 255 at most are allowed."),
        ('""', "The Idempotency-Key header is empty."),
        ("two words", "The Idempotency-Key header must be a quoted string of printable ASCII."),
        ('"unclosed', "The Idempotency-Key header must be a quoted string of printable ASCII."),
    ],
)
def test_bad_key_400(client: flask.testing.FlaskClient, header: str, detail: str) -> None:
    response = client.post("/api/notes", json={"text": "milk"}, headers={"Idempotency-Key": header})
    assert response.status_code == 400
    assert response.json is not None
    assert (response.json["code"], response.json["detail"]) == ("invalid_idempotency_key", detail)
    assert RUNS == []


def test_key_of_255_characters_accepted(client: flask.testing.FlaskClient) -> None:
    response = client.post("/api/notes", json={"text": "milk"}, headers={"Idempotency-Key": "k" * 255})
    assert response.status_code == 201


def test_conflict_stored_and_replayed(client: flask.testing.FlaskClient) -> None:
    first = client.post("/api/notes", json={"text": "taken"}, headers=KEY)
    second = client.post("/api/notes", json={"text": "taken"}, headers=KEY)
    assert (first.status_code, second.status_code) == (409, 409)
    assert second.get_data() == first.get_data()
    assert second.headers["Idempotent-Replayed"] == "true"


def test_fault_not_stored_retry_runs_again() -> None:
    app = make_app()
    app.testing = False  # a fault becomes Flask's 500 instead of propagating into the test
    client = app.test_client()
    first = client.post("/api/notes", json={"text": "fail-once"}, headers=KEY)
    second = client.post("/api/notes", json={"text": "fail-once"}, headers=KEY)
    assert (first.status_code, second.status_code) == (500, 201)
    assert "Idempotent-Replayed" not in second.headers


def test_invalid_input_not_stored(client: flask.testing.FlaskClient) -> None:
    first = client.post("/api/notes", json={"text": ""}, headers=KEY)
    second = client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    assert (first.status_code, second.status_code) == (422, 201)
    assert RUNS == ["milk"]


def test_scope_keeps_users_apart() -> None:
    app = make_app(COMMANDS_IDEMPOTENCY_SCOPE=lambda: flask.request.headers.get("X-User"))
    client = app.test_client()
    ann = client.post("/api/notes", json={"text": "milk"}, headers={**KEY, "X-User": "ann"})
    bob = client.post("/api/notes", json={"text": "milk"}, headers={**KEY, "X-User": "bob"})
    assert (ann.status_code, bob.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in bob.headers
    assert RUNS == ["milk", "milk"]


def test_replayed_signal(client: flask.testing.FlaskClient, command_signals: t.Any) -> None:
    client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    (sent,) = command_signals.of("replayed")
    assert sent.sender is post_note
    assert sent.kwargs["key"] == "note-1"
    # Replayed before the command is built (before trusted values are looked up).
    assert sent.kwargs["command"] is None


def _hold_first(client: flask.testing.FlaskClient, **post: t.Any) -> threading.Thread:
    """Start a request that holds the key inside the handler until GATE['release'] is set."""
    GATE["entered"], GATE["release"] = threading.Event(), threading.Event()
    thread = threading.Thread(target=client.post, kwargs=post)
    thread.start()
    assert GATE["entered"].wait(5)
    del GATE["entered"]  # later runs pass straight through
    return thread


def test_json_in_progress_409_at_once(app: flask.Flask) -> None:
    thread = _hold_first(app.test_client(), path="/api/notes", json={"text": "milk"}, headers=KEY)
    try:
        response = app.test_client().post("/api/notes", json={"text": "milk"}, headers=KEY)
    finally:
        GATE["release"].set()
        thread.join(5)
    assert response.status_code == 409
    assert response.json is not None
    assert response.json["code"] == "in_progress"
    assert int(response.headers["Retry-After"]) >= 1
    assert RUNS == ["milk"]


def test_form_post_waits_for_the_first_and_gets_its_outcome(app: flask.Flask) -> None:
    data = {"text": "milk", "id": "6f1c4c9e-4d0b-4c1e-9d57-3f1a2b3c4d5e"}
    thread = _hold_first(app.test_client(), path="/notes", data=data)
    threading.Timer(0.3, GATE["release"].set).start()
    response = app.test_client().post("/notes", data=data)
    thread.join(5)
    assert response.status_code == 201
    assert response.headers["Idempotent-Replayed"] == "true"
    assert RUNS == ["milk"]


def test_form_post_wait_is_bounded() -> None:
    app = make_app(COMMANDS_IDEMPOTENCY_WAIT=0.2)
    data = {"text": "milk", "id": "6f1c4c9e-4d0b-4c1e-9d57-3f1a2b3c4d5e"}
    thread = _hold_first(app.test_client(), path="/notes", data=data)
    try:
        response = app.test_client().post("/notes", data=data)
    finally:
        GATE["release"].set()
        thread.join(5)
    assert response.status_code == 409
    assert RUNS == ["milk"]


def test_handled_without_response_409_already_handled() -> None:
    store = MemoryStore()
    app = make_app(store)
    client = app.test_client()
    # A first run that died after the handler committed, before its response was attached.
    client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    ((_key, entry),) = store._entries.items()
    entry.response = None
    response = client.post("/api/notes", json={"text": "milk"}, headers=KEY)
    assert response.status_code == 409
    assert response.json is not None
    assert response.json["code"] == "already_handled"
    assert RUNS == ["milk"]


def test_store_unavailable_503() -> None:
    store = SQLAlchemyStore("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1")
    app = make_app(store)
    response = app.test_client().post("/api/notes", json={"text": "milk"}, headers=KEY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json is not None
    assert response.json["code"] == "store_unavailable"
    assert RUNS == []
    store.dispose()


def test_sql_store_one_transaction_render_failure_frees_key(tmp_path: t.Any) -> None:
    import sqlalchemy as sa
    from sqlalchemy import orm

    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    store = SQLAlchemyStore(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE effects (text TEXT)")
    session = orm.Session(engine)

    class Effect(Command):
        text: str

    @handler(Effect, transaction=session)
    def effect(cmd: Effect) -> str:
        session.execute(sa.text("INSERT INTO effects VALUES (:t)"), {"t": cmd.text})
        return cmd.text

    app = flask.Flask(__name__)
    app.config["COMMANDS_IDEMPOTENCY_STORE"] = store
    Commands(app)
    failures = [RuntimeError("the template failed")]

    @app.route("/effects", methods=["POST"])
    @command_view(Effect, effect)
    def effects(result: str, cmd: Effect) -> t.Any:
        if failures:
            raise failures.pop()
        return {"text": result}, 201

    app.testing = False
    client = app.test_client()
    first = client.post("/effects", json={"text": "x"}, headers=KEY)
    assert first.status_code == 500
    with engine.connect() as conn:
        # The writes and the claim rolled back together: no rows, and the key is free.
        assert conn.exec_driver_sql("SELECT count(*) FROM effects").scalar() == 0
    assert store.get(f"{type_name(Effect)}::note-1") is None
    second = client.post("/effects", json={"text": "x"}, headers=KEY)
    third = client.post("/effects", json={"text": "x"}, headers=KEY)
    assert (second.status_code, third.status_code) == (201, 201)
    assert third.headers["Idempotent-Replayed"] == "true"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM effects").scalar() == 1
    session.close()
    engine.dispose()
    store.dispose()
    store.dispose()


def test_command_fingerprint_plain_and_rich_values() -> None:
    import decimal

    from flask_commands._idempotent import command_fingerprint

    class Plain(Command):
        title: str
        order: int = 0

    class Rich(Command):
        amount: decimal.Decimal

    assert command_fingerprint(Plain(title="a")) == command_fingerprint(Plain(title="a"))
    assert command_fingerprint(Plain(title="a")) != command_fingerprint(Plain(title="a", order=1))
    assert command_fingerprint(Rich(amount=decimal.Decimal("1.5"))) == command_fingerprint(
        Rich(amount=decimal.Decimal("1.5"))
    )
    assert command_fingerprint(Rich(amount=decimal.Decimal("1.5"))) != command_fingerprint(
        Rich(amount=decimal.Decimal("2"))
    )
    assert re.fullmatch(r"[0-9a-f]{64}", command_fingerprint(Plain(title="a")))


def test_stored_refusal_is_the_live_problem() -> None:
    import json

    from flask_commands._idempotent import scoped_key
    from flask_commands.problem import problem
    from flask_commands.state import app_state

    class Loud(Command):
        text: str

    @handler(Loud)
    def loud(cmd: Loud) -> None:
        raise Rejected("No shouting.", code="shouting")

    app = flask.Flask(__name__)
    Commands(app)
    cmd = Loud(text="HI")
    with app.app_context():
        for _ in range(2):  # run, then replayed from the store
            with pytest.raises(Rejected) as exc_info:
                loud.handle(cmd)
            assert (exc_info.value.code, exc_info.value.message) == ("shouting", "No shouting.")
        record = app_state(app).store.get(scoped_key(Loud, str(cmd.id)))
        live = problem(422, detail="No shouting.", code="shouting")
    assert record is not None
    assert record.outcome == "rejected"
    assert record.response is not None
    assert json.loads(record.response.body) == live.json
    assert json.loads(record.response.body)["title"] == "Unprocessable Content"


class Shout(Command):
    text: str = field(validators=[v.InputRequired()])


@handler(Shout)
def shout(cmd: Shout) -> str:
    RUNS.append(cmd.text)
    if cmd.text == "no":
        raise Rejected("Not allowed.", code="not_allowed")
    return cmd.text


def _shout_app(store: t.Any) -> flask.Flask:
    """A JSON-only view of a handler without a transaction: the claim-apart protocol."""
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY="test", COMMANDS_IDEMPOTENCY_STORE=store)
    Commands(app)

    @app.post("/shout")
    @command_view(Shout, shout)
    def view(result: str, cmd: Shout) -> t.Any:
        if result == "boom":
            raise RuntimeError("the response failed")
        return {"text": result}, 201

    return app


def test_json_rejection_stored_and_replayed_with_its_outcome() -> None:
    store = MemoryStore()
    client = _shout_app(store).test_client()
    first = client.post("/shout", json={"text": "no"}, headers=KEY)
    second = client.post("/shout", json={"text": "no"}, headers=KEY)
    assert (first.status_code, second.status_code) == (422, 422)
    assert first.json is not None
    assert first.json["code"] == "not_allowed"
    assert second.get_data() == first.get_data()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert RUNS == ["no"]
    ((_key, entry),) = store._entries.items()
    assert entry.outcome == "rejected"


def test_json_response_failure_after_the_handler_keeps_the_key_done() -> None:
    store = MemoryStore()
    app = _shout_app(store)
    app.testing = False  # the response's fault becomes Flask's 500
    client = app.test_client()
    first = client.post("/shout", json={"text": "boom"}, headers=KEY)
    second = client.post("/shout", json={"text": "boom"}, headers=KEY)
    assert first.status_code == 500
    assert second.status_code == 409
    assert second.json is not None
    assert second.json["code"] == "already_handled"
    assert RUNS == ["boom"]  # the handler's work is done: never run again
