"""Command fields: :func:`field`, the annotation → WTForms field mapping, and JSON normalisation.

A command's form is derived from its annotations. JSON input is normalised into what a browser
would post, so that WTForms validates JSON and form posts alike and every message is its own.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import re
import types
import typing as t
import uuid

import wtforms
from werkzeug.datastructures import MultiDict
from wtforms import validators as v

from . import _codec

#: The field error for a JSON value of the wrong shape (WTForms has no message for it).
NOT_A_VALID_VALUE = "Not a valid value."

_META_KEY = "flask_commands"

#: What a ``str`` field refuses: the control characters but tab, line feed and carriage return
#: (PostgreSQL text cannot hold NUL; the others are never typed), and lone surrogates (not
#: Unicode: no database or encoder takes them). One pattern for every database.
BAD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: ``BAD_TEXT`` for JSON Schema (ECMA-262), which cannot name lone surrogates.
TEXT_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"


class PlainText:
    """WTForms validator of a ``str`` field: no control characters but tab and newlines, no lone surrogates.

    Every derived ``str`` field has it, so text is the same on every database.
    """

    field_flags: t.ClassVar[dict[str, t.Any]] = {}

    def __call__(self, form: t.Any, field: t.Any) -> None:
        data = field.data
        if type(data) is str and (found := BAD_TEXT.search(data)) is not None:
            raise v.ValidationError(text_error(found.group()))


def text_error(char: str) -> str:
    """The field error for a ``str`` value holding ``char``, one of ``BAD_TEXT``."""
    code = f"U+{ord(char):04X}"
    if "\ud800" <= char <= "\udfff":
        return f"The text holds a lone surrogate ({code}), which is not Unicode; send valid UTF-8."
    return f"The text holds the control character {code}; remove it (only tab and newlines are allowed)."


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldOptions:
    validators: tuple[t.Any, ...]
    label: str | None
    description: str
    trusted: bool
    form_field: wtforms.Field | None
    render_kw: dict[str, t.Any] | None
    json_schema: dict[str, t.Any] | None = None
    from_json: t.Callable[[t.Any], list[str] | None] | None = None


def field(
    default: t.Any = dataclasses.MISSING,
    *,
    default_factory: t.Callable[[], t.Any] | t.Any = dataclasses.MISSING,
    validators: t.Sequence[t.Any] = (),
    label: str | None = None,
    description: str = "",
    trusted: bool = False,
    form_field: wtforms.Field | None = None,
    render_kw: dict[str, t.Any] | None = None,
    json_schema: dict[str, t.Any] | None = None,
    from_json: t.Callable[[t.Any], list[str] | None] | None = None,
) -> t.Any:
    """Declare a command field with its validators, label and options.

    :param default: the value when the input does not carry the field (making it optional).
    :param default_factory: a callable returning the default, for mutable defaults.
    :param validators: WTForms validators, run on form and JSON input alike.
    :param label: the form label; by default the field name, capitalised.
    :param description: the form field's description (help text).
    :param trusted: set only by the server through ``build(..., **trusted)``; never from input and
        never on the form.
    :param form_field: an unbound WTForms field (``StringField(...)``) that replaces the derived one.
    :param render_kw: extra HTML attributes for the derived field's widget.
    :param json_schema: the JSON Schema of a ``form_field``'s JSON value (else ``{}``: any).
    :param from_json: for a ``form_field``: turns its JSON value into the texts a browser would
        post (a list, several for a multi-valued field), or ``None`` for a value of the wrong
        JSON type. By default a string, number or boolean is one text and an array of them one
        text each.
    """
    options = _FieldOptions(
        validators=tuple(validators),
        label=label,
        description=description,
        trusted=trusted,
        form_field=form_field,
        render_kw=render_kw,
        json_schema=json_schema,
        from_json=from_json,
    )
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={_META_KEY: options},
    )


def _options(f: dataclasses.Field[t.Any]) -> _FieldOptions:
    options = f.metadata.get(_META_KEY)
    if options is None:
        return _FieldOptions((), None, "", False, None, None)
    return t.cast(_FieldOptions, options)


Kind = t.Literal["str", "int", "float", "decimal", "bool", "date", "datetime", "uuid", "choice", "custom"]


@dataclasses.dataclass(frozen=True, slots=True)
class FieldInfo:
    """One declared field of a command, read-only, as :func:`.command.command_fields` gives it."""

    name: str
    annotation: t.Any
    kind: Kind
    optional: bool  # typed ``X | None``
    required: bool  # no default and not ``X | None``: an implied InputRequired
    trusted: bool
    default: t.Any  # a value, a zero-argument callable (default_factory), or dataclasses.MISSING
    has_factory: bool
    choices: t.Mapping[str, t.Any]  # submitted text → Python value, for enums and Literals (read-only)
    options: _FieldOptions

    @property
    def form_field(self) -> wtforms.Field | None:
        """The unbound WTForms field given with ``field(form_field=...)``, or ``None`` (derived)."""
        return self.options.form_field

    def default_value(self) -> t.Any:
        """Return the default, calling the factory if there is one."""
        return self.default() if self.has_factory else self.default


_SIMPLE_KINDS: dict[t.Any, Kind] = {
    str: "str",
    int: "int",
    float: "float",
    decimal.Decimal: "decimal",
    bool: "bool",
    datetime.date: "date",
    datetime.datetime: "datetime",
    uuid.UUID: "uuid",
}


def _unwrap_optional(annotation: t.Any) -> tuple[t.Any, bool]:
    origin = t.get_origin(annotation)
    if origin is t.Union or origin is types.UnionType:
        args = [a for a in t.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(t.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def inspect_field(owner: str, f: dataclasses.Field[t.Any], annotation: t.Any) -> FieldInfo:
    """Describe dataclass field ``f`` of command ``owner``; ``TypeError`` for an unsupported type."""
    options = _options(f)
    inner, optional = _unwrap_optional(annotation)
    choices: dict[str, t.Any] = {}
    kind: Kind
    if options.form_field is not None:
        kind = "custom"
    elif isinstance(inner, type) and issubclass(inner, enum.Enum):
        kind = "choice"
        choices = {str(member.value): member for member in inner}
    elif t.get_origin(inner) is t.Literal:
        kind = "choice"
        choices = {str(value): value for value in t.get_args(inner)}
    elif inner in _SIMPLE_KINDS:
        kind = _SIMPLE_KINDS[inner]
    else:
        raise TypeError(
            f"{owner}.{f.name} is annotated {annotation!r}, which has no form field; use str, int,"
            " float, Decimal, bool, date, datetime, UUID, an Enum or a Literal (optionally"
            " '| None'), or pass field(form_field=...)."
        )
    has_factory = f.default_factory is not dataclasses.MISSING
    default = f.default_factory if has_factory else f.default
    if default is dataclasses.MISSING and (optional or kind == "bool"):
        default = None if optional else False
    return FieldInfo(
        name=f.name,
        annotation=annotation,
        kind=kind,
        optional=optional,
        required=default is dataclasses.MISSING,
        trusted=options.trusted,
        default=default,
        has_factory=has_factory,
        choices=types.MappingProxyType(choices),
        options=options,
    )


_REQUIRED = (v.InputRequired, v.DataRequired)


def _unbound_field(info: FieldInfo) -> t.Any:
    """Return the unbound WTForms field for ``info``."""
    options = info.options
    if options.form_field is not None:
        return options.form_field
    validators: list[t.Any] = []
    if info.optional:
        validators.append(v.Optional())
    elif info.required and not any(isinstance(x, _REQUIRED) for x in options.validators):
        validators.append(v.InputRequired())
    if info.kind == "uuid":
        validators.append(v.UUID())
    validators.extend(options.validators)
    if info.kind == "str":
        validators.append(PlainText())
    kwargs: dict[str, t.Any] = {
        "label": options.label,
        "validators": validators,
        "description": options.description,
        "render_kw": options.render_kw,
    }
    if info.default is not dataclasses.MISSING:
        kwargs["default"] = _form_default(info)
    if info.kind == "choice":
        choices = [_select_choice(text, _choice_label(value)) for text, value in info.choices.items()]
        if info.optional:
            choices.insert(0, _select_choice("", ""))
        kwargs["choices"] = choices
    return FIELD_CLASSES[info.kind](**kwargs)


def _form_default(info: FieldInfo) -> t.Any:
    default = info.default
    if info.kind == "choice":
        if info.has_factory:
            return lambda: _choice_text(default())
        return _choice_text(default)
    return default


def _select_choice(value: str, label: str) -> t.Any:
    # WTForms 3.3 deprecates (value, label) tuples (a DeprecationWarning on every form) in favour
    # of SelectChoice, which WTForms 3.2 does not have.
    select_choice = getattr(wtforms, "SelectChoice", None)
    return (value, label) if select_choice is None else select_choice(value, label)


def _choice_text(value: t.Any) -> str | None:
    if value is None:
        return None
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def _choice_label(value: t.Any) -> str:
    if isinstance(value, enum.Enum):
        return value.name.replace("_", " ").capitalize()
    return str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldKind:
    """What the package knows of one kind of field; the form, the JSON Schema and the fast path read it."""

    #: The derived WTForms field class (``None`` for a custom ``form_field``).
    field_class: type[wtforms.Field] | None
    #: The field's JSON Schema, before validators add to it.
    schema: dict[str, t.Any]
    #: Whether the field's data is the submitted text itself (``Length``, ``Regexp`` apply).
    text_data: bool = False
    #: Whether the field's data is a number (``NumberRange`` applies).
    number: bool = False


#: The table of field kinds: one row per ``Kind``.
KINDS: dict[str, FieldKind] = {
    "str": FieldKind(wtforms.StringField, {"type": "string"}, text_data=True),
    "int": FieldKind(wtforms.IntegerField, {"type": "integer"}, number=True),
    "float": FieldKind(wtforms.FloatField, {"type": "number"}, number=True),
    "decimal": FieldKind(
        wtforms.DecimalField, {"type": ["number", "string"], "format": "decimal"}, number=True
    ),
    "bool": FieldKind(wtforms.BooleanField, {"type": "boolean"}),
    "date": FieldKind(wtforms.DateField, {"type": "string", "format": "date"}),
    # Not "date-time" (RFC 3339 requires an offset): a datetime field takes the local date and time
    # an HTML datetime-local input sends.
    "datetime": FieldKind(
        wtforms.DateTimeLocalField,
        {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?$"},
    ),
    "uuid": FieldKind(wtforms.StringField, {"type": "string", "format": "uuid"}, text_data=True),
    "choice": FieldKind(wtforms.SelectField, {}, text_data=True),
    "custom": FieldKind(None, {}),
}

#: The derived field class of each kind (from ``KINDS``).
FIELD_CLASSES: dict[str, type[wtforms.Field]] = {
    kind: row.field_class for kind, row in KINDS.items() if row.field_class is not None
}


def make_form_class(name: str, fields: t.Sequence[FieldInfo], meta: type | None = None) -> type[wtforms.Form]:
    """Build the ``wtforms.Form`` subclass for a command: its untrusted fields and a hidden ``id``.

    :param meta: the command's ``Meta`` class (``locales``...), given to the form as its ``Meta``.
    """
    attrs: dict[str, t.Any] = {
        "id": wtforms.HiddenField(validators=[v.Optional(), v.UUID()]),
    }
    if meta is not None:
        attrs["Meta"] = meta
    for info in fields:
        if not info.trusted:
            attrs[info.name] = _unbound_field(info)
    return type(f"{name}Form", (wtforms.Form,), attrs)


def normalise_json(
    data: t.Mapping[str, t.Any], fields: t.Sequence[FieldInfo]
) -> tuple[MultiDict[str, str], dict[str, list[str]]]:
    """Turn decoded JSON into the form data a browser would send.

    Returns the form data and the field errors for values of the wrong JSON type. A missing key
    or ``null`` is left out (not sent); trusted fields and unknown keys are dropped.
    """
    formdata: MultiDict[str, str] = MultiDict()
    type_errors: dict[str, list[str]] = {}
    for info in fields:
        if info.trusted:
            continue
        value = data.get(info.name)
        if value is None:
            continue
        texts = json_texts(info, value)
        if texts is None:
            type_errors[info.name] = [NOT_A_VALID_VALUE]
        else:
            for text in texts:
                formdata.add(info.name, text)
    ident = data.get("id")
    if ident is not None:
        if isinstance(ident, str):
            formdata.add("id", ident)
        else:
            type_errors["id"] = [NOT_A_VALID_VALUE]
    return formdata, type_errors


def json_texts(info: FieldInfo, value: t.Any) -> list[str] | None:
    """The texts a browser would post for JSON ``value`` (not ``None``); ``None`` for a wrong type."""
    if info.kind != "custom":
        text = json_text(info, value)
        return None if text is None else [text]
    if info.options.from_json is not None:
        return info.options.from_json(value)
    if isinstance(value, list):  # a multi-valued field: one text per item
        texts = [json_text(info, item) for item in value]
        return None if None in texts else t.cast("list[str]", texts)
    text = json_text(info, value)
    return None if text is None else [text]


def json_text(info: FieldInfo, value: t.Any) -> str | None:
    """Return what a browser would send for JSON ``value``, or ``None`` for a wrong JSON type."""
    if isinstance(value, bool):
        if info.kind == "bool":
            return "y" if value else "false"
        if info.kind == "custom":
            return "y" if value else ""
        if info.kind == "choice" and value in info.choices.values():
            return str(value)
        return None
    if info.kind == "bool":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        if info.kind in ("date", "datetime", "uuid"):
            return None
        try:
            return str(value)
        except ValueError:  # an int of more than sys.get_int_max_str_digits() digits
            return None
    return None


def json_schema(title: str, fields: t.Sequence[FieldInfo]) -> dict[str, t.Any]:
    """Return the JSON Schema (2020-12) of a command's JSON input (trusted fields left out)."""
    properties: dict[str, t.Any] = {
        "id": {"type": "string", "format": "uuid", "description": "Idempotency key; new when absent."}
    }
    required: list[str] = []
    for info in fields:
        if info.trusted:
            continue
        schema = dict(KINDS[info.kind].schema)
        if info.kind == "custom" and info.options.json_schema is not None:
            schema = dict(info.options.json_schema)
        if info.kind == "choice":
            schema["enum"] = [
                value.value if isinstance(value, enum.Enum) else value for value in info.choices.values()
            ]
        if info.kind == "str":
            schema["pattern"] = TEXT_PATTERN
        if info.kind == "str" and (
            info.required or any(isinstance(x, _REQUIRED) for x in info.options.validators)
        ):
            # InputRequired and DataRequired refuse "" (DataRequired also whitespace).
            schema["minLength"] = 1
        for validator in info.options.validators:
            if isinstance(validator, v.Length):
                if validator.min >= 0:
                    schema["minLength"] = max(validator.min, schema.get("minLength", 0))
                if validator.max >= 0:
                    schema["maxLength"] = validator.max
            elif isinstance(validator, v.NumberRange):
                if validator.min is not None:
                    schema["minimum"] = validator.min
                if validator.max is not None:
                    schema["maximum"] = validator.max
            elif isinstance(validator, v.Regexp):
                if "pattern" in schema:  # one keyword each: the text rule and the validator's
                    schema.setdefault("allOf", []).append({"pattern": validator.regex.pattern})
                else:
                    schema["pattern"] = validator.regex.pattern
            elif isinstance(validator, v.AnyOf):
                schema["enum"] = list(validator.values)
        if info.options.label:
            schema["title"] = info.options.label
        if info.options.description:
            schema["description"] = info.options.description
        if info.optional:
            schema = {"anyOf": [schema, {"type": "null"}]}
        elif info.default is not dataclasses.MISSING and not info.has_factory:
            schema["default"] = _codec.to_jsonable(info.default)
        if info.required:
            required.append(info.name)
        properties[info.name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": required,
    }
