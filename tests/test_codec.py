"""Tests for flask_commands._codec: the JSON values of commands and their canonical text."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import uuid

import pytest

from flask_commands import _codec


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


class Mood(enum.StrEnum):
    CALM = "calm"


def test_to_jsonable_uuid() -> None:
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert _codec.to_jsonable(value) == "12345678-1234-5678-1234-567812345678"


def test_to_jsonable_datetime_keeps_offset() -> None:
    value = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert _codec.to_jsonable(value) == "2026-01-02T03:04:05+00:00"


def test_to_jsonable_date() -> None:
    assert _codec.to_jsonable(datetime.date(2026, 1, 2)) == "2026-01-02"


def test_to_jsonable_decimal_keeps_digits() -> None:
    assert _codec.to_jsonable(decimal.Decimal("1.10")) == "1.10"


def test_to_jsonable_enum_value() -> None:
    assert _codec.to_jsonable(Colour.RED) == "red"


def test_to_jsonable_int_enum_is_its_number() -> None:
    # An IntEnum is an int too: its value, not its member name or "Size.LARGE".
    result = _codec.to_jsonable(Size.LARGE)
    assert result == 3
    assert type(result) is int


def test_to_jsonable_str_enum_is_plain_text() -> None:
    result = _codec.to_jsonable(Mood.CALM)
    assert result == "calm"
    assert type(result) is str


def test_to_jsonable_nested() -> None:
    value = {"ids": (uuid.UUID(int=1),), 2: {Colour.RED}}
    assert _codec.to_jsonable(value) == {"ids": ["00000000-0000-0000-0000-000000000001"], "2": ["red"]}


def test_to_jsonable_plain_values_unchanged() -> None:
    for value in (None, True, 0, 1.5, "text"):
        assert _codec.to_jsonable(value) is value


def test_to_jsonable_unknown_type() -> None:
    with pytest.raises(TypeError) as excinfo:
        _codec.to_jsonable(object())
    assert excinfo.value.args == ("object is not JSON serializable",)


def test_dumps_sorted_and_compact() -> None:
    assert _codec.dumps({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_dumps_same_text_for_equal_values() -> None:
    assert _codec.dumps({"a": 1, "b": 2}) == _codec.dumps({"b": 2, "a": 1})


def test_dumps_keeps_unicode() -> None:
    assert _codec.dumps({"t": "café"}) == '{"t":"café"}'


def test_dumps_encodes_command_values() -> None:
    value = {"id": uuid.UUID(int=2), "price": decimal.Decimal("2.50"), "colour": Colour.RED}
    expected = '{"colour":"red","id":"00000000-0000-0000-0000-000000000002","price":"2.50"}'
    assert _codec.dumps(value) == expected


def test_dumps_same_text_as_json_dumps() -> None:
    # The encoder made once gives json.dumps' text, floats, escapes and nesting included.
    value = {"z": [1.5, -0.0, 1e300, None, True], "a": {"q": 'say "hi"\n', "é": "\ud800"}, "m": [[], {}]}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _codec.dumps(value) == expected


def test_dumps_cycle_refused() -> None:
    value: list[object] = []
    value.append(value)
    with pytest.raises(ValueError, match="Circular reference"):
        _codec.dumps(value)
