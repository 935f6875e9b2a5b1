"""Canonical JSON for the values commands carry: UUID, datetime, date, Decimal, enums."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import json.encoder as _json_encoder
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
    if _encode_chunks is not None:
        try:
            # JSON's own values (the usual case), without json.dumps' per-call set-up.
            return "".join(_encode_chunks(value, 0))
        except (TypeError, ValueError, RecursionError):
            pass  # a UUID, date, Decimal or enum, or a cycle: json.dumps converts or says why
    return json.dumps(value, default=_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# The C encoder that json.dumps makes on every call, made once, with json.dumps' settings above but
# no default (a value JSON does not know raises TypeError) and no circular check (a cycle recurses
# until RecursionError; json.dumps then names it).
_c_make_encoder = getattr(_json_encoder, "c_make_encoder", None)
_encode_chunks: t.Callable[[t.Any, int], t.Sequence[str]] | None = (
    None
    if _c_make_encoder is None  # pragma: no cover - CPython always has the C encoder
    # markers, default, encoder, indent, key separator, item separator, sort_keys, skipkeys, allow_nan
    else _c_make_encoder(
        None, json.JSONEncoder().default, _json_encoder.encode_basestring, None, ":", ",", True, False, True
    )
)
