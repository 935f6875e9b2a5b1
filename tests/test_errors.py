"""Tests for flask_commands.errors: the invalid input, conflict and rejection exceptions."""

from __future__ import annotations

import pytest
import wtforms

from flask_commands import CommandInvalid
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands.errors import KeyInProgress
from flask_commands.errors import KeyReused

# Conflict and Rejected.


def test_conflict_message_and_code() -> None:
    e = Conflict("A todo with that title exists.", code="duplicate_title")
    assert (e.message, e.code, str(e)) == (
        "A todo with that title exists.",
        "duplicate_title",
        "A todo with that title exists.",
    )


def test_conflict_default_code() -> None:
    assert Conflict("Taken.").code == "conflict"


def test_rejected_message_and_code() -> None:
    e = Rejected("Todos cannot be added on Sundays.", code="sunday")
    assert (e.message, e.code) == ("Todos cannot be added on Sundays.", "sunday")


def test_rejected_default_code() -> None:
    assert Rejected("No.").code == "rejected"


def test_refusal_repr() -> None:
    assert repr(Conflict("Taken.")) == "Conflict('Taken.', code='conflict')"
    assert repr(Rejected("No.", code="no")) == "Rejected('No.', code='no')"


def test_refusal_code_required_keyword() -> None:
    with pytest.raises(TypeError):
        Conflict("Taken.", "taken")  # type: ignore[misc]


def test_refusal_outcome_and_status() -> None:
    """What the idempotency store records and the HTTP status a refusal answers with."""
    assert (Conflict.outcome, Conflict.status) == ("conflict", 409)
    assert (Rejected.outcome, Rejected.status) == ("rejected", 422)


def test_conflict_current_copied() -> None:
    current = {"title": "Milk", "version": 3}
    e = Conflict("Changed elsewhere.", current=current)
    current["version"] = 4
    assert e.current == {"title": "Milk", "version": 3}
    assert Conflict("Taken.").current is None


# The idempotency key's refusals.


def test_key_in_progress() -> None:
    e = KeyInProgress(retry_after=2.5)
    assert isinstance(e, Conflict)
    assert (e.code, e.retry_after, e.status) == ("in_progress", 2.5, 409)
    assert e.message == "This command is already being handled; try again shortly."


def test_key_reused() -> None:
    e = KeyReused()
    assert isinstance(e, Rejected)
    assert (e.code, e.status) == ("idempotency_key_reused", 422)
    assert e.message == "This idempotency key was already used with another payload."


# CommandInvalid.


def test_command_invalid_errors_and_form() -> None:
    errors = {"title": ["This field is required."]}
    form = wtforms.Form()
    e = CommandInvalid(errors, form)
    assert (e.errors, e.form, e.args) == (errors, form, (errors,))
    assert CommandInvalid(errors).form is None
