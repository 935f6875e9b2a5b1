"""Tests for flask_commands._fastpath: the compiled fast path of build() against the real form.

The differential tests build every input twice, with the fast path and with a twin of the class
declared ``fast_path=False`` (always the real form), and require the same command, the same
``CommandInvalid.errors``, or the same exception.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import typing as t
import uuid

import pytest
import wtforms
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.datastructures import MultiDict
from wtforms import validators as v

from flask_commands import Command
from flask_commands import CommandInvalid
from flask_commands import field
from flask_commands import signals
from flask_commands.views import _form_errors
from flask_commands.views import _plan_errors

# forms.py still passes SelectField choices as tuples, which WTForms 3.3 deprecates when a form
# is bound: only the real form warns (the fast path never binds one).


class Color(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Todo(Command):
    """Strings, integers, booleans and UUIDs: required, optional and defaulted."""

    title: str = field(validators=[v.InputRequired(), v.Length(max=20)])
    note: str | None = field(default=None, validators=[v.Length(min=2, max=10)])
    order: int | None = None
    count: int = field(default=1, validators=[v.NumberRange(min=0, max=100)])
    completed: bool = False
    owner: uuid.UUID
    ref: uuid.UUID | None = None


class Kinds(Command):
    """Floats, decimals, dates, datetimes, enums and Literals."""

    ratio: float | None = field(default=None, validators=[v.NumberRange(min=0.0, max=1.0)])
    weight: float = 1.5
    amount: decimal.Decimal = field(default=decimal.Decimal("0"), validators=[v.NumberRange(min=0)])
    due: datetime.date | None = None
    at: datetime.datetime | None = None
    color: Color
    priority: Priority = Priority.LOW
    size: t.Literal["s", "m", "l"] = "m"
    flag: bool | None = None
    notify: bool = True  # absent: True from JSON, False from a form post (an unticked box)
    start: datetime.date = datetime.date(2020, 1, 1)
    shade: Color | None = None


_UUID = "12345678-1234-5678-1234-567812345678"


class Chains(Command):
    """The other validators, unusual chains, factories and a trusted field."""

    name: str = field(validators=[v.DataRequired()])
    code: str = field(default="", validators=[v.Regexp(r"[a-c]*\Z")])
    pick: str = field(default="a", validators=[v.AnyOf(["a", "b"])])
    ban: str | None = field(default=None, validators=[v.NoneOf(["x", "y"])])
    raw: str | None = field(default=None, validators=[v.Optional(strip_whitespace=False), v.Length(max=3)])
    label: str = field(default="x", validators=[v.InputRequired()])
    late: str = field(default="", validators=[v.Length(min=2), v.Optional()])
    tag: str = field(default_factory=lambda: "t", validators=[v.Length(max=5)])
    tone: Color = field(default_factory=lambda: Color.RED)
    nid: uuid.UUID = field(default_factory=lambda: uuid.UUID(_UUID))  # not random: compared
    level: int = field(default=1, validators=[v.DataRequired(), v.NumberRange(max=9)])
    actor: int = field(trusted=True)


_STRINGS = [
    *("", " ", "  ", "\t", "\u3000", "\x1c", "\xa0", "\n", "é", "😀"),
    *("0", "1", "-1", "7", "100", "101", " 12 ", "+3", "1_000", "١٢", "0x1f", "1.5", "0.25", "1e3"),
    *("nan", "NaN", "inf", "-inf", "sNaN", "1.0", "-0", "1" * 30),
    *("y", "false", "False", "true", "on", "red", "dark-blue", "RED", "1", "2", "s", "m", "l"),
    *("a", "b", "c", "ab", "abc", "abcd", "x", "y", "xy", "d", "abc\n"),
    *("2020-01-01", "2020-1-1", "2020-02-29", "2021-02-29", "2020-02-30", "0000-01-01", "9999-12-31"),
    *("2020-01-01 10:00", "2020-01-01T10:00:59", "2020-01-01t10:00", "2020-01-01  10:00"),
    *("2020-01-01 24:00", "2020-01-01 23:59:60", "2020-01-01 10:60", "2020-01-01 10:00:00.5"),
    *("٢٠٢٠-01-01", "2020-01-01 10:00 ", " 2020-01-01"),
    *(_UUID, _UUID.upper(), "{" + _UUID + "}", "urn:uuid:" + _UUID, _UUID.replace("-", "")),
    *(" " + _UUID, _UUID + " ", "0x" + _UUID.replace("-", "")[2:], "1_" + _UUID.replace("-", "")[2:]),
    *(_UUID[:-1], _UUID + "0", "+" + _UUID.replace("-", "")[1:], _UUID.replace("-", "_")),
]
_texts = st.one_of(
    st.sampled_from(_STRINGS),
    st.text(max_size=8),
    st.text(alphabet="ab \t", min_size=18, max_size=23),  # around Length(max=20)
)
_json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=120),
    st.integers(),
    st.sampled_from([2**53, -(2**53), 2**53 - 1, 10**30, 10**5000]),  # 10**5000 has no str()
    st.floats(allow_nan=False),
    st.sampled_from([0.5, 1.0, 2.0, -0.0, 1e16, float("inf")]),
    _texts,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


# Valid inputs, so that the differential tests do not only compare errors.
_VALID_JSON: list[tuple[type[Command], dict[str, t.Any], dict[str, t.Any]]] = [
    (Todo, {"title": "Milk", "owner": _UUID}, {}),
    (Todo, {"title": "Milk", "owner": _UUID, "order": 3, "completed": True, "id": _UUID}, {}),
    (
        Todo,
        {"title": "Milk", "note": "", "order": None, "count": "7", "owner": _UUID.upper(), "ref": _UUID},
        {},
    ),
    (Todo, {"title": 12, "owner": "{" + _UUID + "}", "id": ""}, {}),
    (Kinds, {"color": "red"}, {}),
    (Kinds, {"color": "dark-blue", "ratio": 0.5, "weight": 2, "amount": "1.25", "due": "2020-02-29"}, {}),
    (Kinds, {"color": "red", "at": "2020-01-01T10:00", "priority": 2, "size": "l", "flag": False}, {}),
    (Kinds, {"color": "red", "ratio": 1, "amount": 3, "shade": "red", "at": "2020-01-01 10:00:59"}, {}),
    (Chains, {"name": "n", "label": "l"}, {"actor": 1}),
    (
        Chains,
        {
            "name": "n",
            "label": "l",
            "code": "abc",
            "pick": "b",
            "ban": "z",
            "raw": " ",
            "late": "",
            "level": 3,
        },
        {"actor": 1},
    ),
]
_VALID_FORMS: list[tuple[type[Command], MultiDict[str, str], dict[str, t.Any]]] = [
    (Todo, MultiDict({"title": "Milk", "owner": _UUID}), {}),
    (
        Todo,
        MultiDict(
            [("title", "Milk"), ("title", ""), ("owner", _UUID), ("order", ""), ("note", ""), ("id", "")]
        ),
        {},
    ),
    (Todo, MultiDict({"title": " ", "owner": _UUID, "order": " 12 ", "completed": "y", "count": "+3"}), {}),
    (Kinds, MultiDict({"color": "red", "ratio": "", "due": "", "at": "", "shade": "", "flag": "y"}), {}),
    (
        Kinds,
        MultiDict({"color": "red", "ratio": "1e-1", "weight": " 2 ", "amount": "0.10", "due": "2020-01-01"}),
        {},
    ),
    (
        Chains,
        MultiDict({"name": "n", "label": " ", "tone": "dark-blue", "nid": _UUID, "level": "9"}),
        {"actor": 1},
    ),
]


def _keys(cls: type[Command]) -> list[str]:
    """The names an input may carry: the fields, ``id``, and an unknown one."""
    return [info.name for info in cls._fields] + ["id", "issued_at", "unknown"]


def _json_inputs(cls: type[Command]) -> st.SearchStrategy[dict[str, t.Any]]:
    """Decoded JSON objects: valid ones with a few keys changed or dropped, and random ones."""
    keys = st.sampled_from(_keys(cls))
    valid = [data for owner, data, _ in _VALID_JSON if owner is cls]
    changed = st.builds(
        lambda base, changes, dropped: {k: v for k, v in {**base, **changes}.items() if k not in dropped},
        st.sampled_from(valid),
        st.dictionaries(keys, _json_values, max_size=2),
        st.sets(keys, max_size=1),
    )
    return st.one_of(changed, st.dictionaries(keys, _json_values, max_size=len(_keys(cls))))


def _form_inputs(cls: type[Command]) -> st.SearchStrategy[MultiDict[str, str]]:
    """Form posts (string values, keys possibly repeated): valid ones changed, and random ones."""
    pairs = st.lists(st.tuples(st.sampled_from(_keys(cls)), _texts), max_size=3)
    valid = [list(data.items(multi=True)) for owner, data, _ in _VALID_FORMS if owner is cls]
    changed = st.builds(
        # Values put first win (WTForms reads the first); values put last are ignored but dates.
        lambda base, first, last, dropped: [*first, *(p for p in base if p[0] != dropped), *last],
        st.sampled_from(valid),
        pairs,
        pairs,
        st.sampled_from(_keys(cls)),
    )
    return st.one_of(changed, st.lists(st.tuples(st.sampled_from(_keys(cls)), _texts), max_size=12)).map(
        MultiDict
    )


_twins: dict[type[Command], type[Command]] = {}


def slow(cls: type[Command]) -> type[Command]:
    """A twin of ``cls`` declared ``fast_path=False``: every build goes through the real form."""
    if cls not in _twins:
        namespace = {"__module__": cls.__module__, "__qualname__": f"{cls.__qualname__}.slow"}
        _twins[cls] = type(cls)(cls.__name__, (cls,), namespace, fast_path=False)
        assert _twins[cls]._plan is None
    return _twins[cls]


def _outcome(cls: type[Command], data: t.Any, **trusted: t.Any) -> tuple[t.Any, ...]:
    """What ``cls.build(data)`` did: the command's fields (typed), its errors, or the exception."""
    try:
        command = cls.build(data, **trusted)
    except CommandInvalid as e:
        return ("invalid", e.errors)
    except Exception as e:  # the real path's own failures must be reproduced, not hidden
        return ("raised", type(e), str(e))
    ident = data.get("id")
    # repr() tells 1 from 1.0 and True, and nan equals nan.
    values = [
        (info.name, type(getattr(command, info.name)), repr(getattr(command, info.name)))
        for info in cls._fields
    ]
    return ("ok", values, command.id if isinstance(ident, str) and ident.strip() else None)


def _assert_same(cls: type[Command], data: t.Any, **trusted: t.Any) -> None:
    """The fast path and the real form give the same outcome for ``data``."""
    assert cls._plan is not None
    assert _outcome(cls, data, **trusted) == _outcome(slow(cls), data, **trusted)


_differential = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_differential
@given(_json_inputs(Todo))
def test_todo_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_same(Todo, data)


@_differential
@given(_form_inputs(Todo))
def test_todo_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_same(Todo, data)


@_differential
@given(_json_inputs(Kinds))
def test_kinds_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_same(Kinds, data)


@_differential
@given(_form_inputs(Kinds))
def test_kinds_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_same(Kinds, data)


@_differential
@given(_json_inputs(Chains))
def test_chains_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_same(Chains, data, actor=7)


@_differential
@given(_form_inputs(Chains))
def test_chains_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_same(Chains, data, actor=7)


@pytest.mark.parametrize(("cls", "data", "trusted"), [*_VALID_JSON, *_VALID_FORMS])
def test_plan_takes_valid_input(cls: type[Command], data: t.Any, trusted: dict[str, t.Any]) -> None:
    assert cls._plan is not None
    assert cls._plan(data) is not None
    _assert_same(cls, data, **trusted)


def test_plan_values_typed() -> None:
    data = {"title": "Milk", "note": "", "order": 3, "completed": True, "owner": _UUID, "id": _UUID}
    assert Todo._plan is not None
    assert Todo._plan(data) == {
        "title": "Milk",
        "note": None,
        "order": 3,
        "count": 1,
        "completed": True,
        "owner": uuid.UUID(_UUID),
        "ref": None,
        "id": uuid.UUID(_UUID),
    }


def test_plan_id_none_when_absent() -> None:
    assert Todo._plan is not None
    values = Todo._plan(ImmutableMultiDict({"title": "Milk", "owner": _UUID}))
    assert values is not None
    assert values["id"] is None


@pytest.mark.parametrize(
    "data",
    [
        {"title": "", "owner": _UUID},  # invalid: the real form words the error
        {"title": "Milk", "owner": "nope"},
        {"title": ["Milk"], "owner": _UUID},  # a JSON type error
        {"title": "Milk", "owner": _UUID, "id": "  "},  # unusual: the real path decides
        {"title": "Milk", "owner": _UUID, "order": 10**5000},
    ],
)
def test_plan_none_for_invalid_or_unusual_input(data: dict[str, t.Any]) -> None:
    assert Todo._plan is not None
    assert Todo._plan(data) is None


def test_plan_none_for_other_mappings() -> None:
    assert Todo._plan is not None
    assert Todo._plan(t.cast(t.Any, _Mapping({"title": "Milk", "owner": _UUID}))) is None


class _Mapping(t.Mapping[str, t.Any]):
    def __init__(self, data: dict[str, t.Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> t.Any:
        return self._data[key]

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_build_fast_path_builds_no_form(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_form(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise AssertionError("the real form was built")

    monkeypatch.setattr(Todo, "Form", no_form)
    command = Todo.build({"title": "Milk", "owner": _UUID, "id": _UUID})
    assert command.title == "Milk"
    assert command.id == uuid.UUID(_UUID)
    assert command.issued_at.tzinfo is datetime.UTC


def test_build_fast_path_new_id_when_absent() -> None:
    first = Todo.build({"title": "Milk", "owner": _UUID})
    second = Todo.build(MultiDict({"title": "Milk", "owner": _UUID, "id": ""}))
    assert first.id.version == 4
    assert first.id != second.id


def test_fast_path_false_has_no_plan() -> None:
    class Plain(Command, fast_path=False):
        title: str = ""

    class Child(Plain):
        note: str = ""

    class Again(Plain, fast_path=True):
        pass

    assert (Plain._plan, Child._plan) == (None, None)
    assert Again._plan is not None
    assert Plain.build({"title": "Milk"}).title == "Milk"


def test_generated_source_in_linecache() -> None:
    import linecache
    import traceback

    assert Todo._plan is not None
    filename = Todo._plan.__code__.co_filename
    assert linecache.getline(filename, 1).startswith("def text_0(")
    with pytest.raises(RuntimeError) as excinfo:
        Todo._plan(_Boom())
    frames = traceback.extract_tb(excinfo.value.__traceback__)
    # The traceback shows the generated line that failed, not an empty "<fast path ...>" frame.
    assert (frames[-2].filename, frames[-2].line) == (filename, "raw = getlist('title')")


class _Boom(MultiDict[str, str]):
    def getlist(self, key: str, type: t.Any = None) -> t.NoReturn:  # type: ignore[override]
        raise RuntimeError("boom")


def test_build_invalid_falls_back_to_form() -> None:
    with pytest.raises(CommandInvalid) as excinfo:
        Todo.build({"title": "", "owner": _UUID})
    assert excinfo.value.errors == {"title": ["This field is required."]}
    assert isinstance(excinfo.value.form, Todo.Form)


def test_plan_direct_for_plain_dataclass() -> None:
    assert Todo._plan is not None
    assert Todo._plan.direct


class _Ordered(Command):
    """A rule across fields, in __post_init__: build must not skip it."""

    low: int = 0
    high: int = 0

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low is above high")


def test_plan_not_direct_with_post_init() -> None:
    assert _Ordered._plan is not None
    assert not _Ordered._plan.direct


@pytest.mark.parametrize("data", [{"low": 2, "high": 1}, MultiDict({"low": "2", "high": "1"})])
def test_build_runs_post_init(data: t.Any) -> None:
    with pytest.raises(ValueError, match="low is above high"):
        _Ordered.build(data)
    _assert_same(_Ordered, data)


# --- classes the plan does not model -----------------------------------------------------------


def _check_nothing(form: wtforms.Form, field: wtforms.Field) -> None:
    """A custom validator: the plan cannot know what it does."""


class _StrictLength(v.Length):  # type: ignore[misc]  # WTForms is untyped
    """A subclass may change __call__."""


def test_compile_none_for_unknown_validator() -> None:
    class WithEmail(Command):
        email: str = field(validators=[v.Email()])

    assert WithEmail._plan is None


def test_compile_none_for_custom_validator() -> None:
    class WithCustom(Command):
        title: str = field(validators=[_check_nothing])

    assert WithCustom._plan is None


def test_compile_none_for_validator_subclass() -> None:
    class WithSubclass(Command):
        title: str = field(validators=[_StrictLength(max=3)])

    assert WithSubclass._plan is None


def test_compile_none_for_nested_form_field() -> None:
    class WithList(Command):
        titles: list[str] = field(default_factory=list, form_field=wtforms.FieldList(wtforms.StringField()))

    assert WithList._plan is None


def test_compile_none_for_length_on_number() -> None:
    class LengthOnInt(Command):
        count: int = field(validators=[v.Length(max=3)])

    assert LengthOnInt._plan is None


def test_compile_none_for_dynamic_bounds() -> None:
    class Dynamic(Command):
        count: int = field(validators=[v.NumberRange(max=lambda: 3)])

    assert Dynamic._plan is None


def test_compile_none_builds_with_form() -> None:
    class WithCustom(Command):
        title: str = field(validators=[_check_nothing])

    assert WithCustom.build({"title": "Milk"}).title == "Milk"


# --- trusted values and signals: the same on both paths -----------------------------------------


@pytest.fixture(params=["fast", "slow"])
def path(request: pytest.FixtureRequest) -> type[Command]:
    """Run the test on the fast path and on the real form: the class to build."""
    return Chains if request.param == "fast" else slow(Chains)


@pytest.fixture
def sent(path: type[Command]) -> t.Iterator[list[tuple[str, dict[str, t.Any]]]]:
    """The build signals sent during the test, as ``(name, kwargs)``."""
    records: list[tuple[str, dict[str, t.Any]]] = []

    def started(sender: t.Any, **kwargs: t.Any) -> None:
        records.append(("build_started", kwargs))

    def finished(sender: t.Any, **kwargs: t.Any) -> None:
        records.append(("build_finished", kwargs))

    signals.build_started.connect(started, sender=path)
    signals.build_finished.connect(finished, sender=path)
    yield records
    signals.build_started.disconnect(started)
    signals.build_finished.disconnect(finished)


def test_build_trusted_missing_raises_before_signals(path: type[Command], sent: list[t.Any]) -> None:
    with pytest.raises(TypeError) as excinfo:
        path.build({"name": "n", "label": "l"})
    assert excinfo.value.args == (
        "Chains.build() needs the trusted value 'actor'; pass it as a keyword argument, e.g."
        " build(data, actor=...).",
    )
    assert sent == []


def test_build_trusted_unknown_raises_before_signals(path: type[Command], sent: list[t.Any]) -> None:
    with pytest.raises(TypeError) as excinfo:
        path.build({"name": "n", "label": "l"}, actor=1, owner=2)
    assert excinfo.value.args == (
        "Chains has no trusted field 'owner'; trusted values are only for fields declared with"
        " field(trusted=True).",
    )
    assert sent == []


def test_build_signals_on_success(path: type[Command], sent: list[tuple[str, dict[str, t.Any]]]) -> None:
    data = {"name": "n", "label": "l"}
    command = path.build(data, actor=1)
    assert command.actor == 1
    assert [name for name, _ in sent] == ["build_started", "build_finished"]
    assert sent[0][1] == {"data": data}
    assert sent[1][1]["command"] is command
    assert sent[1][1]["duration"] >= 0


def test_build_signals_on_errors(path: type[Command], sent: list[tuple[str, dict[str, t.Any]]]) -> None:
    with pytest.raises(CommandInvalid):
        path.build({"name": " ", "label": "l"}, actor=1)
    assert [name for name, _ in sent] == ["build_started", "build_finished"]
    assert sent[1][1]["errors"] == {"name": ["This field is required."]}


# --- errors without the form -------------------------------------------------------------------


class Localised(Command):
    """WTForms' German messages: the fast path words its errors in the form's language."""

    class Meta:
        locales = ("de_DE", "de")

    title: str = field(validators=[v.InputRequired(), v.Length(min=2, max=20)])
    count: int = field(default=1, validators=[v.NumberRange(min=0, max=100)])
    ratio: float | None = None
    due: datetime.date | None = None
    color: Color = Color.RED
    owner: uuid.UUID | None = None


_VALID_JSON.append((Localised, {"title": "Milch", "count": 3, "color": "dark-blue"}, {}))
_VALID_FORMS.append((Localised, MultiDict({"title": "Milch", "due": "2020-01-01", "owner": _UUID}), {}))


def test_localised_has_plan() -> None:
    assert Localised._plan is not None


@_differential
@given(_json_inputs(Localised))
def test_localised_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_same(Localised, data)


@_differential
@given(_form_inputs(Localised))
def test_localised_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_same(Localised, data)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "form"])
def test_errors_translated(fast: bool) -> None:
    with pytest.raises(CommandInvalid) as excinfo:
        (Localised if fast else slow(Localised)).build({"title": "", "count": "x"})
    assert excinfo.value.errors == {
        "title": ["Dieses Feld wird benötigt."],
        "count": ["Keine gültige, ganze Zahl."],
    }


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "form"])
@pytest.mark.parametrize("data", [{"count": "abc"}, MultiDict({"count": "abc"})], ids=["json", "form"])
def test_errors_type_error_alone(fast: bool, data: t.Any) -> None:
    # "abc" is no number: NumberRange would only say so again.
    with pytest.raises(CommandInvalid) as excinfo:
        (Todo if fast else slow(Todo)).build({"title": "Milk", "owner": _UUID, **data})
    assert excinfo.value.errors == {"count": ["Not a valid integer value."]}


def test_errors_required_clears_type_error() -> None:
    class Counted(Command):
        count: int = field(validators=[v.DataRequired(), v.NumberRange(max=9)])

    with pytest.raises(CommandInvalid) as excinfo:
        Counted.build({"count": "abc"})
    assert excinfo.value.errors == {"count": ["This field is required."]}


def test_errors_build_no_form(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    real = Todo.Form

    def counting(*args: t.Any, **kwargs: t.Any) -> wtforms.Form:
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(Todo, "Form", counting)
    with pytest.raises(CommandInvalid) as excinfo:
        Todo.build({"title": "", "owner": "nope", "count": 500})
    assert excinfo.value.errors == {
        "title": ["This field is required."],
        "count": ["Number must be between 0 and 100."],
        "owner": ["Invalid UUID."],
    }
    assert built == []


def test_errors_form_built_lazily_with_errors_and_input() -> None:
    with pytest.raises(CommandInvalid) as excinfo:
        Todo.build(MultiDict({"title": "", "owner": "nope", "order": "x", "id": _UUID}))
    form = excinfo.value.form
    assert isinstance(form, Todo.Form)
    assert excinfo.value.form is form  # built once
    assert form.owner.data == "nope"
    assert form.owner.errors == ["Invalid UUID."]
    assert form.order.errors == ["Not a valid integer value."]
    assert form.title.errors == ["This field is required."]
    assert form.count.errors == []
    assert form.id.data != _UUID  # a fresh id: a corrected resubmission is a new command
    uuid.UUID(form.id.data)


def test_errors_form_json_type_error_shown() -> None:
    with pytest.raises(CommandInvalid) as excinfo:
        Todo.build({"title": ["Milk"], "owner": _UUID})
    assert excinfo.value.errors == {"title": ["Not a valid value."]}
    form = excinfo.value.form
    assert form is not None
    assert form.title.errors == ["Not a valid value."]


def test_errors_order_is_the_form_order() -> None:
    with pytest.raises(CommandInvalid) as excinfo:
        Todo.build({"owner": "x", "title": "", "id": "nope"})
    assert list(excinfo.value.errors) == ["id", "title", "owner"]


@pytest.mark.parametrize(
    "data",
    [
        {"count": 5, "ratio": 0.5},
        {"count": -1, "ratio": float("inf")},
        {"count": 10**400, "ratio": float("nan")},
        {"count": "7", "ratio": "-inf"},
        MultiDict({"count": "1" * 400, "ratio": "1e400"}),
    ],
)
def test_number_range_bounds_same_as_form(data: t.Any) -> None:
    class Bounded(Command):
        count: int = field(validators=[v.NumberRange(min=-5, max=10**20)])
        ratio: float = field(validators=[v.NumberRange(min=float("-inf"), max=1.0)])

    assert Bounded._plan is not None
    _assert_same(Bounded, data)


# --- the application's own fields beside derived ones -------------------------------------------


class Custom(Command):
    """Custom form fields keep the fast path for the class's other fields."""

    title: str = field(validators=[v.InputRequired(), v.Length(max=20)])
    body: str = field(default="", form_field=wtforms.TextAreaField(validators=[v.Length(max=5)]))
    tags: list[str] = field(
        default_factory=list,
        form_field=wtforms.SelectMultipleField(choices=["a", "b", "c"]),
        json_schema={"type": "array", "items": {"enum": ["a", "b", "c"]}},
    )
    level: int = field(
        default=0, form_field=wtforms.IntegerField(validators=[v.Optional(), v.NumberRange(max=5)])
    )


_VALID_JSON.append((Custom, {"title": "Milk", "body": "hi", "tags": ["a", "c"], "level": 2}, {}))
_VALID_FORMS.append((Custom, MultiDict([("title", "Milk"), ("tags", "a"), ("tags", "b"), ("level", "")]), {}))


def test_custom_has_plan() -> None:
    assert Custom._plan is not None
    assert Custom._plan({"title": "Milk", "tags": ["b"]}) is not None


def test_custom_json_array_reaches_list_field() -> None:
    command = Custom.build({"title": "Milk", "tags": ["a", "c"]})
    assert command.tags == ["a", "c"]
    assert command.body == ""


def test_custom_json_schema_given() -> None:
    schema = Custom.json_schema()["properties"]
    assert schema["tags"] == {"type": "array", "items": {"enum": ["a", "b", "c"]}}
    assert schema["body"] == {"default": ""}


def test_custom_from_json_decodes() -> None:
    class Tagged(Command):
        tags: list[str] = field(
            default_factory=list,
            form_field=wtforms.SelectMultipleField(choices=["a", "b"]),
            from_json=lambda value: value.split(",") if isinstance(value, str) else None,
        )

    assert Tagged.build({"tags": "a,b"}).tags == ["a", "b"]
    with pytest.raises(CommandInvalid) as excinfo:
        Tagged.build({"tags": ["a"]})
    assert excinfo.value.errors == {"tags": ["Not a valid value."]}


@_differential
@given(_json_inputs(Custom))
def test_custom_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_same(Custom, data)


@_differential
@given(_form_inputs(Custom))
def test_custom_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_same(Custom, data)


# Live validation (views): the plan's errors against the real form's, as each field would show them.


def _assert_live_same(cls: type[Command], data: t.Any) -> None:
    """Where the plan decides live validation, it gives the real form's errors, field by field."""
    fast = _plan_errors(cls, data)
    try:
        _, real = _form_errors(slow(cls), data)
    except Exception:  # the real form's own failure: the plan must leave such input to it
        assert fast is None
        return
    if fast is not None:
        assert fast == real


@pytest.mark.parametrize("cls", [Todo, Kinds, Chains, Localised])
def test_live_plan_decides_valid_input(cls: type[Command]) -> None:
    for owner, data, _ in [*_VALID_JSON, *_VALID_FORMS]:
        if owner is cls:
            assert _plan_errors(cls, data) == {}


def test_live_plan_errors_of_invalid_input() -> None:
    data = {"title": "", "count": "abc"}
    assert _plan_errors(Localised, data) == _form_errors(slow(Localised), data)[1]
    assert _plan_errors(Localised, data)


def test_live_no_plan_without_fast_path() -> None:
    assert _plan_errors(slow(Todo), {"title": "x"}) is None


@_differential
@given(_json_inputs(Todo))
def test_live_todo_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_live_same(Todo, data)


@_differential
@given(_form_inputs(Todo))
def test_live_todo_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_live_same(Todo, data)


@_differential
@given(_json_inputs(Kinds))
def test_live_kinds_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_live_same(Kinds, data)


@_differential
@given(_form_inputs(Kinds))
def test_live_kinds_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_live_same(Kinds, data)


@_differential
@given(_json_inputs(Chains))
def test_live_chains_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_live_same(Chains, data)


@_differential
@given(_form_inputs(Chains))
def test_live_chains_form_post_same_as_form(data: MultiDict[str, str]) -> None:
    _assert_live_same(Chains, data)


@_differential
@given(_json_inputs(Localised))
def test_live_localised_json_same_as_form(data: dict[str, t.Any]) -> None:
    _assert_live_same(Localised, data)


# The memo of messages (FieldErrors): the same invalid input is worded once, and alike.


def _errors_of(cls: type[Command], data: t.Any) -> dict[str, list[str]]:
    with pytest.raises(CommandInvalid) as excinfo:
        cls.build(data)
    return excinfo.value.errors


@pytest.mark.parametrize(
    "data",
    [{"title": "", "count": "abc"}, MultiDict({"title": "", "count": "abc"})],
    ids=["json", "form"],
)
def test_memo_same_errors_again(data: t.Any) -> None:
    first = _errors_of(Todo, data)
    first["title"].append("changed by the caller")  # a caller's change must not reach the memo
    assert _errors_of(Todo, data) == _errors_of(slow(Todo), data)


def test_memo_words_each_language_apart() -> None:
    data = {"title": ""}
    assert _errors_of(Localised, data) == _errors_of(slow(Localised), data)
    assert _errors_of(Todo, data) == _errors_of(slow(Todo), data)
    assert _errors_of(Localised, data)["title"] != _errors_of(Todo, data)["title"]


def test_memo_runs_no_field_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_commands._fastpath import errors

    data = {"title": "", "owner": "nope-again"}
    expected = _errors_of(Todo, data)
    calls: list[object] = []
    real = errors.field_errors

    def counting(*args: t.Any) -> list[str]:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(errors, "field_errors", counting)
    assert _errors_of(Todo, data) == expected
    assert calls == []
    assert _errors_of(Todo, {"title": "", "owner": "nope-other"}) == _errors_of(
        slow(Todo), {"title": "", "owner": "nope-other"}
    )
    assert len(calls) == 1  # the new text only


def test_memo_bounded() -> None:
    plan = Todo._plan
    assert plan is not None
    for n in range(plan.errors.MEMO_SIZE + 10):  # type: ignore[attr-defined]
        _errors_of(Todo, {"title": "", "owner": f"nope-{n}"})
    assert len(plan.errors._memo) <= plan.errors.MEMO_SIZE  # type: ignore[attr-defined]
