"""The vendored htmx matches the version the package states, and ships with its licence."""

from __future__ import annotations

import configparser
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from flask_commands import htmx

STATIC = pathlib.Path(htmx.__file__).parent / "static"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_vendored_htmx_filename() -> None:
    assert htmx.HTMX_FILENAME.removeprefix("htmx-").removesuffix(".min.js") == htmx.HTMX_VERSION
    assert sorted(p.name for p in STATIC.glob("htmx-*.min.js")) == [htmx.HTMX_FILENAME]


def test_vendored_htmx_comment_version() -> None:
    first_line = (STATIC / htmx.HTMX_FILENAME).read_text(encoding="utf-8").partition("\n")[0]
    match = re.fullmatch(r"/\* htmx (\S+) \(npm htmx\.org\), .* \*/", first_line)
    assert match is not None, first_line
    assert match[1] == htmx.HTMX_VERSION


def test_vendored_htmx_build_version() -> None:
    source = (STATIC / htmx.HTMX_FILENAME).read_text(encoding="utf-8")
    assert re.findall(r'version="([^"]+)"', source) == [htmx.HTMX_VERSION]


def test_vendored_htmx_licence() -> None:
    licence = (STATIC / "htmx-LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("Zero-Clause BSD")


# `make demo`: the demo's needs only, quietly


def _extras() -> dict[str, list[str]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    extras = parser["options.extras_require"]
    return {name: [line.strip() for line in extras[name].strip().splitlines()] for name in extras}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


DEV_TOOLS = {"pytest", "pytest-timeout", "hypothesis", "mypy", "ruff", "playwright", "schemathesis", "build"}


def test_demo_extra_holds_no_dev_tool() -> None:
    extras = _extras()
    demo = _names(extras["demo"])
    assert demo == {"celery", "flask-sqlalchemy", "flask-wtf"}
    assert not demo & DEV_TOOLS
    assert _names(extras["dev"]) >= DEV_TOOLS  # the tools exist, in the dev extra only


def _target(name: str) -> tuple[list[str], list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(name)}:([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, re.MULTILINE)
    assert match is not None, name
    return match[1].split(), match[2].splitlines()


def test_make_demo_installs_the_demo_extra_only_and_quietly() -> None:
    prerequisites, recipe = _target("demo")
    assert prerequisites == ["$(DEMO_STAMP)"]
    install = [line for line in _target("$(DEMO_STAMP)")[1] if "pip install" in line]
    assert install == ["\t@$(BIN)/python -m pip install -qq --disable-pip-version-check -e '.[demo]'"]
    assert any("http://127.0.0.1:$(PORT)/" in line for line in recipe)  # where to look
    assert any("--port $(PORT)" in line for line in recipe)


def test_package_build_warns_of_no_ignored_package(tmp_path: pathlib.Path) -> None:
    # setuptools warns "Package would be ignored" for data folders left out of `packages`.
    code = (
        "import setuptools, sys; sys.argv = ['setup.py', 'build_py', '-d', sys.argv[1]]; setuptools.setup()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "would be ignored" not in output
    built = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {"flask_commands/templates/commands/macros.html", "flask_commands/py.typed"} <= built
    assert "flask_commands/static/htmx-LICENSE" in built
    assert not any("__pycache__" in path for path in built)


# The README's example runs as it is


def _fenced(text: str, first_line: str) -> str:
    """The fenced block of ``text`` whose first line is ``first_line``."""
    match = re.search(rf"^```[^\n]*\n({re.escape(first_line)}\n.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert match is not None, first_line
    return match[1]


def test_readme_example_runs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "SPEC.md" not in readme  # the repository has none
    (tmp_path / "app.py").write_text(_fenced(readme, "# app.py"))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "todos.html").write_text(_fenced(readme, "{# templates/todos.html #}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.spec_from_file_location("readme_app", tmp_path / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_app", module)  # where Flask finds the app's root path
    spec.loader.exec_module(module)
    client = module.app.test_client()

    page = client.get("/")
    assert page.status_code == 200
    assert '<form method="post" action="/"' in page.text
    assert client.post("/", data={"title": ""}).status_code == 422
    added = client.post("/", data={"title": "Milk"})
    assert (added.status_code, added.location) == (303, "/")
    assert "<li>Milk</li>" in client.get("/").text
    again = client.post("/", data={"title": "Milk"})
    assert again.status_code == 409
    assert "That todo is on the list already." in again.text
    created = client.post("/api/todos", json={"title": "Eggs"})
    assert (created.status_code, created.json) == (201, {"id": 2, "title": "Eggs"})
    duplicate = client.post("/api/todos", json={"title": "Eggs"})
    assert duplicate.status_code == 409
    assert duplicate.mimetype == "application/problem+json"
    assert (tmp_path / "instance" / "todos.sqlite").exists()
