"""The ``flask commands`` CLI group."""

from __future__ import annotations

import json
import typing as t

import pytest
from flask import Flask
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import field
from flask_commands import handler


class CliAddNote(Command):
    text: str = field(validators=[v.Length(max=5)])
    author: int = field(trusted=True)


@handler(CliAddNote)
def add_note(cmd: CliAddNote) -> dict[str, t.Any]:
    if cmd.text == "taken":
        raise Conflict("That note exists.", code="duplicate")
    if cmd.text == "no":
        raise Rejected("Notes may not say no.")
    return {"text": cmd.text, "author": cmd.author}


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    Commands(app)
    return app


def invoke(app: Flask, *args: str) -> t.Any:
    return app.test_cli_runner().invoke(args=["commands", *args])


def test_list_shows_fields_and_handlers(app: Flask) -> None:
    result = invoke(app, "list")
    assert result.exit_code == 0
    expected = (
        f"{__name__}:CliAddNote\n"
        "    text: str required [Length]\n"
        "    author: int required trusted\n"
        f"    handler {__name__}:add_note\n"
    )
    assert expected in result.output


def test_schema_by_short_name(app: Flask) -> None:
    result = invoke(app, "schema", "CliAddNote")
    assert result.exit_code == 0
    assert json.loads(result.output) == CliAddNote.json_schema()


def test_schema_unknown_name(app: Flask) -> None:
    result = invoke(app, "schema", "Nope")
    assert result.exit_code == 1
    assert result.output == "Error: No command named 'Nope'; 'flask commands list' shows them.\n"


def test_run_ok(app: Flask) -> None:
    result = invoke(app, "run", "CliAddNote", "--data", '{"text": "hi"}', "--trusted", '{"author": 3}')
    assert result.exit_code == 0
    outcome = json.loads(result.output)
    assert outcome["outcome"] == "ok"
    assert outcome["result"] == {"text": "hi", "author": 3}


def test_run_invalid(app: Flask) -> None:
    result = invoke(app, "run", "CliAddNote", "--data", '{"text": "toolong"}', "--trusted", '{"author": 3}')
    assert result.exit_code == 1
    assert json.loads(result.output) == {
        "outcome": "invalid",
        "errors": {"text": ["Field cannot be longer than 5 characters."]},
    }


@pytest.mark.parametrize(
    ("text", "kind", "code"), [("taken", "conflict", "duplicate"), ("no", "rejected", "rejected")]
)
def test_run_refused(app: Flask, text: str, kind: str, code: str) -> None:
    data = json.dumps({"text": text})
    result = invoke(app, "run", "CliAddNote", "--data", data, "--trusted", '{"author": 3}')
    assert result.exit_code == 2
    outcome = json.loads(result.output)
    assert (outcome["outcome"], outcome["code"]) == (kind, code)


def test_run_bad_json(app: Flask) -> None:
    result = invoke(app, "run", "CliAddNote", "--data", "{nope", "--trusted", '{"author": 3}')
    assert result.exit_code == 1
    assert result.output.startswith("Error: --data is not valid JSON: ")
    assert "Traceback" not in result.output


def test_run_data_not_object(app: Flask) -> None:
    result = invoke(app, "run", "CliAddNote", "--data", "[1]", "--trusted", '{"author": 3}')
    assert result.output == "Error: --data must be a JSON object, not list.\n"


def test_run_missing_trusted(app: Flask) -> None:
    result = invoke(app, "run", "CliAddNote", "--data", '{"text": "hi"}')
    assert result.exit_code == 1
    assert result.output == "Error: --trusted must set exactly the trusted fields of CliAddNote: author.\n"


def test_purge_counts(app: Flask) -> None:
    result = invoke(app, "purge")
    assert result.exit_code == 0
    assert result.output == "Deleted 0 expired idempotency records.\n"


def test_init_db_memory_store(app: Flask) -> None:
    result = invoke(app, "init-db")
    assert result.exit_code == 1
    assert result.output.startswith("Error: The idempotency store <MemoryStore")
