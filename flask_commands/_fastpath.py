"""The compiled per-class fast path of ``Command.build``.

For one command class, a plan answers what the class's real ``Form`` would make of an input,
without building the form: it returns the command's values only when it has proved that the
form would accept the input and produce those very values, and ``None`` on any doubt (an
error, an unusual type, a setting it does not model), so that the real form runs and every
message still comes from WTForms.

It models the field classes and validators :mod:`flask_commands.forms` derives, each after its
WTForms source (named in each docstring), and parses with the calls WTForms makes
(``int(text)``, ``float(text)``, ``Decimal(text)``, ``strptime``), so the values are the same by
construction. The plan is Python source generated per class, as :mod:`dataclasses` does for
``__init__``: a call per validator and per field cost more than the rest of ``build`` together.
``tests/test_fastpath.py`` compares it with the real form.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import linecache
import math
import re
import types
import typing as t
import uuid

import wtforms
from werkzeug.datastructures import MultiDict
from wtforms import validators as v
from wtforms.fields.choices import SelectChoice
from wtforms.meta import DefaultMeta

from .forms import _FIELD_CLASSES
from .forms import BAD_TEXT
from .forms import NOT_A_VALID_VALUE
from .forms import FieldInfo
from .forms import PlainText
from .forms import _json_text


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


class _Sentinel:
    """A marker value, named for its repr in generated code and tracebacks."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: "Not proved": the real form must decide (the input may be invalid, or only unusual).
_FAIL: t.Final = _Sentinel("_FAIL")
#: A processing error (``process_formdata`` raised ValueError): the field's data is ``None``.
_PERR: t.Final = _Sentinel("_PERR")

# What one validator does to a field, as WTForms' Field._run_validation_chain sees it.
_PASS = 0
_ERROR = 1  # a ValidationError: an error, and the chain goes on
_STOP_OK = 2  # Optional's StopValidation: every error so far cleared, the field is valid
_STOP_ERR = 3  # InputRequired's or DataRequired's StopValidation with its message
_UNSURE = 4  # not modelled for this value (WTForms might even raise): fall back

#: ``check(raw0, data)``: ``raw0`` is ``raw_data[0]`` (``None`` when nothing was sent).
_Check = t.Callable[[str | None, t.Any], int]
_Process = t.Callable[[str], t.Any]

_DATE_FORMATS = ["%Y-%m-%d"]
_DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]

# JSON ints within this bound are int(str(n)) and float(n) == float(str(n)); beyond it str(n)
# may even raise (sys.get_int_max_str_digits), so those take the general route.
_EXACT_INT = 2**53

# The constructor arguments forms._unbound_field passes; any other one changes behaviour.
_KNOWN_KWARGS = frozenset({"label", "validators", "description", "render_kw", "default"})
# Kinds whose data is the submitted string itself.
_STR_KINDS = frozenset({"str", "uuid", "choice"})
_NUMBER_KINDS = frozenset({"int", "float", "decimal"})
_NUMBER_TYPES = (int, float, decimal.Decimal)
_MATCHERS = (re.match, re.search, re.fullmatch)


# --- UUIDs -------------------------------------------------------------------------------------

_new = object.__new__
# uuid.UUID's two slots, set through their descriptors: cheaper than object.__setattr__ by name.
_set_int = uuid.UUID.__dict__["int"].__set__
_set_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum attribute lookup costs as much as a call


def _uuid_int(text: str) -> int | None:
    """The integer ``uuid.UUID(text)`` would hold, or ``None`` where it would raise."""
    # uuid.UUID(text) removes "urn:", "uuid:" and braces, then every hyphen, wants 32 characters
    # and takes int(them, 16). When the text without hyphens already has 32 characters that
    # int() accepts, none of those was there (int() refuses their letters): the same integer.
    digits = text.replace("-", "")
    if len(digits) == 32:
        try:
            return int(digits, 16)
        except ValueError:
            pass
    try:
        return uuid.UUID(text).int
    except ValueError:
        return None


def uuid_from_int(number: int) -> uuid.UUID:
    """``uuid.UUID(int=number)`` for a 128-bit ``number``, at a third of its cost."""
    # The two slots uuid.UUID.__init__ sets.
    value = _new(uuid.UUID)
    _set_int(value, number)
    _set_is_safe(value, _SAFE_UNKNOWN)
    return value


def _parse_uuid(text: str) -> t.Any:
    """``uuid.UUID(text)``, or ``_FAIL`` where it raises."""
    number = _uuid_int(text)
    return _FAIL if number is None else uuid_from_int(number)


def _ident(text: str) -> t.Any:
    """The command id for a submitted ``id`` text: a UUID, ``None`` (new id), or ``_FAIL``."""
    if not text.strip():
        # Optional stops the chain: the real path takes "" as no id (and fails on whitespace).
        return None if text == "" else _FAIL
    return _parse_uuid(text)  # the UUID validator passes exactly when this does


# --- validators --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Model:
    """A validator's model: as a function, and as generated source where it is short."""

    check: _Check
    #: Source lines doing what ``check`` does, reading ``raw0``, ``data`` and ``error``, or
    #: ``None`` to call ``check``. ``{ok}`` stands for the field's valid value.
    inline: tuple[str, ...] | None = None
    #: Whether ``inline`` needs ``data`` to be a ``str``.
    str_only: bool = False
    #: Whether it reads only ``raw0`` and passes whenever that is not blank.
    raw_only: bool = False


def _optional(validator: v.Optional) -> _Model | None:
    """Optional: stop, valid, when nothing (or, with strip_whitespace, only whitespace) was sent."""
    # Optional keeps only a lambda; probe it rather than guess which one it is.
    probe = validator.string_check(" a ")
    if probe not in ("a", " a "):
        return None
    strip = probe == "a"

    def check(raw0: str | None, data: t.Any) -> int:
        if raw0 is None or not (raw0.strip() if strip else raw0):
            return _STOP_OK
        return _PASS

    blank = "not raw0.strip()" if strip else "not raw0"
    return _Model(check, (f"if {blank}:", "    return {ok}"), raw_only=True)


def _input_required(raw0: str | None, data: t.Any) -> int:
    """InputRequired: ``raw_data[0]`` must be truthy (whitespace counts as input)."""
    return _PASS if raw0 else _STOP_ERR


def _data_required(raw0: str | None, data: t.Any) -> int:
    """DataRequired: the processed data must be truthy, and not only whitespace."""
    if data and (not isinstance(data, str) or data.strip()):
        return _PASS
    return _STOP_ERR


def _length(validator: v.Length) -> _Model | None:
    """Length: ``len(data)`` (0 for no data) within ``[min, max]``; ``-1`` is no bound."""
    low, high = validator.min, validator.max
    if type(low) is not int or type(high) is not int:
        return None

    def check(raw0: str | None, data: t.Any) -> int:
        if data is None:
            length = 0
        elif type(data) is str:
            length = len(data)
        else:
            return _UNSURE
        if length >= low and (high == -1 or length <= high):
            return _PASS
        return _ERROR

    if high == -1:
        test = f"len(data) < {low}"
    elif low <= 0:
        test = f"len(data) > {high}"
    else:
        test = f"not {low} <= len(data) <= {high}"
    return _Model(check, (f"if {test}:", "    error = True"), str_only=True)


def _number_range(validator: v.NumberRange, kind: str) -> _Model | None:
    """NumberRange: data not None, not NaN, and within the inclusive bounds."""
    low, high = validator.min, validator.max
    for bound in (low, high):
        # Callable (dynamic) bounds, or bounds of another type, are not modelled.
        if bound is not None and type(bound) not in _NUMBER_TYPES:
            return None

    def check(raw0: str | None, data: t.Any) -> int:
        if data is None:
            return _ERROR
        if type(data) not in _NUMBER_TYPES:
            return _UNSURE
        try:
            nan = math.isnan(data)
        except (ValueError, OverflowError):  # sNaN, or an int beyond float: WTForms raises
            return _UNSURE
        if not nan and (low is None or data >= low) and (high is None or data <= high):
            return _PASS
        return _ERROR

    finite = all(b is None or (type(b) in (int, float) and math.isfinite(b)) for b in (low, high))
    if kind not in ("int", "float") or not finite:  # repr(inf) is no Python literal
        return _Model(check)
    # Inline, the common case only: an int or float within what a float holds exactly and within
    # the bounds passes; anything else (None, NaN, infinities, huge ints) asks check().
    bounds = [f"{low!r} <= data" if low is not None else "", f"data <= {high!r}" if high is not None else ""]
    within = " and ".join(["-_EXACT_INT < data < _EXACT_INT", *(b for b in bounds if b)])
    inline = (
        f"if data is None or not ({within}):",
        "    outcome = {check}(raw0, data)",
        "    if outcome == _ERROR:",
        "        error = True",
        "    elif outcome != _PASS:",
        "        return _FAIL",
    )
    return _Model(check, inline)


def _uuid(raw0: str | None, data: t.Any) -> int:
    """UUID: data is a UUID, or a string ``uuid.UUID()`` accepts."""
    if isinstance(data, uuid.UUID):
        return _PASS
    if not isinstance(data, str):
        return _ERROR
    return _ERROR if _uuid_int(data) is None else _PASS


# In the generated text step of a UUID field: _uuid_int with its common case inlined, keeping
# the integer so that the conversion does not parse again.
_UUID_INLINE = (
    'digits = data.replace("-", "")',
    "if len(digits) == 32:",
    "    try:",
    "        uuid_int = int(digits, 16)",
    "    except ValueError:",
    "        uuid_int = _uuid_int(data)",
    "else:",
    "    uuid_int = _uuid_int(data)",
    "if uuid_int is None:",
    "    error = True",
)


def _any_of(validator: v.AnyOf | v.NoneOf) -> _Model | None:
    """AnyOf and NoneOf: whether data is (not) ``in`` the values."""
    values = validator.values
    if not isinstance(values, list | tuple | set | frozenset):
        return None  # a generator would be consumed; a string would test substrings
    wanted = type(validator) is v.AnyOf

    def check(raw0: str | None, data: t.Any) -> int:
        try:
            found = data in values
        except Exception:  # unhashable or incomparable: let WTForms decide
            return _UNSURE
        return _PASS if found is wanted else _ERROR

    return _Model(check)


def _regexp(validator: v.Regexp) -> _Model | None:
    """Regexp: ``matcher(regex, data or "")`` must match."""
    regex, matcher = validator.regex, validator.matcher
    if not isinstance(regex, re.Pattern) or not isinstance(regex.pattern, str):
        return None
    if not any(matcher is known for known in _MATCHERS):
        return None

    def check(raw0: str | None, data: t.Any) -> int:
        if data is not None and type(data) is not str:
            return _UNSURE
        return _PASS if matcher(regex, data or "") else _ERROR

    return _Model(check)


def _plain_text(raw0: str | None, data: t.Any) -> int:
    """forms.PlainText: no control character but tab and newlines, no lone surrogate."""
    if type(data) is str and BAD_TEXT.search(data) is not None:
        return _ERROR
    return _PASS


def _model(validator: t.Any, kind: str) -> _Model | None:
    """Return the model of ``validator`` on a field of ``kind``, or ``None`` if there is none."""
    # Exact classes only: a subclass may override __call__.
    cls = type(validator)
    if cls is PlainText:
        inline = ("if not data.isprintable() and _BAD_TEXT.search(data) is not None:", "    error = True")
        return _Model(_plain_text, inline, str_only=True)
    if cls is v.Optional:
        return _optional(validator)
    if cls is v.InputRequired:
        return _Model(_input_required, ("if not raw0:", "    return _FAIL"), raw_only=True)
    if cls is v.DataRequired:
        test = "not (data and (not isinstance(data, str) or data.strip()))"
        return _Model(_data_required, (f"if {test}:", "    return _FAIL"))
    if cls is v.Length and kind in _STR_KINDS:  # len() of a number or a date raises
        return _length(validator)
    if cls is v.NumberRange and kind in _NUMBER_KINDS:  # comparing a string raises
        return _number_range(validator, kind)
    if cls is v.UUID:
        return _Model(_uuid, _UUID_INLINE if kind == "uuid" else None, str_only=True)
    if cls is v.AnyOf or cls is v.NoneOf:
        return _any_of(validator)
    if cls is v.Regexp and kind in _STR_KINDS:
        return _regexp(validator)
    return None


def _run(checks: t.Iterable[_Check], raw0: str | None, data: t.Any, error: bool) -> bool:
    """Whether the chain leaves the field without errors; ``False`` also when unsure."""
    for check in checks:
        outcome = check(raw0, data)
        if outcome == _ERROR:
            error = True  # not final: a later Optional may still clear it
        elif outcome == _STOP_OK:
            return True
        elif outcome != _PASS:
            return False
    return not error


# --- processing: what the field class's process_formdata makes of a submitted text -------------


def _strptime(text: str, formats: t.Sequence[str]) -> datetime.datetime | None:
    """DateTimeField: the first of ``formats`` that ``strptime`` accepts, else ``None``."""
    for fmt in formats:
        try:
            return datetime.datetime.strptime(text, fmt)
        except (ValueError, TypeError):
            continue
    return None


_date_fromisoformat = datetime.date.fromisoformat
_datetime_fromisoformat = datetime.datetime.fromisoformat


def _date_process(formats: list[str]) -> _Process:
    """DateField: ``strptime(text, format).date()`` for the first format that fits."""
    fast = formats == _DATE_FORMATS

    def process(text: str) -> t.Any:
        if fast and len(text) == 10 and text[4] == "-" and text[7] == "-":
            # Of the texts shaped YYYY-MM-DD, fromisoformat takes ASCII digits that make a date,
            # as strptime's %Y-%m-%d does; what it refuses, strptime decides below.
            try:
                return _date_fromisoformat(text)
            except ValueError:
                pass
        parsed = _strptime(text, formats)
        return _PERR if parsed is None else parsed.date()

    return process


def _datetime_process(formats: list[str]) -> _Process:
    """DateTimeLocalField without ``tz``: ``strptime`` with its four default formats."""
    fast = formats == _DATETIME_FORMATS

    def process(text: str) -> t.Any:
        if (
            fast
            and (len(text) == 16 or (len(text) == 19 and text[16] == ":"))
            and text[4] == "-"
            and text[7] == "-"
            and (text[10] == " " or text[10] == "T")
            and text[13] == ":"
            and text[11:13] != "24"  # some Python versions take 24:00 as the next midnight
        ):
            # Shaped as one of the four formats: fromisoformat takes ASCII digits that make a
            # naive datetime, as strptime does; what it refuses, strptime decides below.
            try:
                return _datetime_fromisoformat(text)
            except ValueError:
                pass
        parsed = _strptime(text, formats)
        return _PERR if parsed is None else parsed

    return process


def _processed_default(kind: str, default: t.Any) -> t.Any:
    """The data ``process_data(default)`` leaves, or ``_FAIL`` for a default not modelled."""
    if default is None:
        return None
    ok = {
        "str": type(default) is str,
        "int": type(default) is int,
        "float": type(default) in (int, float),
        "decimal": type(default) in (int, decimal.Decimal),
        "date": type(default) is datetime.date,
        "datetime": type(default) is datetime.datetime,
        "uuid": type(default) is str or type(default) is uuid.UUID,
        "choice": type(default) is str,
        "bool": True,  # BooleanField's process_formdata([]) sets False whatever the default
    }[kind]
    return default if ok else _FAIL


def _converter(info: FieldInfo) -> t.Callable[[t.Any], t.Any]:
    """Command._values_from: the command's value for a field's validated data."""
    if info.kind == "choice":
        choices = info.choices
        return lambda data: choices.get(data) if data not in (None, "") else None
    if info.kind == "uuid":
        # uuid.UUID() of anything but a valid string raises in the real path.
        return lambda data: (_parse_uuid(data) if type(data) is str else _FAIL) if data else None
    if info.kind == "str" and info.optional:
        return lambda data: None if data == "" else data
    return lambda data: data


# --- one field ---------------------------------------------------------------------------------


class _Field:
    """One compiled field: its models, and its outcome where nothing was sent."""

    def __init__(
        self,
        info: FieldInfo,
        models: tuple[_Model, ...],
        process: _Process | None,
        false_values: t.Container[t.Any],
        choice_texts: frozenset[str] | None,
        form_default: t.Any,
        template: wtforms.Field,
    ) -> None:
        self.info = info
        #: A bound field of the real form, cloned to word the errors of an invalid value.
        self.template = template
        #: The generated text step (``text_i``): the field's value, or ``_FAIL``.
        self.text: t.Callable[[str, str], t.Any] = _no_text
        #: Whether a JSON number still has checks to pass (else it is the value as it is).
        self.number_checked = True
        self.models = models
        self.checks = tuple(model.check for model in models)
        self.process = process
        self.false_values = false_values
        self.choice_texts = choice_texts
        self.form_default = form_default
        self.convert = _converter(info)
        # Where nothing was sent the outcome does not depend on the input: work it out once,
        # unless the default is a factory (WTForms calls it on every build).
        self.static = not callable(form_default)
        self.absent_form: t.Any = _FAIL
        self.absent_json: t.Any = _FAIL
        if self.static:
            self.absent_form = self._absent(form_default, json=False)
            self.absent_json = self._absent(form_default, json=True)

    def _absent(self, form_default: t.Any, *, json: bool) -> t.Any:
        """The value where the input does not carry the field: raw_data is [], data the default."""
        info = self.info
        data = False if info.kind == "bool" else _processed_default(info.kind, form_default)
        if data is _FAIL:
            return _FAIL
        error = self.choice_texts is not None and data not in self.choice_texts  # pre_validate
        if not _run(self.checks, None, data, error):
            return _FAIL
        if json:
            # Command._values_from: JSON that does not carry a field gets its declared default.
            if info.required:
                return _FAIL
            return info.default if self.static else info.default_value()
        return self.convert(data)

    def _called_default(self) -> t.Any:
        """Field.process: call the form's default, as WTForms does on every build."""
        try:
            return self.form_default()
        except TypeError:  # WTForms would then take the callable itself for the data
            return _FAIL

    def missing_form(self) -> t.Any:
        """The value for a form post without the field (its default is a factory)."""
        default = self._called_default()
        return _FAIL if default is _FAIL else self._absent(default, json=False)

    def missing_json(self) -> t.Any:
        """The value for JSON without the field (its default is a factory)."""
        default = self._called_default()
        return _FAIL if default is _FAIL else self._absent(default, json=True)


def _no_text(raw0: str, submitted: str) -> t.Any:
    """The text step before the plan is generated."""
    return _FAIL


def _compile_field(info: FieldInfo, unbound: t.Any, meta: DefaultMeta) -> _Field | None:
    """Compile one derived field, or return ``None`` if anything about it is not modelled."""
    kind = info.kind
    if getattr(unbound, "field_class", None) is not _FIELD_CLASSES.get(kind):
        return None  # a custom form_field, or a field class not modelled
    kwargs = dict(unbound.kwargs)
    choice_texts = None
    if kind == "choice":
        choice_texts = _choice_texts(kwargs.pop("choices", None))
        if choice_texts is None:
            return None
    if unbound.args or not _KNOWN_KWARGS.issuperset(kwargs):
        return None
    models = []
    # Field.__init__ keeps the class's own validators when given none.
    for validator in kwargs.get("validators") or unbound.field_class.validators:
        model = _model(validator, kind)
        if model is None:
            return None
        models.append(model)
    process: _Process | None = None
    false_values: t.Container[t.Any] = ()
    # Binding (which does not process) reads the settings a field takes from its class.
    bound = unbound.bind(form=None, name=info.name, _meta=meta)
    if kind != "choice":
        if bound.filters or getattr(bound, "use_locale", False):
            return None
        if kind == "bool":
            false_values = bound.false_values
        elif kind == "date":
            process = _date_process(list(bound.strptime_format))
        elif kind == "datetime":
            if bound.tz is not None:
                return None
            process = _datetime_process(list(bound.strptime_format))
    form_default = kwargs.get("default")
    if callable(form_default) and kind == "int":
        # IntegerField.process_data(default()) may fail on every build, even with input.
        return None
    if not callable(form_default) and _processed_default(kind, form_default) is _FAIL:
        return None
    return _Field(info, tuple(models), process, false_values, choice_texts, form_default, bound)


def _choice_texts(choices: t.Any) -> frozenset[str] | None:
    """The texts SelectField's pre_validate accepts (``str`` of each value), or ``None``."""
    if not isinstance(choices, list | tuple):
        return None  # a callable, or a dict of groups: not modelled
    texts = set()
    for choice in choices:
        if isinstance(choice, tuple) and len(choice) in (2, 3):
            texts.add(str(choice[0]))
        elif isinstance(choice, SelectChoice):
            texts.add(str(choice.value))
        else:
            return None
    return frozenset(texts)


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
    "date": ("data = process_{i}(submitted)", "if data is _PERR:", "    data = None", "    error = True"),
    "datetime": (
        "data = process_{i}(submitted)",
        "if data is _PERR:",
        "    data = None",
        "    error = True",
    ),
}

# The generated form of _converter, where data is the submitted string (str kinds).
_CONVERT_SOURCE = {
    "choice": "(choices_{i}.get(data) if data else None)",
    "uuid": "((_parse_uuid(data) if uuid_int is None else uuid_from_int(uuid_int)) if data else None)",
}


def _chain_source(field: _Field, i: int, ok: str, *, str_data: bool, blank: bool) -> list[str]:
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
                "if outcome == _ERROR:",
                "    error = True",
                "elif outcome == _STOP_OK:",
                f"    return {ok}",
                "elif outcome != _PASS:",
                "    return _FAIL",
            ]
    return lines


def _function_source(head: str, body: list[str], ok: str) -> list[str]:
    """A generated function: ``body``, then the value unless an error was recorded."""
    if any(line.strip() == "error = True" for line in body):
        body = ["error = False", *body, "if error:", "    return _FAIL"]
    return [head, *(f"    {line}" for line in [*body, f"return {ok}"])]


def _field_source(field: _Field, i: int) -> list[str]:
    """``text_i(raw0, submitted)``, and for numbers ``number_i(data)``: value or ``_FAIL``."""
    kind = field.info.kind
    str_data = kind in _STR_KINDS
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
    else:
        body += [line.replace("{i}", str(i)) for line in _PROCESS_SOURCE[kind]]
    if field.choice_texts is not None:
        body += [f"if data not in choice_texts_{i}:", "    error = True"]  # SelectField.pre_validate
    body += _chain_source(field, i, ok, str_data=str_data, blank=True)
    lines = _function_source(f"def text_{i}(raw0, submitted):", body, ok)
    if kind in ("int", "float"):
        # A JSON number already parsed; the text normalise_json would make of it is not blank.
        chain = _chain_source(field, i, ok, str_data=False, blank=False)
        field.number_checked = bool(chain)
        body = ['raw0 = "0"', *chain]
        lines += _function_source(f"def number_{i}(data):", body, ok)
    return lines


def _json_source(field: _Field, i: int) -> list[str]:
    """The JSON branch of ``plan`` for field ``i``: ``value`` from ``data``, or return None."""
    kind = field.info.kind
    lines = [f"value = data.get({field.info.name!r})", "if type(value) is str:"]
    # forms._json_text passes strings through, except to a bool field (a type error).
    lines.append("    value = _FAIL" if kind == "bool" else f"    value = text_{i}(value, value)")
    # Without checks, number_i(x) is x: no call.
    number = f"number_{i}(value)" if field.number_checked else "value"
    if kind == "int":
        lines += [
            "elif type(value) is int and -_EXACT_INT < value < _EXACT_INT:",
            f"    value = {number}",
        ]
    elif kind == "float":
        lines += [
            "elif type(value) is float:",
            f"    value = {number}",  # float(repr(x)) is x, and nan stays nan
            "elif type(value) is int and -_EXACT_INT < value < _EXACT_INT:",
            f"    value = number_{i}(float(value))",
        ]
    elif kind == "bool":
        # What the text step makes of "y" and "false" does not depend on the input: worked out once.
        lines += ["elif type(value) is bool:", f"    value = json_true_{i} if value else json_false_{i}"]
    lines += ["elif value is None:"]
    lines.append(f"    value = absent_json_{i}" if field.static else f"    value = missing_json_{i}()")
    lines += ["else:", f"    value = other_json_{i}(value)"]
    return [*lines, "if value is _FAIL:", "    return None", f"values[{field.info.name!r}] = value"]


def _form_source(field: _Field, i: int) -> list[str]:
    """The form-post branch of ``plan`` for field ``i``: ``value`` from ``data``, or return None."""
    # DateTimeField parses " ".join(raw_data); the others read raw_data[0] only.
    single = " and len(raw) == 1" if field.info.kind in ("date", "datetime") else ""
    lines = [
        f"raw = getlist({field.info.name!r})",
        "if not raw:",
        f"    value = absent_form_{i}" if field.static else f"    value = missing_form_{i}()",
        f"elif type(raw[0]) is str{single}:",
        f"    value = text_{i}(raw[0], raw[0])",
        "else:",
        f"    value = other_form_{i}(raw)",
    ]
    return [*lines, "if value is _FAIL:", "    return None", f"values[{field.info.name!r}] = value"]


_PLAN_SOURCE = """\
def plan(data):
    values = {{}}
    if type(data) is dict:
{json}
        ident = data.get("id")
        if ident is None:
            values["id"] = None
            return values
        if type(ident) is not str:
            return None
    elif isinstance(data, MultiDict):
        getlist = data.getlist
{form}
        raw = getlist("id")
        if not raw:
            values["id"] = None
            return values
        ident = raw[0]
        if type(ident) is not str:
            return None
    else:
        return None
    ident = _ident(ident)
    if ident is _FAIL:
        return None
    values["id"] = ident
    return values
"""


def _other_json(info: FieldInfo, text: t.Callable[[str, str], t.Any]) -> t.Callable[[t.Any], t.Any]:
    """The JSON step for the rarer value types: forms._json_text, then the text step."""

    def other_json(value: t.Any) -> t.Any:
        try:
            submitted = _json_text(info, value)
        except ValueError:  # str() of an int too long to print: the real path raises it
            return _FAIL
        if submitted is None or type(submitted) is not str:
            return _FAIL  # a JSON type error: "Not a valid value."
        return text(submitted, submitted)

    return other_json


def _other_form(text: t.Callable[[str, str], t.Any], joins: bool) -> t.Callable[[list[t.Any]], t.Any]:
    """The form step for several values of a date field, or a value that is not a string."""

    def other_form(raw: list[t.Any]) -> t.Any:
        if not joins or not all(type(item) is str for item in raw):
            return _FAIL
        return text(raw[0], " ".join(raw))

    return other_form


def _generate(fields: list[_Field], owner: str) -> t.Callable[[t.Any], dict[str, t.Any] | None]:
    """Generate, compile and return the ``plan`` function over compiled ``fields``."""
    namespace: dict[str, t.Any] = {
        "__name__": __name__,
        # Builtins as globals: one dict lookup instead of two.
        "type": type,
        "isinstance": isinstance,
        "len": len,
        "int": int,
        "float": float,
        "_FAIL": _FAIL,
        "_PERR": _PERR,
        "_PASS": _PASS,
        "_ERROR": _ERROR,
        "_STOP_OK": _STOP_OK,
        "_EXACT_INT": _EXACT_INT,
        "MultiDict": MultiDict,
        "Decimal": decimal.Decimal,
        "InvalidOperation": decimal.InvalidOperation,
        "_ident": _ident,
        "_uuid_int": _uuid_int,
        "uuid_from_int": uuid_from_int,
        "_parse_uuid": _parse_uuid,
        "_BAD_TEXT": BAD_TEXT,
    }
    source: list[str] = []
    json: list[str] = []
    form: list[str] = []
    for i, field in enumerate(fields):
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
        )
    )
    _exec("\n".join(source), f"<fast path of {owner}>", namespace)
    for i, field in enumerate(fields):
        text = namespace[f"text_{i}"]
        namespace[f"other_json_{i}"] = _other_json(field.info, text)
        namespace[f"other_form_{i}"] = _other_form(text, field.info.kind in ("date", "datetime"))
        field.text = text
        namespace[f"json_true_{i}"] = text("y", "y")
        namespace[f"json_false_{i}"] = text("false", "false")
    return t.cast("t.Callable[[t.Any], dict[str, t.Any] | None]", namespace["plan"])


# --- errors: what the real form says of an invalid input, without building it -----------------

#: The ``Meta`` settings a command may declare and the plan still models: they change only the
#: language of the messages, which come from WTForms' own fields (cloned, see _Errors).
_META_OPTIONS = frozenset({"locales", "cache_translations"})


class _Values:
    """The form data of one field: what ``Field.process`` asks of a ``MultiDict``."""

    __slots__ = ("values",)

    def __init__(self, values: list[t.Any]) -> None:
        self.values = values

    def __contains__(self, name: object) -> bool:
        return bool(self.values)

    def getlist(self, name: str) -> list[t.Any]:
        return list(self.values)


def field_errors(field: wtforms.Field, formdata: t.Any, form: t.Any) -> list[str]:
    """Process and validate ``field`` as ``Form`` does; return its errors, one type error alone.

    A value that does not parse (``"abc"`` for a number) gets its type error only: the checks
    after it (``NumberRange``...) would only say again that there is no number. ``Optional``,
    ``InputRequired`` and ``DataRequired``, which clear earlier errors, keep their word.
    """
    field.process(formdata)
    field.post_process(formdata)
    field.validate(form)
    errors = field.errors
    process_errors = list(field.process_errors)
    if process_errors and errors[: len(process_errors)] == process_errors:
        field.errors = errors = process_errors
    return list(errors)


class _Errors:
    """``plan.errors(data)``: each field's errors, WTForms' own, without building the form.

    A field the plan proves valid costs its generated text step; any other field is a clone of a
    bound field of the real form (its class, validators, messages and translations), processed
    and validated as ``Form.validate`` would: fields of a derived form are independent, since the
    plan exists only for forms without inline ``validate_<name>`` methods or custom validators.
    """

    def __init__(self, fields: list[_Field], ident: wtforms.Field, meta: DefaultMeta) -> None:
        self.fields = fields
        self.ident = ident
        self.meta = meta

    def _clone(self, template: wtforms.Field, translations: t.Any) -> t.Any:
        field = _new(type(template))
        field.__dict__.update(template.__dict__)
        if translations is not None:
            field._translations = translations
        return field

    def __call__(self, data: t.Mapping[str, t.Any]) -> dict[str, list[str]] | None:
        json = type(data) is dict
        if not json and not isinstance(data, MultiDict):
            return None
        errors: dict[str, list[str]] = {}
        translations = self.meta.get_translations(None)
        getlist = None if json else t.cast("MultiDict[str, t.Any]", data).getlist
        # The form's order: the hidden id first, then the fields as declared.
        if json:
            ident = data.get("id")
            if ident is None:
                pass
            elif type(ident) is not str:
                errors["id"] = [NOT_A_VALID_VALUE]
            elif _ident(ident) is _FAIL:
                messages = field_errors(self._clone(self.ident, translations), _Values([ident]), None)
                if messages:
                    errors["id"] = messages
        else:
            assert getlist is not None
            raw = getlist("id")
            if raw and (type(raw[0]) is not str or _ident(raw[0]) is _FAIL):
                messages = field_errors(self._clone(self.ident, translations), data, None)
                if messages:
                    errors["id"] = messages
        for field in self.fields:
            info = field.info
            name = info.name
            if json:
                value = data.get(name)
                if value is None:
                    outcome = field.absent_json if field.static else field.missing_json()
                    formdata: t.Any = _Values([])
                else:
                    try:
                        text = _json_text(info, value)
                    except ValueError:  # str() of an int too long to print
                        return None
                    if text is None:
                        errors[name] = [NOT_A_VALID_VALUE]
                        continue
                    outcome = field.text(text, text)
                    formdata = _Values([text])
            else:
                assert getlist is not None
                raw = getlist(name)
                formdata = data
                if not raw:
                    outcome = field.absent_form if field.static else field.missing_form()
                elif type(raw[0]) is str and (len(raw) == 1 or info.kind not in ("date", "datetime")):
                    outcome = field.text(raw[0], raw[0])
                else:
                    outcome = _FAIL
            if outcome is not _FAIL:
                continue
            try:
                messages = field_errors(self._clone(field.template, translations), formdata, None)
            except Exception:  # what the real form would raise too: let it
                return None
            if messages:
                errors[name] = messages
        return errors or None


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
    return bool(validators[0].string_check(" a ") == "a")  # strip_whitespace, as _ident assumes


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


def _maker(command: type, names: list[str]) -> t.Callable[[dict[str, t.Any]], t.Any] | None:
    """``make(values)``: a new ``command`` with each slot in ``names`` set from ``values``.

    What the dataclass ``__init__`` does for a class that ``_constructs_directly``, without its
    argument parsing: a slot descriptor's ``__set__`` is the cheapest way to set a frozen field.
    """
    namespace: dict[str, t.Any] = {"_new": _new, "command": command}
    lines = ["def make(values):", "    instance = _new(command)"]
    for i, name in enumerate(names):
        slot = next((k.__dict__[name] for k in command.__mro__ if name in k.__dict__), None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        namespace[f"set_{i}"] = slot.__set__
        lines.append(f"    set_{i}(instance, values[{name!r}])")
    lines.append("    return instance")
    _exec("\n".join(lines), f"<make of {command.__qualname__}>", namespace)
    return t.cast("t.Callable[[dict[str, t.Any]], t.Any]", namespace["make"])


def _exec(source: str, filename: str, namespace: dict[str, t.Any]) -> None:
    """Compile and run generated ``source``, registered in ``linecache`` so tracebacks show it."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)


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
        field = _compile_field(info, unbound[info.name], meta)
        if field is None:
            return None
        compiled.append(field)
    plan = _generate(compiled, form_class.__qualname__)
    ident = unbound["id"].bind(form=None, name="id", _meta=meta)
    setattr(plan, "errors", _Errors(compiled, ident, meta))  # noqa: B010
    # A function attribute keeps the plan a plain function: a __call__ would cost a call more.
    setattr(plan, "trusted", frozenset(info.name for info in fields if info.trusted))  # noqa: B010
    direct = _constructs_directly(command)
    setattr(plan, "direct", direct)  # noqa: B010
    make = None
    if direct and command is not None:
        make = _maker(command, ["id", "issued_at", *(info.name for info in fields)])
    setattr(plan, "make", make)  # noqa: B010
    return t.cast(Plan, plan)
