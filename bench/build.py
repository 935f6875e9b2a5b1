"""Cost of ``Command.build(dict)`` against a plain WTForms form and a pydantic v2 model.

    .venv/bin/python bench/build.py [--seconds 12]

One 4-field command (a required ``str`` with ``Length(max=200)``, an optional ``int``, a
``bool``, a required ``UUID``), measured in one run against its hand-written equivalents: a plain
``wtforms.Form`` constructed and validated from the same input as a browser would post it (a
``MultiDict`` of strings), and ``Model.model_validate(dict)`` of a pydantic v2 model. Also the
invalid path: ``build`` raising ``CommandInvalid`` against the plain form failing validation.

Each figure is the best per-call time over many samples (``timeit``), the candidates measured
in turn within each round so that a busy machine slows them alike, in short samples so that
some run uninterrupted even there. Targets (SPEC.md): build at
least 10 times faster than the plain form (minimum 5) and within 2.5 times pydantic (minimum
4); the invalid path no slower than 1.5 times the plain form.
"""

from __future__ import annotations

import argparse
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


def build_valid() -> None:
    """``build`` of valid JSON: the fast path."""
    AddTodo.build(VALID)


def form_valid() -> None:
    """The plain form of the same input, posted."""
    if not PlainForm(formdata=VALID_POST).validate():
        raise AssertionError("the plain form should accept the valid input")


def pydantic_valid() -> None:
    """pydantic of the same input."""
    Model.model_validate(VALID)


def build_invalid() -> None:
    """``build`` of invalid JSON: the real form words the errors."""
    try:
        AddTodo.build(INVALID)
    except CommandInvalid:
        return
    raise AssertionError("build should reject the invalid input")


def form_invalid() -> None:
    """The plain form of the same invalid input, posted."""
    if PlainForm(formdata=INVALID_POST).validate():
        raise AssertionError("the plain form should reject the invalid input")


CANDIDATES: dict[str, t.Callable[[], None]] = {
    "build": build_valid,
    "form": form_valid,
    "pydantic": pydantic_valid,
    "build_invalid": build_invalid,
    "form_invalid": form_invalid,
}


def measure(seconds: float) -> dict[str, float]:
    """Return the best time per call of each candidate, in seconds, within about ``seconds``."""
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
    if AddTodo._plan is None or AddTodo._plan(VALID) is None:
        raise SystemExit("The fast path does not take the benchmark's input: the figures would be moot.")
    best = measure(args.seconds)
    us = {name: value * 1e6 for name, value in best.items()}
    print("AddTodo: str (InputRequired, Length(max=200)), int | None, bool, UUID")
    print(f"  build(dict), valid                     {us['build']:8.2f} µs")
    print(f"  plain WTForms form (MultiDict), valid  {us['form']:8.2f} µs")
    print(f"  pydantic v2 model_validate(dict)       {us['pydantic']:8.2f} µs")
    print(f"  build(dict), invalid                   {us['build_invalid']:8.2f} µs")
    print(f"  plain WTForms form, invalid            {us['form_invalid']:8.2f} µs")
    print("Ratios")
    print(f"  plain form / build     {best['form'] / best['build']:6.1f}x  (target >= 10, minimum 5)")
    print(f"  build / pydantic       {best['build'] / best['pydantic']:6.1f}x  (target <= 2.5, minimum 4)")
    print(f"  invalid: build / form  {best['build_invalid'] / best['form_invalid']:6.2f}x  (target <= 1.5)")


if __name__ == "__main__":
    main()
