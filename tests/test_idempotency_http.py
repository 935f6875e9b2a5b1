"""The HTTP half of idempotency: the request fingerprint and the stored response, on their fast paths."""

from __future__ import annotations

import decimal
import hashlib
import typing as t

import flask
import pytest
from werkzeug.datastructures import MultiDict

from flask_commands import Commands
from flask_commands import _codec
from flask_commands._idempotent import HTTPAnswers
from flask_commands._idempotent import request_fingerprint
from flask_commands.idempotency.memory import MemoryStore
from flask_commands.idempotency.store import Acquired
from flask_commands.state import app_state
from flask_commands.state import init_state


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def app() -> flask.Flask:
    return flask.Flask(__name__)


def _fingerprint(
    app: flask.Flask,
    data: t.Any,
    view_args: dict[str, t.Any] | None = None,
    path: str = "/x",
    method: str = "POST",
) -> str:
    with app.test_request_context(path, method=method):
        return request_fingerprint(data, view_args or {})


def test_json_fingerprint_is_the_canonical_text(app: flask.Flask) -> None:
    # Pinned: stored fingerprints must survive an upgrade, so the hashed text never changes.
    expected = _sha('["POST",[{},[],{"a":1,"b":"Ü","c":null,"d":false}]]')
    assert _fingerprint(app, {"d": False, "c": None, "b": "Ü", "a": 1}) == expected


def test_json_fingerprint_ignores_order_and_id(app: flask.Flask) -> None:
    first = _fingerprint(app, {"a": 1, "b": [1, {"y": 2, "x": 1}]})
    assert _fingerprint(app, {"b": [1, {"x": 1, "y": 2}], "a": 1}) == first
    assert (
        _fingerprint(app, {"id": "0b5a4a7c-8a4a-4f8e-9a53-3f3b6b1a2c3d", "b": [1, {"x": 1, "y": 2}], "a": 1})
        == first
    )


def test_json_fingerprint_covers_method_url_query_and_body(app: flask.Flask) -> None:
    data = {"a": 1}
    first = _fingerprint(app, data)
    others = {
        _fingerprint(app, {"a": 2}),
        _fingerprint(app, {"a": "1"}),
        _fingerprint(app, data, method="PUT"),
        _fingerprint(app, data, path="/x?a=1"),
        _fingerprint(app, data, view_args={"todo_id": 1}),
    }
    assert first not in others
    assert len(others) == 5
    assert _fingerprint(app, data, path="/x?b=2&a=1") == _fingerprint(app, data, path="/x?a=1&b=2")


def test_fingerprint_of_a_mapping_not_a_dict_equals_the_dict(app: flask.Flask) -> None:
    class Body(dict[str, t.Any]):
        pass

    assert _fingerprint(app, Body(a=1, id="x")) == _fingerprint(app, {"a": 1})


def test_form_fingerprint_ignores_csrf_and_id(app: flask.Flask) -> None:
    form = MultiDict([("b", "2"), ("a", "1"), ("a", "0"), ("csrf_token", "t1"), ("id", "i1")])
    same = MultiDict([("csrf_token", "t2"), ("a", "1"), ("a", "0"), ("b", "2")])
    assert (
        _fingerprint(app, form)
        == _fingerprint(app, same)
        == _sha('["POST",[{},[],[["a",["1","0"]],["b",["2"]]]]]')
    )
    assert _fingerprint(app, form) != _fingerprint(app, MultiDict([("a", "0"), ("a", "1"), ("b", "2")]))


def test_fingerprint_of_values_json_cannot_encode(app: flask.Flask) -> None:
    data = {"amount": decimal.Decimal("1.50")}
    expected = hashlib.sha256(_codec.dumps(["POST", [{}, [], data]]).encode()).hexdigest()
    assert _fingerprint(app, data) == expected


def _answers() -> HTTPAnswers[t.Any, t.Any]:
    answers: HTTPAnswers[t.Any, t.Any] = HTTPAnswers()
    answers.json = True
    return answers


def test_stored_response_of_one_bytes_body(app: flask.Flask) -> None:
    with app.app_context():
        response = flask.jsonify({"a": 1})
        response.status_code = 201
        response.set_cookie("seen", "1")
        stored = _answers().stored(response)
    assert stored is not None
    assert (stored.status, stored.headers, stored.body) == (
        201,
        [("Content-Type", "application/json")],
        b'{"a":1}\n',
    )


@pytest.mark.parametrize(
    "body",
    [lambda: iter([b"ab", "cé"]), lambda: ["ab", "cé"], lambda: [b"ab", b"c\xc3\xa9"], lambda: ("abcé",)],
    ids=["generator", "str-list", "bytes-list", "tuple"],
)
def test_stored_response_of_other_bodies(app: flask.Flask, body: t.Callable[[], t.Any]) -> None:
    with app.app_context():
        response = flask.Response(body(), status=200, mimetype="text/plain")
        stored = _answers().stored(response)
        assert stored is not None
        assert stored.body == "abcé".encode()
        assert response.get_data() == "abcé".encode()  # the response still sends its whole body


def test_fault_response_not_stored(app: flask.Flask) -> None:
    with app.app_context():
        assert _answers().stored(flask.Response(b"boom", status=500)) is None


# The memory store checks its arguments on a fast path (str keys, float leases and TTLs).


@pytest.mark.parametrize("ttl", [-1.0, 0.0, float("inf"), float("nan")])
def test_memory_store_float_ttl_invalid(ttl: float) -> None:
    store = MemoryStore()
    claim = store.claim("k", "f" * 64, lease=10.0)
    assert isinstance(claim, Acquired)
    with pytest.raises(ValueError, match=r"^ttl .* is not a positive number of seconds.$"):
        store.complete("k", claim.token, outcome="ok", ttl=ttl)


@pytest.mark.parametrize(("key", "fingerprint"), [("", "f"), ("k", ""), ("k" * 513, "f"), ("k", "f" * 65)])
def test_memory_store_float_lease_bad_key_or_fingerprint(key: str, fingerprint: str) -> None:
    with pytest.raises(ValueError, match=r"^(idempotency key|fingerprint) "):
        MemoryStore().claim(key, fingerprint, lease=10.0)


def test_memory_store_outcome_invalid_with_float_ttl() -> None:
    store = MemoryStore()
    claim = store.claim("k", "f", lease=10.0)
    assert isinstance(claim, Acquired)
    with pytest.raises(ValueError, match=r"^outcome 'fault' is not one of"):
        store.complete("k", claim.token, outcome="fault", ttl=60.0)  # type: ignore[arg-type]


# app_state() remembers the app it answered last.


def test_app_state_of_alternating_apps_and_after_init_again() -> None:
    first, second = flask.Flask("first"), flask.Flask("second")
    second.config["COMMANDS_IDEMPOTENCY_WAIT"] = 1.0
    Commands(first)
    Commands(second)
    for _ in range(2):
        assert (app_state(first).wait, app_state(second).wait) == (5.0, 1.0)
        with first.app_context():
            assert app_state() is app_state(first)
    old = app_state(first)
    first.config["COMMANDS_IDEMPOTENCY_WAIT"] = 2.0
    new = init_state(first)
    assert new is not old
    assert app_state(first) is new
    assert app_state(first).wait == 2.0
