"""A model of WTForms' rules for the fields :mod:`flask_commands.forms` derives.

Each validator and field class the fast path takes is modelled here after its WTForms source
(named in each docstring): what it does to a field's data, with the calls WTForms makes
(``int(text)``, ``float(text)``, ``Decimal(text)``, ``strptime``), so that the values are the
same by construction. :func:`compile_field` turns one derived field into a :class:`CompiledField`,
or ``None`` where anything about it is not modelled.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
import re
import typing as t
import uuid

import wtforms
from wtforms import validators as v
from wtforms.fields.choices import SelectChoice
from wtforms.meta import DefaultMeta

from ..forms import BAD_TEXT
from ..forms import KINDS
from ..forms import FieldInfo
from ..forms import PlainText
from ..forms import json_texts


class _Sentinel:
    """A marker value, named for its repr in generated code and tracebacks."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: "Not proved": the real form must decide (the input may be invalid, or only unusual).
FAIL: t.Final = _Sentinel("FAIL")
#: A processing error (``process_formdata`` raised ValueError): the field's data is ``None``.
PERR: t.Final = _Sentinel("PERR")

# What one validator does to a field, as WTForms' Field._run_validation_chain sees it.
PASS = 0
ERROR = 1  # a ValidationError: an error, and the chain goes on
STOP_OK = 2  # Optional's StopValidation: every error so far cleared, the field is valid
STOP_ERR = 3  # InputRequired's or DataRequired's StopValidation with its message
UNSURE = 4  # not modelled for this value (WTForms might even raise): fall back

#: ``check(raw0, data)``: ``raw0`` is ``raw_data[0]`` (``None`` when nothing was sent).
_Check = t.Callable[[str | None, t.Any], int]
_Process = t.Callable[[str], t.Any]

_DATE_FORMATS = ["%Y-%m-%d"]
_DATETIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"]

# JSON ints within this bound are int(str(n)) and float(n) == float(str(n)); beyond it str(n)
# may even raise (sys.get_int_max_str_digits), so those take the general route.
EXACT_INT = 2**53

# The constructor arguments forms._unbound_field passes; any other one changes behaviour.
_KNOWN_KWARGS = frozenset({"label", "validators", "description", "render_kw", "default"})
# Kinds whose data is the submitted string itself.
STR_KINDS = frozenset(kind for kind, row in KINDS.items() if row.text_data)
_NUMBER_KINDS = frozenset(kind for kind, row in KINDS.items() if row.number)
_NUMBER_TYPES = (int, float, decimal.Decimal)
_MATCHERS = (re.match, re.search, re.fullmatch)


# --- UUIDs -------------------------------------------------------------------------------------

new_object = object.__new__
# uuid.UUID's two slots, set through their descriptors: cheaper than object.__setattr__ by name.
SET_UUID_INT: t.Final = uuid.UUID.__dict__["int"].__set__
SET_UUID_SAFE: t.Final = uuid.UUID.__dict__["is_safe"].__set__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown  # an enum attribute lookup costs as much as a call


def uuid_int_or_none(text: str) -> int | None:
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
    value = new_object(uuid.UUID)
    SET_UUID_INT(value, number)
    SET_UUID_SAFE(value, _SAFE_UNKNOWN)
    return value


def parse_uuid(text: str) -> t.Any:
    """``uuid.UUID(text)``, or ``FAIL`` where it raises."""
    number = uuid_int_or_none(text)
    return FAIL if number is None else uuid_from_int(number)


def parse_ident(text: str) -> t.Any:
    """The command id for a submitted ``id`` text: a UUID, ``None`` (new id), or ``FAIL``."""
    if not text.strip():
        # Optional stops the chain: the real path takes "" as no id (and fails on whitespace).
        return None if text == "" else FAIL
    return parse_uuid(text)  # the UUID validator passes exactly when this does


# --- validators --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A validator's model: as a function, and as generated source where it is short."""

    check: _Check
    #: Source lines doing what ``check`` does, reading ``raw0``, ``data`` and ``error``, or
    #: ``None`` to call ``check``. ``{ok}`` stands for the field's valid value.
    inline: tuple[str, ...] | None = None
    #: Whether ``inline`` needs ``data`` to be a ``str``.
    str_only: bool = False
    #: Whether it reads only ``raw0`` and passes whenever that is not blank.
    raw_only: bool = False


def _optional(validator: v.Optional) -> Model | None:
    """Optional: stop, valid, when nothing (or, with strip_whitespace, only whitespace) was sent."""
    # Optional keeps only a lambda; probe it rather than guess which one it is.
    probe = validator.string_check(" a ")
    if probe not in ("a", " a "):
        return None
    strip = probe == "a"

    def check(raw0: str | None, data: t.Any) -> int:
        if raw0 is None or not (raw0.strip() if strip else raw0):
            return STOP_OK
        return PASS

    blank = "not raw0.strip()" if strip else "not raw0"
    return Model(check, (f"if {blank}:", "    return {ok}"), raw_only=True)


def _input_required(raw0: str | None, data: t.Any) -> int:
    """InputRequired: ``raw_data[0]`` must be truthy (whitespace counts as input)."""
    return PASS if raw0 else STOP_ERR


def _data_required(raw0: str | None, data: t.Any) -> int:
    """DataRequired: the processed data must be truthy, and not only whitespace."""
    if data and (not isinstance(data, str) or data.strip()):
        return PASS
    return STOP_ERR


def _length(validator: v.Length) -> Model | None:
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
            return UNSURE
        if length >= low and (high == -1 or length <= high):
            return PASS
        return ERROR

    if high == -1:
        test = f"len(data) < {low}"
    elif low <= 0:
        test = f"len(data) > {high}"
    else:
        test = f"not {low} <= len(data) <= {high}"
    return Model(check, (f"if {test}:", "    error = True"), str_only=True)


def _number_range(validator: v.NumberRange, kind: str) -> Model | None:
    """NumberRange: data not None, not NaN, and within the inclusive bounds."""
    low, high = validator.min, validator.max
    for bound in (low, high):
        # Callable (dynamic) bounds, or bounds of another type, are not modelled.
        if bound is not None and type(bound) not in _NUMBER_TYPES:
            return None

    def check(raw0: str | None, data: t.Any) -> int:
        if data is None:
            return ERROR
        if type(data) not in _NUMBER_TYPES:
            return UNSURE
        try:
            nan = math.isnan(data)
        except (ValueError, OverflowError):  # sNaN, or an int beyond float: WTForms raises
            return UNSURE
        if not nan and (low is None or data >= low) and (high is None or data <= high):
            return PASS
        return ERROR

    finite = all(b is None or (type(b) in (int, float) and math.isfinite(b)) for b in (low, high))
    if kind not in ("int", "float") or not finite:  # repr(inf) is no Python literal
        return Model(check)
    # Inline, the common case only: an int or float within what a float holds exactly and within
    # the bounds passes; anything else (None, NaN, infinities, huge ints) asks check().
    bounds = [f"{low!r} <= data" if low is not None else "", f"data <= {high!r}" if high is not None else ""]
    within = " and ".join(["-EXACT_INT < data < EXACT_INT", *(b for b in bounds if b)])
    inline = (
        f"if data is None or not ({within}):",
        "    outcome = {check}(raw0, data)",
        "    if outcome == ERROR:",
        "        error = True",
        "    elif outcome != PASS:",
        "        return FAIL",
    )
    return Model(check, inline)


def _uuid(raw0: str | None, data: t.Any) -> int:
    """UUID: data is a UUID, or a string ``uuid.UUID()`` accepts."""
    if isinstance(data, uuid.UUID):
        return PASS
    if not isinstance(data, str):
        return ERROR
    return ERROR if uuid_int_or_none(data) is None else PASS


# In the generated text step of a UUID field: uuid_int_or_none with its common case inlined, keeping
# the integer so that the conversion does not parse again.
_UUID_INLINE = (
    'digits = data.replace("-", "")',
    "if len(digits) == 32:",
    "    try:",
    "        uuid_int = int(digits, 16)",
    "    except ValueError:",
    "        uuid_int = uuid_int_or_none(data)",
    "else:",
    "    uuid_int = uuid_int_or_none(data)",
    "if uuid_int is None:",
    "    error = True",
)


def _any_of(validator: v.AnyOf | v.NoneOf) -> Model | None:
    """AnyOf and NoneOf: whether data is (not) ``in`` the values."""
    values = validator.values
    if not isinstance(values, list | tuple | set | frozenset):
        return None  # a generator would be consumed; a string would test substrings
    wanted = type(validator) is v.AnyOf

    def check(raw0: str | None, data: t.Any) -> int:
        try:
            found = data in values
        except Exception:  # unhashable or incomparable: let WTForms decide
            return UNSURE
        return PASS if found is wanted else ERROR

    return Model(check)


def _regexp(validator: v.Regexp) -> Model | None:
    """Regexp: ``matcher(regex, data or "")`` must match."""
    regex, matcher = validator.regex, validator.matcher
    if not isinstance(regex, re.Pattern) or not isinstance(regex.pattern, str):
        return None
    if not any(matcher is known for known in _MATCHERS):
        return None

    def check(raw0: str | None, data: t.Any) -> int:
        if data is not None and type(data) is not str:
            return UNSURE
        return PASS if matcher(regex, data or "") else ERROR

    return Model(check)


def _plain_text(raw0: str | None, data: t.Any) -> int:
    """forms.PlainText: no control character but tab and newlines, no lone surrogate."""
    if type(data) is str and BAD_TEXT.search(data) is not None:
        return ERROR
    return PASS


def _model(validator: t.Any, kind: str) -> Model | None:
    """Return the model of ``validator`` on a field of ``kind``, or ``None`` if there is none."""
    # Exact classes only: a subclass may override __call__.
    cls = type(validator)
    if cls is PlainText:
        inline = ("if not data.isprintable() and _BAD_TEXT.search(data) is not None:", "    error = True")
        return Model(_plain_text, inline, str_only=True)
    if cls is v.Optional:
        return _optional(validator)
    if cls is v.InputRequired:
        return Model(_input_required, ("if not raw0:", "    return FAIL"), raw_only=True)
    if cls is v.DataRequired:
        test = "not (data and (not isinstance(data, str) or data.strip()))"
        return Model(_data_required, (f"if {test}:", "    return FAIL"))
    if cls is v.Length and kind in STR_KINDS:  # len() of a number or a date raises
        return _length(validator)
    if cls is v.NumberRange and kind in _NUMBER_KINDS:  # comparing a string raises
        return _number_range(validator, kind)
    if cls is v.UUID:
        return Model(_uuid, _UUID_INLINE if kind == "uuid" else None, str_only=True)
    if cls is v.AnyOf or cls is v.NoneOf:
        return _any_of(validator)
    if cls is v.Regexp and kind in STR_KINDS:
        return _regexp(validator)
    return None


def run_checks(checks: t.Iterable[_Check], raw0: str | None, data: t.Any, error: bool) -> bool:
    """Whether the chain leaves the field without errors; ``False`` also when unsure."""
    for check in checks:
        outcome = check(raw0, data)
        if outcome == ERROR:
            error = True  # not final: a later Optional may still clear it
        elif outcome == STOP_OK:
            return True
        elif outcome != PASS:
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
        return PERR if parsed is None else parsed.date()

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
        return PERR if parsed is None else parsed

    return process


def _processed_default(kind: str, default: t.Any) -> t.Any:
    """The data ``process_data(default)`` leaves, or ``FAIL`` for a default not modelled."""
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
    return default if ok else FAIL


def _converter(info: FieldInfo) -> t.Callable[[t.Any], t.Any]:
    """Command._values_from: the command's value for a field's validated data."""
    if info.kind == "choice":
        choices = info.choices
        return lambda data: choices.get(data) if data not in (None, "") else None
    if info.kind == "uuid":
        # uuid.UUID() of anything but a valid string raises in the real path.
        return lambda data: (parse_uuid(data) if type(data) is str else FAIL) if data else None
    if info.kind == "str" and info.optional:
        return lambda data: None if data == "" else data
    return lambda data: data


# --- one field ---------------------------------------------------------------------------------


class CompiledField:
    """One compiled field: its models, and its outcome where nothing was sent."""

    #: Whether the field is the application's own (``field(form_field=...)``): see CustomField.
    custom = False

    def __init__(
        self,
        info: FieldInfo,
        models: tuple[Model, ...],
        process: _Process | None,
        false_values: t.Container[t.Any],
        choice_texts: frozenset[str] | None,
        form_default: t.Any,
        template: wtforms.Field,
    ) -> None:
        self.info = info
        #: A bound field of the real form, cloned to word the errors of an invalid value.
        self.template = template
        #: The generated text step (``text_i``): the field's value, or ``FAIL``.
        self.text: t.Callable[[str, str], t.Any] = _no_text
        #: Whether a JSON number still has checks to pass (else it is the value as it is).
        self.number_checked = True
        #: Whether a date field parses the default "%Y-%m-%d" alone (see _date_process).
        self.iso_date = False
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
        self.absent_form: t.Any = FAIL
        self.absent_json: t.Any = FAIL
        if self.static:
            self.absent_form = self._absent(form_default, json=False)
            self.absent_json = self._absent(form_default, json=True)

    def _absent(self, form_default: t.Any, *, json: bool) -> t.Any:
        """The value where the input does not carry the field: raw_data is [], data the default."""
        info = self.info
        data = False if info.kind == "bool" else _processed_default(info.kind, form_default)
        if data is FAIL:
            return FAIL
        error = self.choice_texts is not None and data not in self.choice_texts  # pre_validate
        if not run_checks(self.checks, None, data, error):
            return FAIL
        if json:
            # Command._values_from: JSON that does not carry a field gets its declared default.
            if info.required:
                return FAIL
            return info.default if self.static else info.default_value()
        return self.convert(data)

    def _called_default(self) -> t.Any:
        """Field.process: call the form's default, as WTForms does on every build."""
        try:
            return self.form_default()
        except TypeError:  # WTForms would then take the callable itself for the data
            return FAIL

    def missing_form(self) -> t.Any:
        """The value for a form post without the field (its default is a factory)."""
        default = self._called_default()
        return FAIL if default is FAIL else self._absent(default, json=False)

    def missing_json(self) -> t.Any:
        """The value for JSON without the field (its default is a factory)."""
        default = self._called_default()
        return FAIL if default is FAIL else self._absent(default, json=True)


def _no_text(raw0: str, submitted: str) -> t.Any:
    """The text step before the plan is generated."""
    return FAIL


class Values:
    """The form data of one field: what ``Field.process`` asks of a ``MultiDict``."""

    __slots__ = ("values",)

    def __init__(self, values: list[t.Any]) -> None:
        self.values = values

    def __contains__(self, name: object) -> bool:
        return bool(self.values)

    def getlist(self, name: str) -> list[t.Any]:
        return list(self.values)


def clone(template: wtforms.Field, translations: t.Any = None) -> t.Any:
    """A fresh copy of bound field ``template``, as binding it again would make, at a tenth of the cost."""
    field = new_object(type(template))
    field.__dict__.update(template.__dict__)
    if translations is not None:
        field._translations = translations
    return field


class CustomField(CompiledField):
    """A ``field(form_field=...)``: processed and validated by a clone of the real bound field.

    The plan does not model an application's field class; it runs it, as ``Form.validate``
    would, on a copy of a bound field: the class's other fields keep the fast path.
    """

    custom = True

    def __init__(self, info: FieldInfo, template: wtforms.Field) -> None:
        super().__init__(info, (), None, (), None, None, template)
        self.static = False

    def _absent(self, form_default: t.Any, *, json: bool) -> t.Any:
        return FAIL  # not used: a custom field is never static

    def _run(self, formdata: t.Any) -> t.Any:
        """The field's data if WTForms would accept it, else ``FAIL``."""
        field = clone(self.template)
        try:
            field.process(formdata)
            field.post_process(formdata)
            if not field.validate(None):
                return FAIL
        except Exception:  # a validator reading the form (None here): the real form decides
            return FAIL
        return field.data

    def json_value(self, value: t.Any) -> t.Any:
        """The value for JSON ``value`` (not ``None``), or ``FAIL``."""
        try:
            texts = json_texts(self.info, value)
        except Exception:  # the application's from_json: the real path raises it
            return FAIL
        if texts is None:
            return FAIL
        data = self._run(Values(texts))
        if data is FAIL or texts or self.info.required:
            return data
        return self.info.default_value()  # nothing sent: Command._values_from takes the default

    def missing_json(self) -> t.Any:
        """The value for JSON without the field."""
        data = self._run(Values([]))
        if data is FAIL or self.info.required:
            return data
        return self.info.default_value()

    def form_value(self, data: t.Any) -> t.Any:
        """The value for a form post."""
        return self._run(data)


# Field classes whose bound instances hold subfields or entries: a shallow copy would share them.
_NESTED = (wtforms.FormField, wtforms.FieldList)


def compile_field(info: FieldInfo, unbound: t.Any, meta: DefaultMeta) -> CompiledField | None:
    """Compile one derived field, or return ``None`` if anything about it is not modelled."""
    kind = info.kind
    if kind == "custom":
        field_class = getattr(unbound, "field_class", None)
        if not isinstance(field_class, type) or issubclass(field_class, _NESTED):
            return None
        return CustomField(info, unbound.bind(form=None, name=info.name, _meta=meta))
    if getattr(unbound, "field_class", None) is not KINDS[kind].field_class:
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
    if not callable(form_default) and _processed_default(kind, form_default) is FAIL:
        return None
    compiled = CompiledField(info, tuple(models), process, false_values, choice_texts, form_default, bound)
    compiled.iso_date = kind == "date" and list(bound.strptime_format) == _DATE_FORMATS
    return compiled


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


