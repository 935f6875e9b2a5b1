"""Every Python example in docs/ runs, and the guide's pages link to each other and to nothing missing.

A page's ```python blocks run in order in one namespace (a fresh module per page, in a temporary
folder), so a later block may use what an earlier one defined; their ``assert`` lines check what
the text says. A template block whose first line is ``{# templates/NAME #}`` is written to that
file first, where ``Flask(__name__)`` finds it. Blocks fenced ```python pytest are test modules:
they are joined into one file and run by an inner pytest, where every test must pass. A block
fenced ```python no-run is shown and not run: each is listed in NOT_RUN with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import sys
import types
import typing as t

import pytest

pytest_plugins = ["pytester"]

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
_FENCE = re.compile(r"^```(\S*)(?:[ \t]+(\S+))?[ \t]*$")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_TEMPLATE = re.compile(r"\{# (templates/[\w./-]+) #\}")
FLAGS = (None, "no-run", "pytest")

#: (page, first line of the block) of every block not run, and why.
NOT_RUN: dict[tuple[str, str], str] = {
    ("background.md", "# demo_app/worker.py"): "a worker module, loaded by the celery command",
    ("idempotency.md", "# migrations/env.py, after target_metadata is set"): "a fragment of Alembic's env.py",
}


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the block's first code line, 1-based
    language: str
    flag: str | None
    code: str


def blocks(path: pathlib.Path) -> list[Block]:
    """The fenced code blocks of a Markdown page."""
    found = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start = index + 1
        end = start
        while end < len(lines) and lines[end] != "```":
            end += 1
        assert end < len(lines), f"{path.name}:{index + 1}: the code block is not closed"
        found.append(Block(path.name, start + 1, match[1], match[2], "\n".join(lines[start:end]) + "\n"))
        index = end + 1
    return found


def python_blocks(path: pathlib.Path) -> list[Block]:
    return [b for b in blocks(path) if b.language == "python"]


RUN_PAGES = [p for p in PAGES if any(b.flag is None for b in python_blocks(p))]
PYTEST_PAGES = [p for p in PAGES if any(b.flag == "pytest" for b in python_blocks(p))]


@contextlib.contextmanager
def page_module(name: str, tmp_path: pathlib.Path) -> t.Iterator[types.ModuleType]:
    """A fresh module for one page's examples, run from ``tmp_path`` (files they write stay there)."""
    module = types.ModuleType(name)
    module.__file__ = str(tmp_path / f"{name}.py")
    sys.modules[name] = module
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield module
    finally:
        os.chdir(cwd)
        del sys.modules[name]


def write_templates(path: pathlib.Path, folder: pathlib.Path) -> None:
    for block in blocks(path):
        match = _TEMPLATE.fullmatch(block.code.splitlines()[0]) if block.code.strip() else None
        if match is not None:
            target = folder / match[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")


@pytest.mark.parametrize("path", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_docs_examples_run(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    runnable = [b for b in python_blocks(path) if b.flag is None]
    write_templates(path, tmp_path)
    name = "docs_" + path.stem.replace("-", "_")
    with page_module(name, tmp_path) as module:
        for block in runnable:
            # Blank lines up to the block's place, so tracebacks name the page's own line numbers.
            code = compile("\n" * (block.line - 1) + block.code, str(path), "exec")
            exec(code, module.__dict__)


@pytest.mark.parametrize("path", PYTEST_PAGES, ids=[p.name for p in PYTEST_PAGES])
def test_docs_examples_pytest(path: pathlib.Path, pytester: pytest.Pytester) -> None:
    tests = [b for b in python_blocks(path) if b.flag == "pytest"]
    write_templates(path, pytester.path)
    source = "\n\n".join(b.code for b in tests)
    pytester.makepyfile(**{"test_docs_" + path.stem.replace("-", "_"): source})
    # In process, flask_commands was imported before the inner run could mark the plugin for
    # assertion rewriting, which only the plugin's own asserts would need.
    already = "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning"
    result = pytester.runpytest_inprocess("-W", "error", "-W", already, "-p", "no:cacheprovider")
    count = len(re.findall(r"^def test_", source, flags=re.MULTILINE))
    result.assert_outcomes(passed=count)


def test_docs_examples_flags() -> None:
    unknown = [(b.page, b.line, b.flag) for p in PAGES for b in python_blocks(p) if b.flag not in FLAGS]
    assert unknown == []


def test_docs_examples_not_run_listed() -> None:
    not_run = {
        (b.page, b.code.splitlines()[0]) for p in PAGES for b in python_blocks(p) if b.flag == "no-run"
    }
    assert not_run == set(NOT_RUN)


def test_docs_examples_assert() -> None:
    # Examples show results as assert lines, which running them checks.
    pages = {p.name for p in PAGES for b in python_blocks(p) if b.flag != "no-run" and "assert " in b.code}
    with_examples = {p.name for p in PAGES if any(b.flag != "no-run" for b in python_blocks(p))}
    assert with_examples - pages == set()


def test_docs_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(_LINK.findall(index))
    assert {p.name for p in PAGES if p.name != "index.md"} <= linked


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_docs_links_resolve(path: pathlib.Path) -> None:
    text = path.read_text(encoding="utf-8")
    missing = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.partition("#")[0]
        if not (path.parent / file).exists():
            missing.append(target)
    assert missing == []
