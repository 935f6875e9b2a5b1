"""The code generator: Python source of a class's plan, written from its compiled fields.

As :mod:`dataclasses` does for ``__init__``, since a call per validator and per field cost more
than the rest of ``build`` together. The source is registered in :mod:`linecache`, so tracebacks
and debuggers show the generated lines.
"""

from __future__ import annotations

import datetime
import decimal
import linecache
import types
import typing as t
import uuid

from werkzeug.datastructures import MultiDict

from ..forms import BAD_TEXT
from ..forms import FieldInfo
from ..forms import json_text
from .model import ERROR
from .model import EXACT_INT
from .model import FAIL
from .model import PASS
from .model import PERR
from .model import SET_UUID_INT
from .model import SET_UUID_SAFE
from .model import STOP_OK
from .model import STR_KINDS
from .model import CompiledField
from .model import CustomField
from .model import new_object
from .model import parse_ident
from .model import parse_uuid
from .model import uuid_from_int
from .model import uuid_int_or_none

# --- code generation ---------------------------------------------------------------------------

# How each kind's process_formdata turns ``submitted`` into ``data``: the very call WTForms makes.
_PROCESS_SOURCE = {
    "int": ("try:", "    data = int(submitted)", "except ValueError:", "    data = None", "    error = True"),
    "float": (
        "try:",
        "    data = float(submitted)",
        "except ValueError:",
        "    data = None",
        "    error = True",
    ),
    "decimal": (
        "try:",
        "    data = Decimal(submitted)",
        "except (InvalidOperation, ValueError, TypeError):",
        "    data = None",
        "    error = True",
    ),
    "bool": ("data = submitted not in false_values_{i}",),
    "date": ("data = process_{i}(submitted)", "if data is PERR:", "    data = None", "    error = True"),
    "datetime": (
        "data = process_{i}(submitted)",
        "if data is PERR:",
        "    data = None",
        "    error = True",
    ),
}

# The generated form of _converter, where data is the submitted string (str kinds).
_CONVERT_SOURCE = {
    "choice": "(choices_{i}.get(data) if data else None)",
    "uuid": "((parse_uuid(data) if uuid_int is None else uuid_from_int(uuid_int)) if data else None)",
}


def _chain_source(field: CompiledField, i: int, ok: str, *, str_data: bool, blank: bool) -> list[str]:
    """The validator chain of field ``i``: the body of Field.validate, reading and setting ``error``.

    :param ok: the expression of the field's value once valid.
    :param str_data: whether ``data`` is the submitted string.
    :param blank: whether ``raw0`` may be blank; if not, the checks of ``raw0`` alone pass.
    """
    lines = []
    for j, model in enumerate(field.models):
        if model.raw_only and not blank:
            continue
        if model.inline is not None and (str_data or not model.str_only):
            lines += [line.replace("{ok}", ok).replace("{check}", f"check_{i}_{j}") for line in model.inline]
        else:
            lines += [
                f"outcome = check_{i}_{j}(raw0, data)",
                "if outcome == ERROR:",
                "    error = True",
                "elif outcome == STOP_OK:",
                f"    return {ok}",
                "elif outcome != PASS:",
                "    return FAIL",
            ]
    return lines


def _function_source(head: str, body: list[str], ok: str) -> list[str]:
    """A generated function: ``body``, then the value unless an error was recorded."""
    return [head, *(f"    {line}" for line in _checked_body(body, ok))]


def _checked_body(body: list[str], ok: str) -> list[str]:
    """``body``, then ``return FAIL`` if it recorded an error, else ``return ok``."""
    if any(line.strip() == "error = True" for line in body):
        body = ["error = False", *body, "if error:", "    return FAIL"]
    return [*body, f"return {ok}"]


def _inline(body: list[str], ok: str, kind: str) -> list[str]:
    """The statements of a generated function, as a block of ``plan`` that sets ``value``.

    A frame per field cost a third of a valid build: ``plan`` runs each field's body in place, a
    ``while True`` block whose ``break`` stands for the function's ``return`` (no loop runs).
    """
    lines = ["while True:"]
    checked = _checked_body(body, ok)
    for line in checked[:-1]:
        stripped = line.lstrip()
        if stripped.startswith("return "):
            indent = " " * (4 + len(line) - len(stripped))
            lines += [f"{indent}value = {stripped[len('return '):]}", f"{indent}break"]
        else:
            lines.append(f"    {line}")
    if kind == "uuid":
        # uuid_from_int in place: the two slots uuid.UUID.__init__ sets.
        lines += _indent(
            [
                "if uuid_int is not None and data:",
                "    value = new_object(UUID)",
                "    set_uuid_int(value, uuid_int)",
                "    set_uuid_safe(value, SAFE_UNKNOWN)",
                "else:",
                f"    value = {ok}",
            ]
        )
    else:
        lines.append(f"    value = {ok}")
    return [*lines, "    break"]


def _field_bodies(field: CompiledField, i: int) -> tuple[str, list[str], list[str] | None]:
    """The valid value's expression, the body of ``text_i`` and of ``number_i`` (or ``None``)."""
    kind = field.info.kind
    str_data = kind in STR_KINDS
    if kind in _CONVERT_SOURCE:
        ok = _CONVERT_SOURCE[kind].replace("{i}", str(i))
    elif kind == "str" and field.info.optional:
        ok = '(None if data == "" else data)'
    else:
        ok = "data"
    body = []
    if kind == "uuid":
        body.append("uuid_int = None")
    if str_data:
        body.append("data = submitted")
    elif kind == "date" and field.iso_date:
        # _date_process's common case in place: a YYYY-MM-DD text that fromisoformat takes.
        body += [
            'if len(submitted) == 10 and submitted[4] == "-" and submitted[7] == "-":',
            "    try:",
            "        data = date_fromisoformat(submitted)",
            "    except ValueError:",
            f"        data = process_{i}(submitted)",
            "else:",
            f"    data = process_{i}(submitted)",
            "if data is PERR:",
            "    data = None",
            "    error = True",
        ]
    else:
        body += [line.replace("{i}", str(i)) for line in _PROCESS_SOURCE[kind]]
    if field.choice_texts is not None:
        body += [f"if data not in choice_texts_{i}:", "    error = True"]  # SelectField.pre_validate
    body += _chain_source(field, i, ok, str_data=str_data, blank=True)
    number = None
    if kind in ("int", "float"):
        # A JSON number already parsed; the text normalise_json would make of it is not blank.
        chain = _chain_source(field, i, ok, str_data=False, blank=False)
        field.number_checked = bool(chain)
        number = ['raw0 = "0"', *chain]
    return ok, body, number


def _field_source(field: CompiledField, i: int) -> list[str]:
    """``text_i(raw0, submitted)``, and for numbers ``number_i(data)``: value or ``FAIL``."""
    ok, body, number = _field_bodies(field, i)
    lines = _function_source(f"def text_{i}(raw0, submitted):", body, ok)
    if number is not None:
        lines += _function_source(f"def number_{i}(data):", number, ok)
    return lines


def _indent(lines: list[str]) -> list[str]:
    return [f"    {line}" for line in lines]


def _json_source(field: CompiledField, i: int) -> list[str]:
    """The JSON branch of ``plan`` for field ``i``: ``value`` from ``data``, or return None."""
    kind = field.info.kind
    ok, body, number_body = _field_bodies(field, i)
    lines = [f"value = source.get({field.info.name!r})", "if type(value) is str:"]
    # forms.json_text passes strings through, except to a bool field (a type error).
    if kind == "bool":
        lines.append("    value = FAIL")
    else:
        lines += _indent(["raw0 = submitted = value", *_inline(body, ok, kind)])
    # Without checks, number_i(x) is x: nothing to run.
    number = _inline(number_body, ok, kind) if number_body is not None and field.number_checked else []
    if kind == "int":
        lines += [
            "elif type(value) is int and -EXACT_INT < value < EXACT_INT:",
            *(_indent(["data = value", *number]) if number else ["    pass"]),
        ]
    elif kind == "float":
        lines += [
            "elif type(value) is float:",  # float(repr(x)) is x, and nan stays nan
            *(_indent(["data = value", *number]) if number else ["    pass"]),
            "elif type(value) is int and -EXACT_INT < value < EXACT_INT:",
            f"    value = number_{i}(float(value))",
        ]
    elif kind == "bool":
        # What the text step makes of "y" and "false" does not depend on the input: worked out once.
        lines += ["elif type(value) is bool:", f"    value = json_true_{i} if value else json_false_{i}"]
    lines += ["elif value is None:"]
    lines.append(f"    value = absent_json_{i}" if field.static else f"    value = missing_json_{i}()")
    lines += ["else:", f"    value = other_json_{i}(value)"]
    return [*lines, "if value is FAIL:", "    return None", f"value_{i} = value"]


def _custom_json_source(field: CompiledField, i: int) -> list[str]:
    """The JSON branch of ``plan`` for an application's own field ``i``: its clone decides."""
    name = field.info.name
    return [
        f"value = source.get({name!r})",
        f"value = missing_json_{i}() if value is None else json_value_{i}(value)",
        "if value is FAIL:",
        "    return None",
        f"value_{i} = value",
    ]


def _custom_form_source(field: CompiledField, i: int) -> list[str]:
    """The form-post branch of ``plan`` for an application's own field ``i``."""
    lines = [f"value = form_value_{i}(source)", "if value is FAIL:", "    return None"]
    return [*lines, f"value_{i} = value"]


def _form_source(field: CompiledField, i: int) -> list[str]:
    """The form-post branch of ``plan`` for field ``i``: ``value`` from ``data``, or return None."""
    # DateTimeField parses " ".join(raw_data); the others read raw_data[0] only.
    single = " and len(raw) == 1" if field.info.kind in ("date", "datetime") else ""
    kind = field.info.kind
    ok, body, _ = _field_bodies(field, i)
    lines = [
        f"raw = getlist({field.info.name!r})",
        "if not raw:",
        f"    value = absent_form_{i}" if field.static else f"    value = missing_form_{i}()",
        f"elif type(raw[0]) is str{single}:",
        *_indent(["raw0 = submitted = raw[0]", *_inline(body, ok, kind)]),
        "else:",
        f"    value = other_form_{i}(raw)",
    ]
    return [*lines, "if value is FAIL:", "    return None", f"value_{i} = value"]


# The values are made in one dict display at the end: a dict grown key by key costs more.
_PLAN_SOURCE = """\
def plan(source):
    if type(source) is dict:
{json}
        ident = source.get("id")
        if ident is not None:
            if type(ident) is not str:
                return None
            ident = parse_ident(ident)
            if ident is FAIL:
                return None
    elif isinstance(source, MultiDict):
        getlist = source.getlist
{form}
        raw = getlist("id")
        if not raw:
            ident = None
        else:
            ident = raw[0]
            if type(ident) is not str:
                return None
            ident = parse_ident(ident)
            if ident is FAIL:
                return None
    else:
        return None
    return {{{values}"id": ident}}
"""


def other_json(info: FieldInfo, text: t.Callable[[str, str], t.Any]) -> t.Callable[[t.Any], t.Any]:
    """The JSON step for the rarer value types: forms.json_text, then the text step."""

    def other_json(value: t.Any) -> t.Any:
        try:
            submitted = json_text(info, value)
        except ValueError:  # str() of an int too long to print: the real path raises it
            return FAIL
        if submitted is None or type(submitted) is not str:
            return FAIL  # a JSON type error: "Not a valid value."
        return text(submitted, submitted)

    return other_json


def other_form(text: t.Callable[[str, str], t.Any], joins: bool) -> t.Callable[[list[t.Any]], t.Any]:
    """The form step for several values of a date field, or a value that is not a string."""

    def other_form(raw: list[t.Any]) -> t.Any:
        if not joins or not all(type(item) is str for item in raw):
            return FAIL
        return text(raw[0], " ".join(raw))

    return other_form


def generate(fields: list[CompiledField], owner: str) -> t.Callable[[t.Any], dict[str, t.Any] | None]:
    """Generate, compile and return the ``plan`` function over compiled ``fields``."""
    namespace: dict[str, t.Any] = {
        "__name__": __name__,
        # Builtins as globals: one dict lookup instead of two.
        "type": type,
        "isinstance": isinstance,
        "len": len,
        "int": int,
        "float": float,
        "FAIL": FAIL,
        "PERR": PERR,
        "PASS": PASS,
        "ERROR": ERROR,
        "STOP_OK": STOP_OK,
        "EXACT_INT": EXACT_INT,
        "MultiDict": MultiDict,
        "Decimal": decimal.Decimal,
        "InvalidOperation": decimal.InvalidOperation,
        "parse_ident": parse_ident,
        "uuid_int_or_none": uuid_int_or_none,
        "uuid_from_int": uuid_from_int,
        "parse_uuid": parse_uuid,
        "_BAD_TEXT": BAD_TEXT,
        "new_object": new_object,
        "UUID": uuid.UUID,
        "set_uuid_int": SET_UUID_INT,
        "set_uuid_safe": SET_UUID_SAFE,
        "SAFE_UNKNOWN": uuid.SafeUUID.unknown,
        "date_fromisoformat": datetime.date.fromisoformat,
    }
    source: list[str] = []
    json: list[str] = []
    form: list[str] = []
    for i, field in enumerate(fields):
        if field.custom:
            json += _custom_json_source(field, i)
            form += _custom_form_source(field, i)
            assert isinstance(field, CustomField)
            namespace.update(
                {
                    f"json_value_{i}": field.json_value,
                    f"missing_json_{i}": field.missing_json,
                    f"form_value_{i}": field.form_value,
                }
            )
            continue
        source += _field_source(field, i)
        json += _json_source(field, i)
        form += _form_source(field, i)
        namespace.update(
            {
                f"process_{i}": field.process,
                f"false_values_{i}": field.false_values,
                f"choice_texts_{i}": field.choice_texts,
                f"choices_{i}": field.info.choices,
                f"absent_json_{i}": field.absent_json,
                f"absent_form_{i}": field.absent_form,
                f"missing_json_{i}": field.missing_json,
                f"missing_form_{i}": field.missing_form,
            }
        )
        namespace.update({f"check_{i}_{j}": model.check for j, model in enumerate(field.models)})
    source.append(
        _PLAN_SOURCE.format(
            json="\n".join(f"        {line}" for line in json),
            form="\n".join(f"        {line}" for line in form),
            values="".join(f"{field.info.name!r}: value_{i}, " for i, field in enumerate(fields)),
        )
    )
    exec_source("\n".join(source), f"<fast path of {owner}>", namespace)
    for i, field in enumerate(fields):
        if field.custom:
            continue
        text = namespace[f"text_{i}"]
        namespace[f"other_json_{i}"] = other_json(field.info, text)
        namespace[f"other_form_{i}"] = other_form(text, field.info.kind in ("date", "datetime"))
        field.text = text
        namespace[f"json_true_{i}"] = text("y", "y")
        namespace[f"json_false_{i}"] = text("false", "false")
    return t.cast("t.Callable[[t.Any], dict[str, t.Any] | None]", namespace["plan"])


def maker(command: type, names: list[str]) -> t.Callable[[dict[str, t.Any]], t.Any] | None:
    """``make(values)``: a new ``command`` with each slot in ``names`` set from ``values``.

    What the dataclass ``__init__`` does for a class that ``_constructs_directly``, without its
    argument parsing: a slot descriptor's ``__set__`` is the cheapest way to set a frozen field.
    """
    namespace: dict[str, t.Any] = {"new_object": new_object, "command": command}
    lines = ["def make(values):", "    instance = new_object(command)"]
    for i, name in enumerate(names):
        slot = next((k.__dict__[name] for k in command.__mro__ if name in k.__dict__), None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        namespace[f"set_{i}"] = slot.__set__
        lines.append(f"    set_{i}(instance, values[{name!r}])")
    lines.append("    return instance")
    exec_source("\n".join(lines), f"<make of {command.__qualname__}>", namespace)
    return t.cast("t.Callable[[dict[str, t.Any]], t.Any]", namespace["make"])


def exec_source(source: str, filename: str, namespace: dict[str, t.Any]) -> None:
    """Compile and run generated ``source``, registered in ``linecache`` so tracebacks show it."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)


