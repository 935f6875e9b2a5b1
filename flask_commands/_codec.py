"""Canonical JSON for the values commands carry: UUID, datetime, date, Decimal, enums."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import typing as t
import uuid


def _default(value: t.Any) -> t.Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_jsonable(value: t.Any) -> t.Any:
    """Return ``value`` with UUIDs, datetimes, Decimals and enums turned into JSON values."""
    if isinstance(value, enum.Enum):  # before str and int: an IntEnum or StrEnum is both
        return to_jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _default(value)


def dumps(value: t.Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept; the same input always gives the same text."""
    return json.dumps(value, default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
