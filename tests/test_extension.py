"""Tests for flask_commands.extension: registering Commands on one app or several."""

from __future__ import annotations

import ast
import gc
import json
import pathlib
import re
import textwrap
import typing as t
import weakref

import flask
import pytest

import flask_commands
from flask_commands import Commands
from flask_commands.extension import DEFAULTS
from flask_commands.idempotency.memory import MemoryStore
from flask_commands.state import NOT_REGISTERED
from flask_commands.state import AppState
from flask_commands.state import app_state

PACKAGE = pathlib.Path(flask_commands.__file__).resolve().parent
README = PACKAGE.parent / "README.md"

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


def test_init_app_blueprint_templates(app: flask.Flask) -> None:
    """The blueprint makes the package's macros loadable as ``commands/macros.html``."""
    Commands(app)
    template = app.jinja_env.get_template("commands/macros.html")
    assert template.filename is not None
    assert pathlib.Path(template.filename) == PACKAGE / "templates" / "commands" / "macros.html"


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


def _readme_config_table() -> dict[str, t.Any]:
    """The README's configuration table: key → its default (a Python literal)."""
    rows = re.findall(r"^\| `(COMMANDS_\w+)` \| `([^`]*)` \|", README.read_text(), re.MULTILINE)
    return {key: ast.literal_eval(default) for key, default in rows}


def test_config_every_key_documented(app: flask.Flask) -> None:
    """Every ``COMMANDS_*`` key ``init_app`` sets is in the README's table with its default, and in
    ``init_app``'s docstring; the table names no key that ``init_app`` does not read."""
    Commands(app)
    set_by_init = {key: value for key, value in app.config.items() if key.startswith("COMMANDS_")}
    assert _readme_config_table() == set_by_init
    assert set(DEFAULTS) <= set(set_by_init)
    docstring = Commands.init_app.__doc__ or ""
    assert [key for key in set_by_init if f"``{key}``" not in docstring] == []


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


# What loads lazily.

#: Imported only when the feature that needs it is used: SQLAlchemy by a database store, the outbox
#: and the database error handlers; Celery, OpenTelemetry and pytest by their modules; Flask-WTF
#: and Flask-SQLAlchemy never by ``import flask_commands``.
LAZY = [
    "celery",
    "flask_sqlalchemy",
    "flask_wtf",
    "opentelemetry",
    "psycopg",
    "pymysql",
    "pytest",
    "sqlalchemy",
    "flask_commands.celery",
    "flask_commands.idempotency.sql",
    "flask_commands.otel",
    "flask_commands.outbox",
    "flask_commands.testing",
]


@pytest.fixture
def loaded_after(fresh_python: t.Callable[..., str]) -> t.Callable[[str], list[str]]:
    """Runs code in a fresh interpreter; returns which of :data:`LAZY` it left in ``sys.modules``."""

    def run(code: str) -> list[str]:
        report = f"""
import json, sys
print(json.dumps(sorted(name for name in {LAZY!r} if name in sys.modules)))
"""
        loaded: list[str] = json.loads(fresh_python(textwrap.dedent(code) + report))
        return loaded

    return run


def test_import_loads_nothing_optional(loaded_after: t.Callable[[str], list[str]]) -> None:
    assert loaded_after("import flask_commands") == []


def test_import_sqlalchemy_store_on_first_access(loaded_after: t.Callable[[str], list[str]]) -> None:
    loaded = loaded_after(
        """
        import flask_commands
        from flask_commands import SQLAlchemyStore
        from flask_commands.idempotency.sql import SQLAlchemyStore as defined
        assert SQLAlchemyStore is defined
        assert "SQLAlchemyStore" in dir(flask_commands)
        """
    )
    assert loaded == ["flask_commands.idempotency.sql", "sqlalchemy"]


def test_import_unknown_name() -> None:
    with pytest.raises(AttributeError) as exc_info:
        flask_commands.SQLAlchemyStor  # type: ignore[attr-defined]  # noqa: B018
    assert exc_info.value.args == ("module 'flask_commands' has no attribute 'SQLAlchemyStor'",)


def test_memory_store_app_loads_no_database_module(loaded_after: t.Callable[[str], list[str]]) -> None:
    """An app on the memory store handles a keyed JSON post without the SQL store or the outbox."""
    loaded = loaded_after(
        """
        import flask
        from flask_commands import Command, Commands, command_view, handler

        class Note(Command):
            title: str

        @handler(Note)
        def add(cmd):
            return cmd.title

        app = flask.Flask(__name__)
        Commands(app)

        @app.route("/notes", methods=["POST"])
        @command_view(Note, add)
        def new_note(result, cmd):
            return result, 201

        response = app.test_client().post("/notes", json={"title": "milk"}, headers={"Idempotency-Key": "k"})
        assert response.status_code == 201, response.data
        """
    )
    assert "flask_commands.idempotency.sql" not in loaded
    assert "flask_commands.outbox" not in loaded


# Per-request resources.


def test_init_app_registers_no_teardown(app: flask.Flask) -> None:
    """The package holds nothing per request that a teardown hook would release (README, decisions)."""
    Commands(app)
    assert app.teardown_appcontext_funcs == []
    assert dict(app.teardown_request_funcs) == {}
