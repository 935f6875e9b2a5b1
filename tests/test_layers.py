"""Imports inside flask_commands flow downward only, per STYLE.md's layer table.

A module imports only from lower layers (or its own, except layer 0, which imports nothing from
the package). Imports under ``if t.TYPE_CHECKING:`` are type-only and ignored; imports inside
functions count.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import flask_commands

PACKAGE = pathlib.Path(flask_commands.__file__).resolve().parent

#: STYLE.md's table: module (or package) → layer.
LAYERS: dict[str, int] = {
    "errors": 0,
    "signals": 0,
    "_codec": 0,
    "htmx": 0,
    "forms": 1,
    "_fastpath": 1,
    "command": 2,
    "idempotency": 3,
    "handler": 4,
    "problem": 5,
    "views": 5,
    "_idempotent": 5,
    "extension": 6,
    "cli": 6,
    "openapi": 6,
    "celery": 6,
    "testing": 6,
    "otel": 6,
}

#: The package's __init__ re-exports the public names: it sits above every layer.
TOP = max(LAYERS.values()) + 1


def _module_name(path: pathlib.Path) -> str:
    """``flask_commands.idempotency.store`` for ``.../idempotency/store.py``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int | None:
    """The layer of ``flask_commands.x[.y]``, ``TOP`` for the package itself, ``None`` if unplaced."""
    parts = module.split(".")
    if parts == ["flask_commands"]:
        return TOP
    return LAYERS.get(parts[1])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those only under ``if TYPE_CHECKING:``."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def _resolve(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The flask_commands modules that ``node`` in ``module`` imports at run time."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "flask_commands"]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != "flask_commands":
        return []
    targets = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        # ``from . import signals`` imports a module; ``from .forms import field`` a name.
        targets.append(submodule if submodule in MODULES else source)
    return targets


def _imports(module: str) -> list[tuple[int, str]]:
    """``(line, imported module)`` for each runtime import of the package in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _resolve(module, path.name == "__init__.py", node):
                found.append((node.lineno, target))
    return sorted(found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_module_placed(module: str) -> None:
    if _layer(module) is None:
        pytest.fail(
            f"{module} is not in STYLE.md's layer table; place it in a layer there and in LAYERS in"
            " tests/test_layers.py."
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_no_upward_import(module: str) -> None:
    layer = _layer(module)
    if layer is None:
        pytest.skip(f"{module} is not placed in a layer (test_layers_module_placed fails for it)")
    upward = []
    for line, target in _imports(module):
        target_layer = _layer(target)
        if target_layer is None:
            continue  # reported for the target itself
        if target_layer > layer or (layer == 0 and target != module):
            upward.append(f"line {line}: {target} (layer {target_layer})")
    assert upward == [], f"{module} (layer {layer}) imports upward: {upward}"


# The checker itself.


def test_layers_resolve_relative_module() -> None:
    tree = ast.parse("from . import signals")
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("flask_commands.command", False, node) == ["flask_commands.signals"]


def test_layers_resolve_relative_name() -> None:
    node = ast.parse("from .forms import field").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("flask_commands.command", False, node) == ["flask_commands.forms"]


def test_layers_resolve_parent_package() -> None:
    node = ast.parse("from .. import _codec").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("flask_commands.idempotency.store", False, node) == ["flask_commands._codec"]


def test_layers_resolve_absolute() -> None:
    node = ast.parse("import flask_commands.handler").body[0]
    assert isinstance(node, ast.Import)
    assert _resolve("flask_commands.errors", False, node) == ["flask_commands.handler"]


def test_layers_resolve_foreign() -> None:
    node = ast.parse("from flask import Flask").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("flask_commands.errors", False, node) == []


def test_layers_type_checking_ignored() -> None:
    tree = ast.parse(
        "import typing as t\n"
        "if t.TYPE_CHECKING:\n"
        "    from .handler import Handler\n"
        "else:\n"
        "    from .forms import field\n"
        "def f():\n"
        "    from .extension import Commands\n"
    )
    imports = [n for n in _runtime_nodes(tree) if isinstance(n, ast.ImportFrom)]
    assert sorted(n.module or "" for n in imports) == ["extension", "forms"]
