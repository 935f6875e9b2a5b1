"""Imports inside flask_commands flow downward only, per STYLE.md's layer table.

A module imports only from lower layers (or its own, except layer 0, which imports nothing from
the package). Imports under ``if t.TYPE_CHECKING:`` are type-only and ignored; imports inside
functions count. No module calls a private name of another module's objects (a private method
defined in another module's class, or another module's private function), nor imports another
module's private names for typing, nor reads a private attribute that only another module's
classes set (``Cmd._fields`` outside command.py).
"""

from __future__ import annotations

import ast
import pathlib
import typing as t

import pytest

import flask_commands

PACKAGE = pathlib.Path(flask_commands.__file__).resolve().parent

#: STYLE.md's table: module (or package) → layer.
LAYERS: dict[str, int] = {
    "errors": 0,
    "signals": 0,
    "_codec": 0,
    "htmx": 0,
    "problem": 0,
    "forms": 1,
    "_fastpath": 1,
    "command": 2,
    "idempotency": 3,
    "state": 3,
    "_idempotent": 4,
    "handler": 5,
    "outbox": 5,
    "_body": 5,
    "views": 5,
    "_templating": 5,
    "_error_handlers": 5,
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


# Private names stay inside their module.

#: Private names other modules may still call, until their owners make them public.
ALLOWED_PRIVATE_CALLS = {"signals._send"}


def _tree(module: str) -> ast.Module:
    path = MODULES[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_methods() -> dict[str, set[str]]:
    """Private method name → the modules whose classes define it."""
    found: dict[str, set[str]] = {}
    for module in MODULES:
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _private(item.name):
                        found.setdefault(item.name, set()).add(module)
    return found


PRIVATE_METHODS = _private_methods()


def _module_aliases(module: str, tree: ast.Module) -> dict[str, str]:
    """Local name → package module, for ``from . import signals`` and ``import flask_commands.x``."""
    aliases = {}
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias, target in zip(node.names, _resolve(module, is_package, node), strict=False):
                if target.endswith("." + alias.name):
                    aliases[alias.asname or alias.name] = target
    return aliases


def _private_calls(module: str) -> list[str]:
    """Calls in ``module`` of a private name of another module's objects (or of another module)."""
    tree = _tree(module)
    aliases = _module_aliases(module, tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, owner = node.func.attr, node.func.value
        if not _private(name):
            continue
        if isinstance(owner, ast.Name) and owner.id in aliases:
            target = aliases[owner.id]
            if target != module and f"{owner.id}.{name}" not in ALLOWED_PRIVATE_CALLS:
                found.append(f"line {node.lineno}: {owner.id}.{name}() of {target}")
            continue
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        defined_in = PRIVATE_METHODS.get(name, set())
        if defined_in and module not in defined_in:
            found.append(f"line {node.lineno}: .{name}() of {', '.join(sorted(defined_in))}")
    return found


def _type_only_private_imports(module: str) -> list[str]:
    """Private names that ``module`` imports from another package module under ``if TYPE_CHECKING:``."""
    tree = _tree(module)
    runtime = {id(node) for node in _runtime_nodes(tree)}
    is_package = MODULES[module].name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in runtime:
            for alias, target in zip(node.names, _resolve(module, is_package, node), strict=False):
                if _private(alias.name) and target != module:
                    found.append(f"line {node.lineno}: {alias.name} from {target}")
    return found


def _private_attributes() -> dict[str, set[str]]:
    """Private attribute name → the modules whose classes set or declare it (``self._x = ...``,
    a class-level ``_x``, or ``__slots__``)."""
    found: dict[str, set[str]] = {}
    for module in MODULES:
        for node in ast.walk(_tree(module)):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in ast.walk(node):
                names: list[str] = []
                if isinstance(item, ast.Attribute) and isinstance(item.ctx, ast.Store):
                    if isinstance(item.value, ast.Name) and item.value.id in ("self", "cls"):
                        names.append(item.attr)
                elif isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
                    names.append(item.id)
                elif isinstance(item, ast.Constant) and isinstance(item.value, str):
                    names.append(item.value)  # __slots__ entries
                for name in names:
                    if _private(name):
                        found.setdefault(name, set()).add(module)
    return found


PRIVATE_ATTRIBUTES = _private_attributes()


def _private_reads(module: str) -> list[str]:
    """Reads in ``module`` of a private attribute that only other modules' classes define."""
    found = []
    for node in ast.walk(_tree(module)):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        defined_in = PRIVATE_ATTRIBUTES.get(node.attr, set())
        if defined_in and module not in defined_in:
            found.append(f"line {node.lineno}: .{node.attr} of {', '.join(sorted(defined_in))}")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_no_private_calls_across_modules(module: str) -> None:
    assert _private_calls(module) == [], f"{module} calls private names of other modules"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_no_private_reads_across_modules(module: str) -> None:
    assert _private_reads(module) == [], f"{module} reads private attributes of other modules' objects"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_no_type_only_private_imports(module: str) -> None:
    assert _type_only_private_imports(module) == [], f"{module} imports private names for typing"


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


FakeModule = t.Callable[[str], str]


@pytest.fixture
def fake_module(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> FakeModule:
    """Registers a source text as the package module ``flask_commands.fake``; returns that name."""

    def register(source: str) -> str:
        path = tmp_path / "fake.py"
        path.write_text(source)
        monkeypatch.setitem(MODULES, "flask_commands.fake", path)
        return "flask_commands.fake"

    return register


def test_layers_private_call_caught(fake_module: FakeModule, monkeypatch: pytest.MonkeyPatch) -> None:
    module = fake_module(
        "from . import signals\n"
        "def f(ext, sig):\n"
        "    ext._state()\n"
        "    signals._send(sig, None)\n"
        "    signals._other()\n"
    )
    monkeypatch.setitem(PRIVATE_METHODS, "_state", {"flask_commands.extension"})
    assert _private_calls(module) == [
        "line 3: ._state() of flask_commands.extension",
        "line 5: signals._other() of flask_commands.signals",
    ]


def test_layers_type_only_private_import_caught(fake_module: FakeModule) -> None:
    module = fake_module(
        "import typing as t\n"
        "if t.TYPE_CHECKING:\n"
        "    from .extension import _AppState\n"
        "    from .handler import Handler\n"
    )
    assert _type_only_private_imports(module) == ["line 3: _AppState from flask_commands.extension"]


def test_layers_private_read_caught(fake_module: FakeModule, monkeypatch: pytest.MonkeyPatch) -> None:
    module = fake_module(
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._own = 1\n"
        "def f(cmd, mine):\n"
        "    return cmd._fields, mine._own, cmd.public\n"
    )
    monkeypatch.setitem(PRIVATE_ATTRIBUTES, "_own", {module})
    assert _private_reads(module) == ["line 5: ._fields of flask_commands.command"]
