"""The compiled per-class fast path of ``Command.build``.

For one command class, a plan answers what the class's real ``Form`` would make of an input,
without building the form: it returns the command's values only when it has proved that the
form would accept the input and produce those very values, and ``None`` on any doubt (an
error, an unusual type, a setting it does not model), so that the real form runs and every
message still comes from WTForms.

It models the field classes and validators :mod:`flask_commands.forms` derives, each after its
WTForms source (named in each docstring), and parses with the calls WTForms makes
(``int(text)``, ``float(text)``, ``Decimal(text)``, ``strptime``), so the values are the same by
construction. Invalid input is worded without the form too (:mod:`.errors`).

- :mod:`.model`: the model of WTForms' rules, field by field;
- :mod:`.codegen`: the Python source of the plan, generated per class;
- :mod:`.errors`: the errors of an invalid input, from clones of the real form's bound fields.

Both read the table of field kinds in :mod:`flask_commands.forms`. ``class Cmd(Command,
fast_path=False)`` turns the plan off. ``tests/test_fastpath.py`` compares it with the real form.
"""

from __future__ import annotations

import dataclasses
import typing as t

import wtforms
from wtforms import validators as v

from ..forms import FieldInfo
from .codegen import generate
from .codegen import maker
from .errors import FieldErrors
from .errors import field_errors as field_errors
from .model import SET_UUID_INT as SET_UUID_INT
from .model import SET_UUID_SAFE as SET_UUID_SAFE
from .model import compile_field
from .model import uuid_from_int as uuid_from_int

__all__ = ["SET_UUID_INT", "SET_UUID_SAFE", "Plan", "compile_plan", "field_errors", "uuid_from_int"]

#: The ``Meta`` settings a command may declare and the plan still models: they change only the
#: language of the messages, which come from WTForms' own fields (cloned, see FieldErrors).
_META_OPTIONS = frozenset({"locales", "cache_translations"})


class Plan(t.Protocol):
    """A compiled fast path: ``plan(data)`` returns the values of a valid input, else ``None``."""

    #: The names of the class's trusted fields, so ``build`` checks ``**trusted`` in one compare.
    trusted: frozenset[str]
    #: Whether ``object.__new__`` and setting each field does what calling the class does.
    direct: bool
    #: ``make(values)``: the command of a ``values`` dict holding every field, ``id`` and
    #: ``issued_at``, its slots set directly; ``None`` unless ``direct``.
    make: t.Callable[[dict[str, t.Any]], t.Any] | None

    def __call__(self, data: t.Mapping[str, t.Any], /) -> dict[str, t.Any] | None:
        """Return the untrusted field values and ``"id"``, or ``None`` to use the real form."""

    def errors(self, data: t.Mapping[str, t.Any], /) -> dict[str, list[str]] | None:
        """Return the field errors of an invalid input, or ``None`` where the real form must decide."""


# --- the class ---------------------------------------------------------------------------------


def _id_field_is_derived(unbound: t.Any) -> bool:
    """Whether the hidden ``id`` field is the one forms.make_form_class declares."""
    if getattr(unbound, "field_class", None) is not wtforms.HiddenField or unbound.args:
        return False
    if set(unbound.kwargs) != {"validators"}:
        return False
    validators = list(unbound.kwargs["validators"] or ())
    if [type(x) for x in validators] != [v.Optional, v.UUID]:
        return False
    return bool(validators[0].string_check(" a ") == "a")  # strip_whitespace, as parse_ident assumes


def _constructs_directly(command: type | None) -> bool:
    """Whether ``command(**values)`` only sets each field: no ``__post_init__``, nothing custom."""
    if command is None or not dataclasses.is_dataclass(command):
        return False
    if hasattr(command, "__post_init__") or command.__new__ is not object.__new__:
        return False
    if type(command).__call__ is not type.__call__:
        return False
    if not all(f.init for f in dataclasses.fields(command)):
        return False
    # dataclasses compiles the __init__ it writes from a string; one written by hand has a file.
    code = getattr(command.__dict__.get("__init__"), "__code__", None)
    return code is not None and code.co_filename == "<string>" and code.co_name == "__init__"


def compile_plan(
    fields: t.Sequence[FieldInfo], form_class: type[wtforms.Form], command: type | None = None
) -> Plan | None:
    """Return the fast path for a command with ``fields`` and ``form_class``, or ``None``.

    ``None`` when the form has anything the plan does not model (a custom field or ``Meta``, an
    unknown validator, filters, inline ``validate_<name>`` methods): ``build`` then always uses
    the real form.

    :param command: the command class, to tell whether it may be built without its ``__init__``.
    """
    if form_class.__bases__ != (wtforms.Form,):
        return None
    declared_meta = vars(form_class).get("Meta")
    if declared_meta is not None and not _META_OPTIONS.issuperset(
        name for name in vars(declared_meta) if not name.startswith("__")
    ):
        return None  # a Meta that binds, wraps or renders otherwise: not modelled
    # The fields FormMeta collects: public attributes that are (unbound) fields.
    unbound = {
        name: value
        for name in dir(form_class)
        if not name.startswith("_") and hasattr(value := getattr(form_class, name), "_formfield")
    }
    untrusted = [info for info in fields if not info.trusted]
    if set(unbound) != {"id"} | {info.name for info in untrusted}:
        return None
    for name in unbound:
        if hasattr(form_class, f"validate_{name}") or hasattr(form_class, f"filter_{name}"):
            return None
    if not _id_field_is_derived(unbound["id"]):
        return None
    # The form's own Meta (its locales), as the form combines it with DefaultMeta.
    meta = form_class().meta
    compiled = []
    for info in untrusted:
        field = compile_field(info, unbound[info.name], meta)
        if field is None:
            return None
        compiled.append(field)
    plan = generate(compiled, form_class.__qualname__)
    ident = unbound["id"].bind(form=None, name="id", _meta=meta)
    setattr(plan, "errors", FieldErrors(compiled, ident, meta))  # noqa: B010
    # A function attribute keeps the plan a plain function: a __call__ would cost a call more.
    setattr(plan, "trusted", frozenset(info.name for info in fields if info.trusted))  # noqa: B010
    direct = _constructs_directly(command)
    setattr(plan, "direct", direct)  # noqa: B010
    make = None
    if direct and command is not None:
        make = maker(command, ["id", "issued_at", *(info.name for info in fields)])
    setattr(plan, "make", make)  # noqa: B010
    return t.cast(Plan, plan)

