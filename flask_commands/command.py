"""``Command``: one declaration that is a WTForms form and a frozen, typed, stamped dataclass."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import os
import sys
import time
import typing as t
import uuid
from collections import deque
from itertools import repeat

import wtforms
from werkzeug.datastructures import MultiDict

from . import _codec
from . import _fastpath
from . import signals
from .errors import CommandInvalid
from .forms import FieldInfo
from .forms import field
from .forms import inspect_field
from .forms import json_schema
from .forms import make_form_class
from .forms import normalise_json

_C = t.TypeVar("_C", bound="Command")

#: Field names a command may not declare: the stamp, and the class's own API.
RESERVED = frozenset({"id", "issued_at", "Form", "build", "form", "to_dict", "from_dict", "json_schema"})

#: Every declared command class by its type name (``"module:QualName"``), for job envelopes.
_registry: dict[str, type[Command]] = {}


class _IdPool:
    """Random (version 4) UUIDs made in batches from ``os.urandom``: a fifth of ``uuid.uuid4()``'s cost.

    Lock-free and safe without the GIL: each id is made once and handed out by ``list.pop``, which
    is atomic (also on free-threaded Python); threads that refill at once each add their own
    batch. A forked child drops the parent's batch, so the two never hand out the same ids.
    ``_ids`` stays the same list (refilled and emptied in place), so ``build`` pops from it
    without a call.
    """

    _BATCH = 256

    def __init__(self) -> None:
        self._ids: list[uuid.UUID] = []
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._ids.clear()

    def next(self) -> uuid.UUID:
        try:
            return self._ids.pop()
        except IndexError:
            return self.refill()

    def refill(self) -> uuid.UUID:
        """Make a batch of ids, keep all but one, and return that one."""
        batch = self._BATCH
        raw = bytearray(os.urandom(16 * batch))
        # Version 4 and the RFC 4122 variant, set exactly as uuid.UUID(bytes=..., version=4) does:
        # on the bytes, each of a batch's 7th and 9th bytes mapped at once.
        raw[6::16] = raw[6::16].translate(_VERSION_4)
        raw[8::16] = raw[8::16].translate(_RFC_4122)
        data = bytes(raw)
        # Every step a C loop (map), none a Python one: the two slots uuid.UUID.__init__ sets.
        ids = list(map(_new_object, repeat(uuid.UUID, batch)))
        slices = _SLICES if batch == len(_SLICES) else [slice(i, i + 16) for i in range(0, 16 * batch, 16)]
        numbers = map(int.from_bytes, map(data.__getitem__, slices))
        deque(map(_fastpath.SET_UUID_INT, ids, numbers), 0)
        deque(map(_fastpath.SET_UUID_SAFE, ids, repeat(uuid.SafeUUID.unknown, batch)), 0)
        ident = ids.pop()
        self._ids.extend(ids)
        return ident


# Byte tables for bytes.translate: the version nibble set to 4, the variant bits to 10.
_VERSION_4 = bytes((byte & 0x0F) | 0x40 for byte in range(256))
_RFC_4122 = bytes((byte & 0x3F) | 0x80 for byte in range(256))
_SLICES = [slice(start, start + 16) for start in range(0, 16 * _IdPool._BATCH, 16)]
_new_object = object.__new__
_ids = _IdPool()
_pop_id = _ids._ids.pop
_refill_ids = _ids.refill
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_build_started = signals.build_started
_build_finished = signals.build_finished


def new_id() -> uuid.UUID:
    """Return a fresh random (version 4) UUID."""
    return _ids.next()


_now = datetime.datetime.now
_UTC = datetime.UTC


def _utcnow() -> datetime.datetime:
    return _now(_UTC)


def type_name(cls: type[Command]) -> str:
    """Return the stable name of a command class, ``"module:QualName"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


@t.dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field, dataclasses.field))
class _CommandMeta(type):
    """Make every ``Command`` subclass a frozen, keyword-only, slotted dataclass with a form."""

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, t.Any],
        *,
        fast_path: bool | None = None,
        **kwargs: t.Any,
    ) -> t.Any:
        if "__dataclass_fields__" in namespace:
            # dataclasses re-creating the class with __slots__.
            return super().__new__(mcs, name, bases, namespace, **kwargs)
        if not any(isinstance(b, _CommandMeta) for b in bases):  # Command itself
            base: t.Any = super().__new__(mcs, name, bases, namespace, **kwargs)
            return dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(base)
        annotations = namespace.get("__annotations__", {})
        for clash in sorted(RESERVED.intersection(annotations)):
            raise TypeError(
                f"{name} declares a field named {clash!r}, a name Command reserves; rename the field."
            )
        for clash in sorted(_FORM_NAMES.intersection(annotations)):
            raise TypeError(
                f"{name} declares a field named {clash!r}, which wtforms.Form uses for its own API;"
                " rename the field."
            )
        cls: t.Any = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls = dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(cls)
        try:
            hints = t.get_type_hints(cls)
        except NameError:
            # A command declared inside a function refers to names of that function's scope.
            hints = t.get_type_hints(cls, localns=sys._getframe(1).f_locals)
        infos = tuple(
            inspect_field(name, f, hints[f.name])
            for f in dataclasses.fields(cls)
            if f.name not in ("id", "issued_at")
        )
        cls._fields = infos
        cls.Form = make_form_class(name, infos, getattr(cls, "Meta", None))
        cls.Form.__module__ = cls.__module__
        cls.Form.__qualname__ = f"{cls.__qualname__}.Form"
        if fast_path is not None:
            cls._fast_path = fast_path
        cls._plan = _fastpath.compile_plan(infos, cls.Form, cls) if cls._fast_path else None
        _registry[type_name(cls)] = cls
        return cls


# An instance, not the class: a form sets ``meta``, ``form_errors`` and ``_fields`` in __init__,
# and a field of that name would replace them on the bound form.
_FORM_NAMES = frozenset(name for name in dir(wtforms.Form()) if not name.startswith("__"))


class Command(metaclass=_CommandMeta):
    """Base class of commands: subclass it and annotate fields, as with a dataclass.

    Every command carries ``id`` (the idempotency key) and ``issued_at`` (UTC, stamped by the
    server when the command is built). A nested ``class Meta`` becomes the form's ``Meta``
    (``locales = ["de"]`` translates WTForms' messages, on the fast path too). The class keyword
    ``fast_path=False`` (``class Cmd(Command, fast_path=False)``) makes ``build`` always use the
    real form: for debugging, or to compare the two.
    """

    #: The idempotency key: taken from input when present, else new.
    id: uuid.UUID = dataclasses.field(default_factory=new_id)
    #: When the server built the command, timezone-aware UTC.
    issued_at: datetime.datetime = dataclasses.field(default_factory=_utcnow)

    #: The ``wtforms.Form`` subclass derived from the annotations.
    Form: t.ClassVar[type[wtforms.Form]]
    _fields: t.ClassVar[tuple[FieldInfo, ...]] = ()
    #: ``class Cmd(Command, fast_path=False)``: always build through the real form (inherited).
    _fast_path: t.ClassVar[bool] = True
    #: The compiled fast path of :meth:`build`; ``None`` where the real form always decides.
    _plan: t.ClassVar[_fastpath.Plan | None] = None

    @classmethod
    def build(cls: type[_C], data: t.Mapping[str, t.Any], /, **trusted: t.Any) -> _C:
        """Validate input and return a stamped command, or raise :class:`CommandInvalid`.

        :param data: decoded JSON (a ``dict``) or a form post (a ``MultiDict``). Unknown keys,
            ``issued_at`` and trusted fields in it are ignored.
        :param trusted: the values of the command's trusted fields, set by the server.
        :raises CommandInvalid: with ``.errors`` per field and ``.form``, the bound form.
        :raises TypeError: when a trusted value is missing or unknown (a programming error).
        """
        plan = cls._plan
        # A truth test, or one set comparison, instead of _check_trusted's set arithmetic, which
        # only runs (and raises) when the names differ.
        if plan is None or ((trusted or plan.trusted) and trusted.keys() != plan.trusted):
            cls._check_trusted(trusted)
        started = _build_started.receivers
        finished = _build_finished.receivers
        start = time.perf_counter() if started or finished else 0.0
        if started:
            signals._send(_build_started, cls, data=data)
        # The fast path returns values only when it has proved the form would give the same;
        # else (invalid or unusual input) the real form below decides and words every error.
        if plan is not None and (fast := plan(data)) is not None:
            if fast["id"] is None:
                try:  # _ids.next() without its call
                    fast["id"] = _pop_id()
                except IndexError:
                    fast["id"] = _refill_ids()
            fast["issued_at"] = _now(_UTC)
            if trusted:
                fast.update(trusted)
            # plan.make does what the generated __init__ does, without its argument parsing (half
            # the cost); cls() takes one dict: merging ** arguments would copy them again.
            command = plan.make(fast) if plan.make is not None else cls(**fast)
            if finished:
                duration = time.perf_counter() - start
                signals._send(signals.build_finished, cls, command=command, duration=duration)
            return command
        if plan is not None and (errors := plan.errors(data)) is not None:
            # Invalid input, worded by WTForms' own fields without the form: it is built only if
            # something reads CommandInvalid.form (a template re-rendering it).
            if finished:
                duration = time.perf_counter() - start
                signals._send(signals.build_finished, cls, errors=errors, duration=duration)
            raise _FormlessInvalid(errors, cls, data)
        if hasattr(data, "getlist"):
            formdata: MultiDict[str, t.Any] = t.cast("MultiDict[str, t.Any]", data)
            type_errors: dict[str, list[str]] = {}
            sent: t.Container[str] | None = None
        elif isinstance(data, t.Mapping):
            formdata, type_errors = normalise_json(data, cls._fields)
            sent = formdata
        else:
            raise TypeError(f"{cls.__name__}.build() takes a dict or a MultiDict, not {type(data).__name__}.")
        form = cls.Form(formdata=formdata)
        form.validate()
        errors = {}
        for bound in form:
            process_errors = list(bound.process_errors)
            if bound.name in type_errors:
                bound.errors = list(type_errors[bound.name])  # the re-rendered form shows them
            elif process_errors and bound.errors[: len(process_errors)] == process_errors:
                bound.errors = process_errors  # a type error alone, as _fastpath.field_errors
            if bound.errors:
                errors[bound.name] = list(bound.errors)
        if errors:
            form.id.data = str(new_id())
            if finished:
                duration = time.perf_counter() - start
                signals._send(signals.build_finished, cls, errors=errors, duration=duration)
            raise CommandInvalid(errors, form)
        values = cls._values_from(form, sent)
        ident = form.id.data
        command = cls(
            id=_uuid_or_none(ident) or new_id(),
            issued_at=_utcnow(),
            **values,
            **trusted,
        )
        if finished:
            signals._send(signals.build_finished, cls, command=command, duration=time.perf_counter() - start)
        return command

    @classmethod
    def _check_trusted(cls, trusted: t.Mapping[str, t.Any]) -> None:
        expected = {info.name for info in cls._fields if info.trusted}
        missing = sorted(expected.difference(trusted))
        unknown = sorted(set(trusted).difference(expected))
        if missing:
            raise TypeError(
                f"{cls.__name__}.build() needs the trusted value {missing[0]!r}; pass it as a keyword"
                f" argument, e.g. build(data, {missing[0]}=...)."
            )
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no trusted field {unknown[0]!r}; trusted values are only for"
                " fields declared with field(trusted=True)."
            )

    @classmethod
    def _values_from(cls, form: wtforms.Form, sent: t.Container[str] | None) -> dict[str, t.Any]:
        """Field values from a validated form; for JSON, keys not ``sent`` take their default."""
        values: dict[str, t.Any] = {}
        for info in cls._fields:
            if info.trusted:
                continue
            if sent is not None and info.name not in sent and not info.required:
                values[info.name] = info.default_value()
                continue
            value = form[info.name].data
            if info.kind == "choice":
                value = info.choices.get(value) if value not in (None, "") else None
            elif info.kind == "uuid":
                value = _uuid_or_none(value)
            elif info.optional and value == "":
                value = None
            values[info.name] = value
        return values

    @classmethod
    def form(cls, data: t.Mapping[str, t.Any] | None = None, **kwargs: t.Any) -> wtforms.Form:
        """Return an unbound form for rendering, with a fresh ``id``.

        :param data: initial field values (``{"title": "Milk"}``).
        :param kwargs: passed to the form class (``prefix``, ``obj``, ``meta``).
        """
        initial = dict(data) if data is not None else None
        if initial:
            for info in cls._fields:
                # A select compares its choices' text: an enum member would select none of them.
                if info.kind == "choice" and isinstance(initial.get(info.name), enum.Enum):
                    initial[info.name] = str(initial[info.name].value)
        form = cls.Form(data=initial, **kwargs)
        form.id.data = str(new_id())
        return form

    def to_dict(self) -> dict[str, t.Any]:
        """Return the command as JSON values: ``id``, ``issued_at`` and every field."""
        result: dict[str, t.Any] = {"id": str(self.id), "issued_at": self.issued_at.isoformat()}
        for info in self._fields:
            value = getattr(self, info.name)
            # JSON values as they are (exact types: an IntEnum is an int, but not a JSON one).
            result[info.name] = value if type(value) in _JSON_SCALARS else _codec.to_jsonable(value)
        return result

    @classmethod
    def from_dict(cls: type[_C], data: t.Mapping[str, t.Any], /) -> _C:
        """Restore a command from :meth:`to_dict` output, from a trusted place (a job, storage).

        ``id``, ``issued_at`` and trusted values are restored as they are; the field values are
        validated again.

        :raises CommandInvalid: when a value does not decode or no longer validates.
        """
        errors: dict[str, list[str]] = {}
        try:
            ident = uuid.UUID(str(data["id"]))
        except (KeyError, ValueError):
            errors["id"] = ["Invalid UUID."]
        try:
            issued_at = datetime.datetime.fromisoformat(str(data["issued_at"]))
            if issued_at.tzinfo is None:
                raise ValueError("naive")
        except (KeyError, ValueError):
            errors["issued_at"] = ["Not a valid datetime value."]
        trusted: dict[str, t.Any] = {}
        untrusted: dict[str, t.Any] = {}
        for info in cls._fields:
            raw = data.get(info.name)
            if raw is None and info.name not in data and info.trusted:
                errors[info.name] = ["This field is required."]
                continue
            try:
                value = _decode(info, raw)
            except (ValueError, TypeError, decimal.InvalidOperation, KeyError):
                errors[info.name] = ["Not a valid value."]
                continue
            (trusted if info.trusted else untrusted)[info.name] = value
        plan = cls._plan
        if not errors and not _proved(plan, data, untrusted):
            errors = _revalidate(cls, untrusted)
        if errors:
            raise CommandInvalid(errors)
        if plan is not None and plan.make is not None:
            return t.cast(_C, plan.make({"id": ident, "issued_at": issued_at, **untrusted, **trusted}))
        return cls(id=ident, issued_at=issued_at, **untrusted, **trusted)

    @classmethod
    def json_schema(cls) -> dict[str, t.Any]:
        """Return the JSON Schema (2020-12) of the command's JSON input."""
        return json_schema(cls.__name__, cls._fields)


class _FormlessInvalid(CommandInvalid):
    """``CommandInvalid`` whose ``form`` is built on first use: JSON callers never need it."""

    def __init__(self, errors: dict[str, list[str]], command: type[Command], data: t.Any) -> None:
        self._form: wtforms.Form | None = None
        super().__init__(errors)
        self._command: type[Command] | None = command
        self._data = data

    @property
    def form(self) -> wtforms.Form | None:
        """The bound form with the errors, a fresh ``id`` and what the user sent, ready to render."""
        if self._form is None and self._command is not None:
            command, self._command = self._command, None
            data = self._data
            formdata = data if hasattr(data, "getlist") else normalise_json(data, command._fields)[0]
            form = command.Form(formdata=formdata)
            for bound in form:
                bound.errors = list(self.errors.get(bound.name, ()))
            form.id.data = str(new_id())
            self._form = form
        return self._form

    @form.setter
    def form(self, value: wtforms.Form | None) -> None:
        self._form = value
        self._command = None


def command_fields(command: type[Command] | Command) -> tuple[FieldInfo, ...]:
    """Return the declared fields of a command class (or of a command's class), in order.

    A read-only view, as :func:`dataclasses.fields`: each :class:`~flask_commands.forms.FieldInfo`
    gives the field's ``name``, ``annotation``, ``kind``, whether it is ``trusted``, ``optional``
    or ``required``, its ``default`` and its ``form_field``. ``id`` and ``issued_at`` are not in it.

    :raises TypeError: for anything that is not a command class or command.
    """
    cls = command if isinstance(command, type) else type(command)
    if not issubclass(cls, Command):
        raise TypeError(f"command_fields() takes a Command subclass or a command, not {command!r}.")
    return cls._fields


def _uuid_or_none(value: str | uuid.UUID | None) -> uuid.UUID | None:
    """A validated UUID field's value: a UUID (its default may be one already), or ``None``."""
    if isinstance(value, uuid.UUID):
        return value
    # Optional() lets whitespace-only input through unparsed: it means "not sent".
    return uuid.UUID(value) if value and not value.isspace() else None


def _decode(info: FieldInfo, raw: t.Any) -> t.Any:
    """Turn a JSON value from :meth:`Command.to_dict` back into the field's Python type."""
    if raw is None:
        if info.optional or info.kind == "custom":
            return None
        raise ValueError("null")
    kind = info.kind
    if kind == "choice":
        return info.choices[str(raw.value if isinstance(raw, enum.Enum) else raw)]
    if kind == "uuid":
        return uuid.UUID(str(raw))
    if kind == "datetime":
        return datetime.datetime.fromisoformat(raw)
    if kind == "date":
        return datetime.date.fromisoformat(raw)
    if kind == "decimal":
        return decimal.Decimal(str(raw))
    if kind == "int" and not isinstance(raw, bool):
        return int(raw)
    if kind == "float" and not isinstance(raw, bool):
        return float(raw)
    if kind == "bool" and isinstance(raw, bool):
        return raw
    if kind == "str" and isinstance(raw, str):
        return raw
    if kind == "custom":
        return raw
    raise TypeError(f"{raw!r} is not a {kind}")


def _proved(plan: _fastpath.Plan | None, data: t.Mapping[str, t.Any], values: dict[str, t.Any]) -> bool:
    """Whether the fast path takes the JSON ``data`` and gives the decoded ``values``: valid then."""
    if plan is None:
        return False
    proved = plan({name: data.get(name) for name in values})
    if proved is None:
        return False
    for name, value in values.items():
        found = proved[name]
        if type(found) is not type(value) or found != value:
            return False  # the form would see another value (a float for an int, NaN): ask it
    return True


def _revalidate(cls: type[Command], values: dict[str, t.Any]) -> dict[str, list[str]]:
    """Run the form's validators on typed ``values``; return the errors."""
    rendered: MultiDict[str, str] = MultiDict()
    for name, value in values.items():
        if value is None or value is False:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        rendered.add(name, value.isoformat() if isinstance(value, datetime.date) else str(value))
    form = cls.Form(formdata=rendered)
    for name, value in values.items():
        field = form[name]
        if field.type != "SelectField":  # a select validates the submitted text against its choices
            field.data = value
            field.process_errors = []  # the value is already typed; text parsing is not the question
    form.validate()
    return {name: list(messages) for name, messages in form.errors.items() if name}
