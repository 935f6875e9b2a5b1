"""mypy sees a command's constructor and attributes (``typing.dataclass_transform``).

One mypy run checks two sample modules: ``good.py`` must be clean, ``bad.py`` must report each
misuse. The samples are checked without ``--strict``, as a user's code would be.
"""

from __future__ import annotations

import pathlib
import re
import textwrap
import typing as t

import pytest
from mypy import api as mypy_api

import flask_commands

GOOD = """
import datetime
import uuid

from flask_commands import Command, Conflict, field, handler


class AddTodo(Command):
    title: str = field(label="Title")
    order: int | None = field(default=None)
    completed: bool = False
    actor_id: int = field(trusted=True)


@handler(AddTodo)
def add_todo(cmd: AddTodo) -> str:
    if not cmd.title:
        raise Conflict("empty", code="empty")
    return cmd.title


cmd = AddTodo(title="Milk", actor_id=1)
built = AddTodo.build({"title": "Milk"}, actor_id=1)
restored = AddTodo.from_dict(cmd.to_dict())
title: str = cmd.title
ident: uuid.UUID = cmd.id
issued_at: datetime.datetime = cmd.issued_at
result: str = add_todo(built)
reveal_type(cmd.title)
reveal_type(cmd.order)
reveal_type(cmd.completed)
reveal_type(cmd.actor_id)
reveal_type(cmd.id)
reveal_type(cmd.issued_at)
reveal_type(built)
reveal_type(restored)
reveal_type(add_todo(cmd))
"""

BAD = """
from good import AddTodo

AddTodo(title=1, actor_id=1)
AddTodo(actor_id=1)
AddTodo("Milk", actor_id=1)
AddTodo(title="Milk", actor_id=1).title = "Eggs"
AddTodo(title="Milk", actor_id=1, colour="red")
"""

CONFIG = """
[mypy]
python_version = 3.11
follow_imports = silent
mypy_path = {root}
[mypy-wtforms.*]
ignore_missing_imports = True
[mypy-jinja2_fragments.*]
ignore_missing_imports = True
[mypy-celery.*]
ignore_missing_imports = True
[mypy-kombu.*]
ignore_missing_imports = True
"""


class Report(t.NamedTuple):
    lines: list[str]
    stderr: str
    status: int

    def of(self, filename: str, kind: str) -> list[tuple[int, str]]:
        """``(line, message)`` of each ``kind`` ("error" or "note") reported in ``filename``."""
        found = []
        for line in self.lines:
            match = re.fullmatch(rf"{re.escape(filename)}:(\d+): {kind}: (.*)", line)
            if match:
                found.append((int(match[1]), match[2]))
        return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """Run mypy once on the two samples."""
    tmp = tmp_path_factory.mktemp("typing")
    # flask_commands is an editable install (an import hook mypy cannot follow): point at its source.
    root = pathlib.Path(flask_commands.__file__).resolve().parent.parent
    (tmp / "good.py").write_text(textwrap.dedent(GOOD).lstrip(), encoding="utf-8")
    (tmp / "bad.py").write_text(textwrap.dedent(BAD).lstrip(), encoding="utf-8")
    (tmp / "mypy.ini").write_text(CONFIG.format(root=root), encoding="utf-8")
    args = [
        "--config-file",
        str(tmp / "mypy.ini"),
        "--cache-dir",
        str(tmp / "cache"),
        "--no-error-summary",
        "--show-error-codes",
        "--no-color-output",
        "--hide-error-context",
        str(tmp / "good.py"),
        str(tmp / "bad.py"),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # messages then name the samples by their relative path
        stdout, stderr, status = mypy_api.run(args)
    lines = [line.replace(str(tmp) + "/", "") for line in stdout.splitlines()]
    return Report(lines, stderr, status)


def _revealed(report: Report) -> list[str]:
    # mypy 2 prints builtins without their module ("str"); mypy 1 printed "builtins.str".
    return [
        re.sub(r"\bbuiltins\.", "", message.removeprefix("Revealed type is "))
        for _, message in report.of("good.py", "note")
    ]


def test_typing_mypy_ran(report: Report) -> None:
    assert report.stderr == ""
    assert report.status == 1, report.lines  # bad.py has errors


def test_typing_good_clean(report: Report) -> None:
    assert report.of("good.py", "error") == []


def test_typing_attributes(report: Report) -> None:
    assert _revealed(report)[:6] == [
        '"str"',
        '"int | None"',
        '"bool"',
        '"int"',
        '"uuid.UUID"',
        '"datetime.datetime"',
    ]


def test_typing_build_returns_command(report: Report) -> None:
    assert _revealed(report)[6:8] == ['"good.AddTodo"', '"good.AddTodo"']


def test_typing_handler_result(report: Report) -> None:
    assert _revealed(report)[8:] == ['"str"']


def test_typing_wrong_type(report: Report) -> None:
    assert (3, 'Argument "title" to "AddTodo" has incompatible type "int"; expected "str"  [arg-type]') in (
        report.of("bad.py", "error")
    )


def test_typing_missing_argument(report: Report) -> None:
    assert (4, 'Missing named argument "title" for "AddTodo"  [call-arg]') in report.of("bad.py", "error")


def test_typing_keyword_only(report: Report) -> None:
    assert (5, 'Too many positional arguments for "AddTodo"  [call-arg]') in report.of("bad.py", "error")


def test_typing_frozen(report: Report) -> None:
    assert (6, 'Property "title" defined in "AddTodo" is read-only  [misc]') in report.of("bad.py", "error")


def test_typing_unknown_argument(report: Report) -> None:
    assert (7, 'Unexpected keyword argument "colour" for "AddTodo"  [call-arg]') in report.of(
        "bad.py", "error"
    )


def test_typing_every_bad_line_reported(report: Report) -> None:
    assert sorted({line for line, _ in report.of("bad.py", "error")}) == [3, 4, 5, 6, 7]
