"""Cost of ``Command.build(dict)`` against a plain WTForms form, pydantic v2 and marshmallow.

    .venv/bin/python bench/build.py [--seconds 12]

Two commands, each measured in one run against its hand-written equivalents: a plain
``wtforms.Form`` constructed and validated from the same input as a browser would post it (a
``MultiDict`` of strings), ``Model.model_validate(dict)`` of a pydantic v2 model and
``Schema().load(dict)`` of a marshmallow schema (``pip install -e '.[bench]'``; skipped when
absent). The 4-field command: a required ``str`` with ``Length(max=200)``, an optional ``int``,
a ``bool``, a required ``UUID``. The 8-field one: str, int, bool, float, date, choice, UUID and an
optional str. Each also invalid: ``build`` raising ``CommandInvalid`` against the others refusing.

Each figure is the best per-call time over many samples (``timeit``), the candidates measured
in turn within each round so that a busy machine slows them alike, in short samples so that
some run uninterrupted even there. Targets (issue 17): build at least 10 times faster than the
plain form and within 2.5 times pydantic; the invalid path at most 0.5 times the plain form
and faster than marshmallow.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import time
import timeit
import typing as t
import uuid

import pydantic
import wtforms
from werkzeug.datastructures import MultiDict
from wtforms import validators as v

from flask_commands import Command
from flask_commands import CommandInvalid
from flask_commands import field

try:
    import marshmallow
    from marshmallow import fields as mf
    from marshmallow import validate as mv
except ImportError:  # the bench extra is not installed
    marshmallow = None


class AddTodo(Command):
    """The benchmark's command."""

    title: str = field(validators=[v.InputRequired(), v.Length(max=200)])
    order: int | None = None
    completed: bool = False
    owner: uuid.UUID


class PlainForm(wtforms.Form):
    """The same fields, written as a plain WTForms form."""

    title = wtforms.StringField(validators=[v.InputRequired(), v.Length(max=200)])
    order = wtforms.IntegerField(validators=[v.Optional()])
    completed = wtforms.BooleanField()
    owner = wtforms.StringField(validators=[v.InputRequired(), v.UUID()])


class Model(pydantic.BaseModel):
    """The same fields, written as a pydantic v2 model."""

    title: t.Annotated[str, pydantic.Field(min_length=1, max_length=200)]
    order: int | None = None
    completed: bool = False
    owner: uuid.UUID


OWNER = str(uuid.uuid4())
VALID = {"title": "Buy milk", "order": 3, "completed": True, "owner": OWNER}
VALID_POST = MultiDict({"title": "Buy milk", "order": "3", "completed": "y", "owner": OWNER})
INVALID = {"title": "", "order": 3, "completed": True, "owner": OWNER}
INVALID_POST = MultiDict({"title": "", "order": "3", "completed": "y", "owner": OWNER})


class Size(enum.Enum):
    """The 8-field command's choice."""

    S = "s"
    M = "m"
    L = "l"


class Wide(Command):
    """The 8-field command: str, int, bool, float, date, choice, UUID, optional str."""

    title: str = field(validators=[v.InputRequired(), v.Length(max=200)])
    count: int = field(validators=[v.NumberRange(min=0, max=1000)])
    done: bool = False
    ratio: float = 0.0
    due: datetime.date
    size: Size = Size.M
    owner: uuid.UUID
    note: str | None = None


class WideForm(wtforms.Form):
    """The 8 fields as a plain WTForms form."""

    title = wtforms.StringField(validators=[v.InputRequired(), v.Length(max=200)])
    count = wtforms.IntegerField(validators=[v.InputRequired(), v.NumberRange(min=0, max=1000)])
    done = wtforms.BooleanField()
    ratio = wtforms.FloatField(validators=[v.Optional()])
    due = wtforms.DateField(validators=[v.InputRequired()])
    size = wtforms.SelectField(choices=["s", "m", "l"], default="m")
    owner = wtforms.StringField(validators=[v.InputRequired(), v.UUID()])
    note = wtforms.StringField(validators=[v.Optional()])


class WideModel(pydantic.BaseModel):
    """The 8 fields as a pydantic v2 model."""

    title: t.Annotated[str, pydantic.Field(min_length=1, max_length=200)]
    count: t.Annotated[int, pydantic.Field(ge=0, le=1000)]
    done: bool = False
    ratio: float = 0.0
    due: datetime.date
    size: Size = Size.M
    owner: uuid.UUID
    note: str | None = None


WIDE = {
    "title": "Buy milk",
    "count": 3,
    "done": True,
    "ratio": 0.5,
    "due": "2026-12-24",
    "size": "l",
    "owner": OWNER,
    "note": "semi-skimmed",
}
WIDE_POST = MultiDict({**{k: str(x) for k, x in WIDE.items()}, "done": "y"})
WIDE_INVALID = {**WIDE, "title": "", "count": "many"}
WIDE_INVALID_POST = MultiDict({**{k: str(x) for k, x in WIDE_INVALID.items()}, "done": "y"})

if marshmallow is not None:

    class TodoSchema(marshmallow.Schema):
        """The 4 fields as a marshmallow schema."""

        title = mf.String(required=True, validate=mv.Length(min=1, max=200))
        order = mf.Integer(allow_none=True, load_default=None)
        completed = mf.Boolean(load_default=False)
        owner = mf.UUID(required=True)

    class WideSchema(marshmallow.Schema):
        """The 8 fields as a marshmallow schema."""

        title = mf.String(required=True, validate=mv.Length(min=1, max=200))
        count = mf.Integer(required=True, validate=mv.Range(min=0, max=1000))
        done = mf.Boolean(load_default=False)
        ratio = mf.Float(load_default=0.0)
        due = mf.Date(required=True)
        size = mf.Enum(Size, by_value=True, load_default=Size.M)
        owner = mf.UUID(required=True)
        note = mf.String(allow_none=True, load_default=None)

    SCHEMAS = {"4": TodoSchema(), "8": WideSchema()}


def _valid(call: t.Callable[[], t.Any]) -> t.Callable[[], None]:
    def run() -> None:
        call()

    return run


def _invalid(call: t.Callable[[], t.Any], errors: type[Exception]) -> t.Callable[[], None]:
    def run() -> None:
        try:
            call()
        except errors:
            return
        raise AssertionError("the input should have been refused")

    return run


def _form(form: type[wtforms.Form], data: MultiDict[str, str], valid: bool) -> t.Callable[[], None]:
    def run() -> None:
        if form(formdata=data).validate() is not valid:
            raise AssertionError(f"the plain form should {'accept' if valid else 'refuse'} the input")

    return run


def candidates() -> dict[str, t.Callable[[], None]]:
    """Every candidate, named ``<fields>/<library>[/invalid]``."""
    found: dict[str, t.Callable[[], None]] = {}
    cases = [
        ("4", AddTodo, PlainForm, Model, VALID, VALID_POST, INVALID, INVALID_POST),
        ("8", Wide, WideForm, WideModel, WIDE, WIDE_POST, WIDE_INVALID, WIDE_INVALID_POST),
    ]
    for size, command, form, model, valid, post, invalid, invalid_post in cases:
        found[f"{size}/build"] = _valid(lambda c=command, d=valid: c.build(d))
        found[f"{size}/form"] = _form(form, post, True)
        found[f"{size}/pydantic"] = _valid(lambda m=model, d=valid: m.model_validate(d))
        found[f"{size}/build/invalid"] = _invalid(lambda c=command, d=invalid: c.build(d), CommandInvalid)
        found[f"{size}/form/invalid"] = _form(form, invalid_post, False)
        found[f"{size}/pydantic/invalid"] = _invalid(
            lambda m=model, d=invalid: m.model_validate(d), pydantic.ValidationError
        )
        if marshmallow is not None:
            schema = SCHEMAS[size]
            found[f"{size}/marshmallow"] = _valid(lambda s=schema, d=valid: s.load(d))
            found[f"{size}/marshmallow/invalid"] = _invalid(
                lambda s=schema, d=invalid: s.load(d), marshmallow.ValidationError
            )
    return found


def measure(seconds: float) -> dict[str, float]:
    """Return the best time per call of each candidate, in seconds, within about ``seconds``."""
    CANDIDATES = candidates()
    numbers = {}
    for name, function in CANDIDATES.items():
        function()  # warm up, and fail early if a candidate is wrong
        timer = timeit.Timer(function)
        number, _ = timer.autorange()  # calls taking at least 0.2 s
        # Samples of about 1 ms: on a busy machine longer ones are rarely left uninterrupted.
        numbers[name] = max(1, number // 200)
    best = dict.fromkeys(CANDIDATES, float("inf"))
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 5000):
        for name, function in CANDIDATES.items():
            number = numbers[name]
            best[name] = min(best[name], timeit.Timer(function).timeit(number) / number)
        rounds += 1
    return best


def main() -> None:
    """Measure and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="time to spend measuring")
    args = parser.parse_args()
    for command, data in ((AddTodo, VALID), (Wide, WIDE)):
        if command._plan is None or command._plan(data) is None:
            raise SystemExit(f"The fast path does not take {command.__name__}'s input: the figures are moot.")
    best = measure(args.seconds)
    us = {name: value * 1e6 for name, value in best.items()}
    libraries = ["build", "form", "pydantic", "marshmallow"]
    print("µs per call (best of many)   valid 4  invalid 4   valid 8  invalid 8")
    for library in libraries:
        if f"4/{library}" not in us:
            print(f"  {library:<26} (not installed: pip install -e '.[bench]')")
            continue
        row = [us[f"{size}/{library}{kind}"] for size in ("4", "8") for kind in ("", "/invalid")]
        print(f"  {library:<26}" + "".join(f"{x:9.2f}" for x in row))
    print("Ratios (4 fields / 8 fields)")

    def ratio(a: str, b: str) -> str:
        return " / ".join(f"{best[f'{size}/{a}'] / best[f'{size}/{b}']:5.2f}x" for size in ("4", "8"))

    print(f"  plain form / build           {ratio('form', 'build')}  (target >= 10)")
    print(f"  build / pydantic             {ratio('build', 'pydantic')}  (target <= 2.5)")
    print(f"  invalid: build / plain form  {ratio('build/invalid', 'form/invalid')}  (target <= 0.5)")
    if "4/marshmallow" in best:
        print(f"  invalid: build / marshmallow {ratio('build/invalid', 'marshmallow/invalid')}  (target < 1)")
        print(f"  valid: build / marshmallow   {ratio('build', 'marshmallow')}")
    print(f"  invalid: build / pydantic    {ratio('build/invalid', 'pydantic/invalid')}")


if __name__ == "__main__":
    main()
