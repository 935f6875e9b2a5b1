"""Tests for flask_commands.extension: registering Commands on one app or several."""

from __future__ import annotations

import gc
import typing as t
import weakref

import flask
import pytest

from flask_commands import Commands
from flask_commands.extension import DEFAULTS
from flask_commands.idempotency.memory import MemoryStore
from flask_commands.state import NOT_REGISTERED
from flask_commands.state import AppState
from flask_commands.state import app_state

ALREADY_REGISTERED = (
    "A 'Commands' instance has already been registered on this Flask app. Import and use that"
    " instance instead."
)


@pytest.fixture
def app() -> flask.Flask:
    return flask.Flask(__name__)


# Registering.


def test_init_app_in_constructor(app: flask.Flask) -> None:
    commands = Commands(app)
    assert app.extensions["commands"] is commands


def test_init_app_later(app: flask.Flask) -> None:
    commands = Commands()
    assert "commands" not in app.extensions
    commands.init_app(app)
    assert app.extensions["commands"] is commands


def test_init_app_twice(app: flask.Flask) -> None:
    commands = Commands(app)
    with pytest.raises(RuntimeError) as exc_info:
        commands.init_app(app)
    assert exc_info.value.args == (ALREADY_REGISTERED,)


def test_init_app_second_instance(app: flask.Flask) -> None:
    first = Commands(app)
    with pytest.raises(RuntimeError) as exc_info:
        Commands(app)
    assert exc_info.value.args == (ALREADY_REGISTERED,)
    assert app.extensions["commands"] is first


def test_init_app_no_app_on_instance(app: flask.Flask) -> None:
    commands = Commands(app)
    assert not hasattr(commands, "app")


def test_init_app_blueprint(app: flask.Flask) -> None:
    Commands(app)
    assert app.blueprints["commands"].name == "commands"


def test_init_app_blueprint_static(app: flask.Flask) -> None:
    Commands(app)
    with app.test_request_context():
        url = flask.url_for("commands.static", filename="htmx-LICENSE")
    assert url == "/_commands/static/htmx-LICENSE"
    response = app.test_client().get(url)
    assert response.status_code == 200
    response.close()


def test_init_app_cli_group(app: flask.Flask) -> None:
    Commands(app)
    assert "commands" in app.cli.commands


def test_init_app_jinja_global(app: flask.Flask) -> None:
    Commands(app)
    assert "commands_macros" in app.jinja_env.globals


# Configuration.


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("COMMANDS_IDEMPOTENCY_STORE", "memory"),
        ("COMMANDS_IDEMPOTENCY_SCOPE", None),
        ("COMMANDS_IDEMPOTENCY_WAIT", 5.0),
        ("COMMANDS_IDEMPOTENCY_LEASE", 60.0),
        ("COMMANDS_IDEMPOTENCY_TTL", 86400.0),
    ],
)
def test_config_default(app: flask.Flask, key: str, default: t.Any) -> None:
    Commands(app)
    assert app.config[key] == default


def test_config_defaults_complete() -> None:
    assert sorted(DEFAULTS) == [
        "COMMANDS_IDEMPOTENCY_LEASE",
        "COMMANDS_IDEMPOTENCY_SCOPE",
        "COMMANDS_IDEMPOTENCY_STORE",
        "COMMANDS_IDEMPOTENCY_TTL",
        "COMMANDS_IDEMPOTENCY_WAIT",
    ]


@pytest.mark.parametrize(
    ("key", "value", "attribute"),
    [
        ("COMMANDS_IDEMPOTENCY_WAIT", 0.5, "wait"),
        ("COMMANDS_IDEMPOTENCY_LEASE", 5, "lease"),
        ("COMMANDS_IDEMPOTENCY_TTL", 3600, "ttl"),
    ],
)
def test_config_app_value_wins(app: flask.Flask, key: str, value: float, attribute: str) -> None:
    app.config[key] = value
    Commands(app)
    assert app.config[key] == value
    assert getattr(app_state(app), attribute) == float(value)


def test_config_scope_app_value_wins(app: flask.Flask) -> None:
    def scope() -> str:
        return "user-1"

    app.config["COMMANDS_IDEMPOTENCY_SCOPE"] = scope
    assert _init(app).scope_of is scope


def test_config_read_at_init(app: flask.Flask) -> None:
    Commands(app)
    app.config["COMMANDS_IDEMPOTENCY_WAIT"] = 1.0
    assert app_state(app).wait == 5.0


# The store.


def test_store_memory_default(app: flask.Flask) -> None:
    assert isinstance(_init(app).store, MemoryStore)


def test_store_made_once(app: flask.Flask) -> None:
    state = _init(app)
    assert state.store is state.store


def test_store_instance(app: flask.Flask) -> None:
    store = MemoryStore()
    app.config["COMMANDS_IDEMPOTENCY_STORE"] = store
    assert _init(app).store is store


def test_store_invalid(app: flask.Flask) -> None:
    app.config["COMMANDS_IDEMPOTENCY_STORE"] = 42
    with pytest.raises(TypeError) as exc_info:
        Commands(app)
    assert exc_info.value.args == (
        "COMMANDS_IDEMPOTENCY_STORE is 42; set it to 'memory', a database URL, or a store instance"
        " (MemoryStore, SQLAlchemyStore).",
    )


# Several apps.


def test_two_apps_one_instance() -> None:
    first, second = flask.Flask("first"), flask.Flask("second")
    second.config["COMMANDS_IDEMPOTENCY_WAIT"] = 1.0
    commands = Commands()
    commands.init_app(first)
    commands.init_app(second)
    assert first.extensions["commands"] is second.extensions["commands"] is commands
    assert (app_state(first).wait, app_state(second).wait) == (5.0, 1.0)


def test_two_apps_separate_stores() -> None:
    first, second = flask.Flask("first"), flask.Flask("second")
    commands = Commands()
    commands.init_app(first)
    commands.init_app(second)
    assert app_state(first).store is not app_state(second).store


def test_state_of_current_app() -> None:
    first, second = flask.Flask("first"), flask.Flask("second")
    commands = Commands()
    commands.init_app(first)
    commands.init_app(second)
    with second.app_context():
        assert app_state() is app_state(second)


def test_state_unregistered_app(app: flask.Flask) -> None:
    Commands(flask.Flask("other"))
    with pytest.raises(RuntimeError) as exc_info:
        app_state(app)
    assert exc_info.value.args == (NOT_REGISTERED,)


def test_state_unregistered_current_app(app: flask.Flask) -> None:
    Commands()
    with app.app_context(), pytest.raises(RuntimeError) as exc_info:
        app_state()
    assert exc_info.value.args == (NOT_REGISTERED,)


def test_state_dropped_with_app() -> None:
    commands = Commands()
    app = flask.Flask("short-lived")
    commands.init_app(app)
    state = weakref.ref(app_state(app))
    del app
    gc.collect()
    assert state() is None


def _init(app: flask.Flask) -> AppState:
    Commands(app)
    return app_state(app)


class _Partial:
    def claim(self, *args: t.Any, **kwargs: t.Any) -> None: ...

    def complete(self, *args: t.Any, **kwargs: t.Any) -> None: ...

    def release(self, *args: t.Any, **kwargs: t.Any) -> None: ...


def test_store_missing_methods_at_init(app: flask.Flask) -> None:
    app.config["COMMANDS_IDEMPOTENCY_STORE"] = store = _Partial()
    with pytest.raises(TypeError) as exc_info:
        Commands(app)
    assert exc_info.value.args == (
        f"COMMANDS_IDEMPOTENCY_STORE is {store!r}, which lacks the store method(s) get, purge,"
        " same_database; implement every method of flask_commands.Store.",
    )


def test_store_protocol_runtime_checkable() -> None:
    from flask_commands import SQLAlchemyStore
    from flask_commands import Store

    assert isinstance(MemoryStore(), Store)
    assert isinstance(SQLAlchemyStore("sqlite://"), Store)
    assert not isinstance(_Partial(), Store)
