"""Tests for flask_commands.forms: field(), the annotation → WTForms mapping, JSON normalisation."""

from __future__ import annotations

import datetime
import decimal
import enum
import re
import typing as t
import uuid

import pytest
import wtforms
from werkzeug.datastructures import MultiDict
from wtforms import validators as v

from flask_commands import Command
from flask_commands import CommandInvalid
from flask_commands import field
from flask_commands.forms import PlainText


class Color(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


class Everything(Command):
    text: str
    count: int
    ratio: float
    price: decimal.Decimal
    done: bool
    day: datetime.date
    at: datetime.datetime
    color: Color
    size: t.Literal["s", "m", "l"]
    ref: uuid.UUID
    note: str | None
    amount: int | None
    tint: Color | None
    owner_id: int = field(trusted=True)


class Note(Command):
    title: str = field(validators=[v.Length(max=200)])
    body: str = ""
    count: int = 0
    ratio: float = 1.0
    price: decimal.Decimal = decimal.Decimal("0")
    done: bool = False
    notify: bool = True
    day: datetime.date | None = None
    at: datetime.datetime | None = None
    ref: uuid.UUID | None = None
    subtitle: str | None = None


class Custom(Command):
    text: str = field(form_field=wtforms.TextAreaField("Text", validators=[v.InputRequired()]))
    flag: bool = field(default=False, form_field=wtforms.BooleanField())


NOT_A_VALID_VALUE = "Not a valid value."
REQUIRED = "This field is required."


@pytest.fixture
def form() -> wtforms.Form:
    return Everything.Form()


def choices(select: wtforms.SelectField) -> list[tuple[str, str]]:
    """Return a select's (value, label) pairs, whether WTForms holds them as tuples or SelectChoice."""
    return [tuple(choice)[:2] for choice in select.choices]


def _everything_post() -> list[tuple[str, str]]:
    return [
        ("text", "t"),
        ("count", "1"),
        ("ratio", "1"),
        ("price", "1"),
        ("day", "2024-01-01"),
        ("at", "2024-01-01T00:00"),
        ("color", "dark-blue"),
        ("size", "m"),
        ("ref", str(uuid.UUID(int=1))),
    ]


def invalid(command: type[Command], data: t.Mapping[str, t.Any], **trusted: t.Any) -> dict[str, list[str]]:
    """Return the errors of building ``command`` from ``data``; fail the test if it built."""
    with pytest.raises(CommandInvalid) as exc_info:
        command.build(data, **trusted)
    return exc_info.value.errors


# The form class.


def test_form_is_wtforms_form() -> None:
    assert issubclass(Everything.Form, wtforms.Form)


def test_form_qualname() -> None:
    assert Everything.Form.__qualname__ == "Everything.Form"
    assert Everything.Form.__module__ == Everything.__module__


def test_form_field_order(form: wtforms.Form) -> None:
    assert [f.name for f in form] == [
        "id",
        "text",
        "count",
        "ratio",
        "price",
        "done",
        "day",
        "at",
        "color",
        "size",
        "ref",
        "note",
        "amount",
        "tint",
    ]


def test_form_hidden_id(form: wtforms.Form) -> None:
    assert type(form.id) is wtforms.HiddenField
    assert [type(x) for x in form.id.validators] == [v.Optional, v.UUID]


def test_form_trusted_field_absent(form: wtforms.Form) -> None:
    assert "owner_id" not in form
    assert not hasattr(form, "owner_id")


# Annotation → WTForms field, one test per type.


def test_form_str_string_field(form: wtforms.Form) -> None:
    assert type(form.text) is wtforms.StringField


def test_form_int_integer_field(form: wtforms.Form) -> None:
    assert type(form.count) is wtforms.IntegerField


def test_form_float_float_field(form: wtforms.Form) -> None:
    assert type(form.ratio) is wtforms.FloatField


def test_form_decimal_decimal_field(form: wtforms.Form) -> None:
    assert type(form.price) is wtforms.DecimalField


def test_form_bool_boolean_field(form: wtforms.Form) -> None:
    assert type(form.done) is wtforms.BooleanField


def test_form_date_date_field(form: wtforms.Form) -> None:
    assert type(form.day) is wtforms.DateField


def test_form_datetime_datetime_local_field(form: wtforms.Form) -> None:
    assert type(form.at) is wtforms.DateTimeLocalField


def test_form_enum_select_field(form: wtforms.Form) -> None:
    assert type(form.color) is wtforms.SelectField
    assert choices(form.color) == [("red", "Red"), ("dark-blue", "Dark blue")]


def test_form_literal_select_field(form: wtforms.Form) -> None:
    assert type(form.size) is wtforms.SelectField
    assert choices(form.size) == [("s", "s"), ("m", "m"), ("l", "l")]


def test_form_uuid_string_field_with_uuid_validator(form: wtforms.Form) -> None:
    assert type(form.ref) is wtforms.StringField
    assert [type(x) for x in form.ref.validators] == [v.InputRequired, v.UUID]


def test_form_optional_str_optional_validator(form: wtforms.Form) -> None:
    assert type(form.note) is wtforms.StringField
    assert [type(x) for x in form.note.validators] == [v.Optional, PlainText]
    assert not form.note.flags.required


def test_form_optional_int_optional_validator(form: wtforms.Form) -> None:
    assert type(form.amount) is wtforms.IntegerField
    assert [type(x) for x in form.amount.validators] == [v.Optional]


def test_form_optional_enum_blank_choice(form: wtforms.Form) -> None:
    assert type(form.tint) is wtforms.SelectField
    assert choices(form.tint) == [("", ""), ("red", "Red"), ("dark-blue", "Dark blue")]


def test_form_required_implied_input_required(form: wtforms.Form) -> None:
    assert [type(x) for x in form.text.validators] == [v.InputRequired, PlainText]
    assert form.text.flags.required


def test_form_default_not_required() -> None:
    form = Note.Form()
    assert [type(x) for x in form.body.validators] == [PlainText]
    assert not form.body.flags.required


def test_form_explicit_required_validator_not_doubled() -> None:
    required = v.DataRequired()

    class Titled(Command):
        title: str = field(validators=[required])

    assert Titled.Form().title.validators[:-1] == [required]


def test_form_validators_after_implied_ones() -> None:
    length = v.Length(max=5)

    class Coded(Command):
        code: uuid.UUID = field(validators=[length])

    validators = Coded.Form().code.validators
    assert [type(x) for x in validators] == [v.InputRequired, v.UUID, v.Length]
    assert validators[2] is length


# field() options.


def test_field_label() -> None:
    class Labelled(Command):
        title: str = field(label="Title of the todo")

    assert Labelled.Form().title.label.text == "Title of the todo"


def test_field_label_default() -> None:
    class Unlabelled(Command):
        due_date: datetime.date

    assert Unlabelled.Form().due_date.label.text == "Due Date"


def test_field_description() -> None:
    class Described(Command):
        title: str = field(description="What needs doing.")

    assert Described.Form().title.description == "What needs doing."


def test_field_render_kw() -> None:
    class Rendered(Command):
        title: str = field(render_kw={"placeholder": "Milk"})

    assert 'placeholder="Milk"' in Rendered.Form().title()


def test_field_default_on_form() -> None:
    form = Note.Form()
    assert form.count.data == 0
    assert form.notify.data is True


def test_field_default_factory_on_form() -> None:
    class Factory(Command):
        tag: str = field(default_factory=lambda: "inbox")

    assert Factory.Form().tag.data == "inbox"
    assert Factory.build({}).tag == "inbox"


def test_field_form_field_override() -> None:
    form = Custom.Form()
    assert type(form.text) is wtforms.TextAreaField
    assert form.text.label.text == "Text"


def test_field_form_field_override_builds() -> None:
    cmd = Custom.build({"text": "line one\nline two", "flag": True})
    assert (cmd.text, cmd.flag) == ("line one\nline two", True)


def test_field_form_field_override_validates() -> None:
    assert invalid(Custom, {}) == {"text": [REQUIRED]}


def test_field_trusted_never_from_form_post() -> None:
    cmd = Everything.build(MultiDict([*_everything_post(), ("owner_id", "9")]), owner_id=1)
    assert cmd.owner_id == 1


# JSON normalisation: what a browser would send, or a field error.


def test_json_null_required_is_missing() -> None:
    assert invalid(Note, {"title": None}) == {"title": [REQUIRED]}


def test_json_null_optional_takes_default() -> None:
    assert Note.build({"title": "x", "count": None, "notify": None}).count == 0


def test_json_true_for_str() -> None:
    assert invalid(Note, {"title": True}) == {"title": [NOT_A_VALID_VALUE]}


def test_json_false_for_str() -> None:
    assert invalid(Note, {"title": False}) == {"title": [NOT_A_VALID_VALUE]}


def test_json_object_for_str() -> None:
    assert invalid(Note, {"title": {"text": "x"}}) == {"title": [NOT_A_VALID_VALUE]}


def test_json_list_for_str() -> None:
    assert invalid(Note, {"title": ["x"]}) == {"title": [NOT_A_VALID_VALUE]}


def test_json_empty_list_for_str() -> None:
    assert invalid(Note, {"title": []}) == {"title": [NOT_A_VALID_VALUE]}


def test_json_integer_for_str() -> None:
    assert Note.build({"title": 12}).title == "12"


def test_json_float_for_str() -> None:
    assert Note.build({"title": 1.5}).title == "1.5"


def test_json_string_for_int() -> None:
    assert Note.build({"title": "x", "count": "12"}).count == 12


def test_json_text_for_int() -> None:
    assert invalid(Note, {"title": "x", "count": "twelve"}) == {"count": ["Not a valid integer value."]}


def test_json_float_for_int() -> None:
    assert invalid(Note, {"title": "x", "count": 1.5}) == {"count": ["Not a valid integer value."]}


def test_json_true_for_int() -> None:
    assert invalid(Note, {"title": "x", "count": True}) == {"count": [NOT_A_VALID_VALUE]}


def test_json_false_for_int() -> None:
    assert invalid(Note, {"title": "x", "count": False}) == {"count": [NOT_A_VALID_VALUE]}


def test_json_list_for_int() -> None:
    assert invalid(Note, {"title": "x", "count": [1]}) == {"count": [NOT_A_VALID_VALUE]}


def test_json_object_for_int() -> None:
    assert invalid(Note, {"title": "x", "count": {"n": 1}}) == {"count": [NOT_A_VALID_VALUE]}


def test_json_string_for_float() -> None:
    assert Note.build({"title": "x", "ratio": "2.5"}).ratio == 2.5


def test_json_integer_for_float() -> None:
    cmd = Note.build({"title": "x", "ratio": 2})
    assert cmd.ratio == 2.0
    assert type(cmd.ratio) is float


def test_json_text_for_float() -> None:
    assert invalid(Note, {"title": "x", "ratio": "lots"}) == {"ratio": ["Not a valid float value."]}


def test_json_string_for_decimal() -> None:
    assert Note.build({"title": "x", "price": "10.05"}).price == decimal.Decimal("10.05")


def test_json_number_for_decimal() -> None:
    assert Note.build({"title": "x", "price": 10.05}).price == decimal.Decimal("10.05")


def test_json_text_for_decimal() -> None:
    assert invalid(Note, {"title": "x", "price": "cheap"}) == {"price": ["Not a valid decimal value."]}


def test_json_true_for_bool() -> None:
    assert Note.build({"title": "x", "done": True}).done is True


def test_json_false_for_bool() -> None:
    assert Note.build({"title": "x", "notify": False}).notify is False


def test_json_number_for_bool() -> None:
    assert invalid(Note, {"title": "x", "done": 1}) == {"done": [NOT_A_VALID_VALUE]}


def test_json_list_for_bool() -> None:
    assert invalid(Note, {"title": "x", "done": [True]}) == {"done": [NOT_A_VALID_VALUE]}


def test_json_string_for_date() -> None:
    assert Note.build({"title": "x", "day": "2024-02-29"}).day == datetime.date(2024, 2, 29)


def test_json_bad_date() -> None:
    assert invalid(Note, {"title": "x", "day": "2023-02-29"}) == {"day": ["Not a valid date value."]}


def test_json_number_for_date() -> None:
    assert invalid(Note, {"title": "x", "day": 20240229}) == {"day": [NOT_A_VALID_VALUE]}


def test_json_string_for_datetime() -> None:
    cmd = Note.build({"title": "x", "at": "2024-02-29T13:45"})
    assert cmd.at == datetime.datetime(2024, 2, 29, 13, 45)


def test_json_bad_datetime() -> None:
    assert invalid(Note, {"title": "x", "at": "tomorrow"}) == {"at": ["Not a valid datetime value."]}


def test_json_number_for_datetime() -> None:
    assert invalid(Note, {"title": "x", "at": 1709214300}) == {"at": [NOT_A_VALID_VALUE]}


def test_json_string_for_uuid() -> None:
    ref = uuid.uuid4()
    assert Note.build({"title": "x", "ref": str(ref)}).ref == ref


def test_json_bad_uuid() -> None:
    assert invalid(Note, {"title": "x", "ref": "not-a-uuid"}) == {"ref": ["Invalid UUID."]}


def test_json_number_for_uuid() -> None:
    assert invalid(Note, {"title": "x", "ref": 12}) == {"ref": [NOT_A_VALID_VALUE]}


def test_json_unknown_keys_ignored() -> None:
    cmd = Note.build({"title": "x", "colour": "red", "": 1, "nested": {"a": [1, 2]}})
    assert cmd.title == "x"


def test_json_empty_string_required() -> None:
    assert invalid(Note, {"title": ""}) == {"title": [REQUIRED]}


def test_json_empty_string_with_default_kept() -> None:
    assert Note.build({"title": "x", "body": ""}).body == ""


def test_json_empty_string_optional_str_is_none() -> None:
    assert Note.build({"title": "x", "subtitle": ""}).subtitle is None


def test_json_empty_string_optional_date_is_none() -> None:
    assert Note.build({"title": "x", "day": ""}).day is None


def test_json_empty_string_optional_uuid_is_none() -> None:
    assert Note.build({"title": "x", "ref": ""}).ref is None


@pytest.mark.parametrize(
    "text",
    [
        "🥛 milk 👩‍👩‍👧",
        "חלב ומים",
        "e\u0301 n\u0303 a\u030a",
        "\u202eRTL override\u202c",
        "tab\tand\r\nnewlines",
    ],
    ids=["emoji", "rtl", "combining", "bidi-control", "tab-newlines"],
)
def test_json_unicode_kept_exactly(text: str) -> None:
    assert Note.build({"title": text, "body": text}).body == text


class _SlowNote(Note, fast_path=False):
    """Note, always built through the real form."""


_NUL = "The text holds the control character U+0000; remove it (only tab and newlines are allowed)."
_SURROGATE = "The text holds a lone surrogate (U+D800), which is not Unicode; send valid UTF-8."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nul\x00byte", _NUL),
        ("\x1b[31m", _NUL.replace("U+0000", "U+001B")),
        ("del\x7f", _NUL.replace("U+0000", "U+007F")),
        ("c1\x85", _NUL.replace("U+0000", "U+0085")),
        ("half \ud800", _SURROGATE),
    ],
    ids=["nul", "escape", "del", "c1", "lone-surrogate"],
)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "form"])
def test_str_refuses_control_characters_and_surrogates(
    text: str, message: str, fast: bool
) -> None:
    command = Note if fast else _SlowNote
    assert invalid(command, {"title": "x", "body": text}) == {"body": [message]}
    assert invalid(command, MultiDict({"title": "x", "body": text})) == {"body": [message]}


def test_str_text_rule_in_json_schema() -> None:
    pattern = Note.json_schema()["properties"]["body"]["pattern"]
    assert re.search(pattern, "tab\tand\r\nnewlines")
    assert not re.search(pattern, "nul\x00byte")


def test_json_megabyte_string_over_length_max() -> None:
    errors = invalid(Note, {"title": "x" * 1_000_000})
    assert errors == {"title": ["Field cannot be longer than 200 characters."]}


def test_json_megabyte_string_without_length() -> None:
    body = "é" * 1_000_000
    assert Note.build({"title": "x", "body": body}).body == body


# Form posts (MultiDict).


def test_form_post_builds() -> None:
    cmd = Note.build(MultiDict([("title", "Milk"), ("count", "3"), ("done", "y")]))
    assert (cmd.title, cmd.count, cmd.done) == ("Milk", 3, True)


def test_form_post_checkbox_absent_is_false() -> None:
    assert Note.build(MultiDict([("title", "Milk")])).notify is False


def test_form_post_repeated_key_takes_first() -> None:
    assert Note.build(MultiDict([("title", "first"), ("title", "second")])).title == "first"


def test_form_post_empty_optional_is_none() -> None:
    assert Note.build(MultiDict([("title", "x"), ("subtitle", ""), ("day", "")])).subtitle is None


def test_form_post_missing_required() -> None:
    assert invalid(Note, MultiDict([("body", "x")])) == {"title": [REQUIRED]}


def test_form_post_enum_choice() -> None:
    cmd = Everything.build(MultiDict(_everything_post()), owner_id=1)
    assert (cmd.color, cmd.size, cmd.tint, cmd.done) == (Color.DARK_BLUE, "m", None, False)
