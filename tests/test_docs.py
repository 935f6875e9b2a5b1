"""The vendored htmx matches the version the package states, and ships with its licence."""

from __future__ import annotations

import pathlib
import re

from flask_commands import htmx

STATIC = pathlib.Path(htmx.__file__).parent / "static"


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
