"""The pytest plugin, run in an inner pytest: the ``command_signals`` fixture and ``assert_invalid``.

The inner runs find the plugin through its ``pytest11`` entry point, as a user's suite would: the
inner test files import nothing from ``flask_commands.testing`` to get the fixture.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

# The commands and handlers of the inner test files.
COMMANDS = """
import flask
import pytest
from wtforms import validators as v

from flask_commands import Command, Commands, Conflict, field, handler
from flask_commands import signals
from flask_commands.testing import assert_invalid


class PtAddNote(Command):
    text: str = field(validators=[v.Length(max=5)])
    rank: int = 0
    author: int = field(trusted=True)


@handler(PtAddNote)
def add_note(cmd):
    if cmd.text == "boom":
        raise RuntimeError("the disk is full")
    if cmd.text == "taken":
        raise Conflict("That note exists.", code="duplicate")
    return {"text": cmd.text}
"""


def run(pytester: pytest.Pytester, tests: str, *args: str) -> pytest.RunResult:
    """Run ``tests`` (after the commands above) in an inner pytest with warnings as errors."""
    pytester.makepyfile(test_inner=COMMANDS + textwrap.dedent(tests))
    # In process, the plugin's package was imported by this outer run before the inner one could
    # mark it for assertion rewriting, which only a plugin's own asserts would need.
    already_imported = (
        "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning"
    )
    return pytester.runpytest_inprocess(
        "-W", "error", "-W", already_imported, "-p", "no:cacheprovider", *args
    )


# command_signals


def test_command_signals_names(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            add_note(PtAddNote.build({"text": "hi"}, author=1))
            assert command_signals.names() == [
                "build_started", "build_finished", "handle_started", "handle_finished"
            ]
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_senders_and_kwargs(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            data = {"text": "hi"}
            cmd = PtAddNote.build(data, author=1)
            add_note(cmd)
            started, built, handling, handled = command_signals.sent
            assert (started.sender, started.kwargs) == (PtAddNote, {"data": data})
            assert built.sender is PtAddNote
            assert built.kwargs["command"] is cmd and built.kwargs["duration"] >= 0
            assert (handling.sender, handling.kwargs) == (add_note, {"command": cmd})
            assert handled.sender is add_note
            assert handled.kwargs["result"] == {"text": "hi"}
            assert sorted(handled.kwargs) == ["command", "duration", "result"]
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_build_errors(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from flask_commands import CommandInvalid

        def test_it(command_signals):
            with pytest.raises(CommandInvalid):
                PtAddNote.build({"text": "too long"}, author=1)
            (finished,) = command_signals.of("build_finished")
            assert finished.kwargs["errors"] == {"text": ["Field cannot be longer than 5 characters."]}
            assert "command" not in finished.kwargs
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_of(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            add_note(PtAddNote(text="a", author=1))
            with pytest.raises(Conflict):
                add_note(PtAddNote(text="taken", author=1))
            finished = command_signals.of("handle_finished")
            assert [s.kwargs.get("result") for s in finished] == [{"text": "a"}, None]
            assert finished[1].kwargs["conflict"].code == "duplicate"
            assert command_signals.of("replayed") == []
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_handle_failed(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            with pytest.raises(RuntimeError):
                add_note(PtAddNote(text="boom", author=1))
            assert command_signals.names() == ["handle_started", "handle_failed"]
            (failed,) = command_signals.of("handle_failed")
            assert str(failed.kwargs["exception"]) == "the disk is full"
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_replayed(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            app = flask.Flask("inner")
            Commands(app)
            cmd = PtAddNote(text="hi", author=1)
            with app.app_context():
                assert add_note.handle(cmd, key="k1") == {"text": "hi"}
                assert add_note.handle(cmd, key="k1") is None
            (replayed,) = command_signals.of("replayed")
            assert (replayed.sender, replayed.kwargs) == (add_note, {"command": cmd, "key": "k1"})
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_of_unknown_name(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            with pytest.raises(ValueError) as info:
                command_signals.of("handle-finished")
            assert str(info.value) == (
                "'handle-finished' is not a Flask-Commands signal; use one of ['build_finished',"
                " 'build_started', 'handle_failed', 'handle_finished', 'handle_started', 'key_refused',"
                " 'replayed']."
            )
        """,
    )
    result.assert_outcomes(passed=1)


def test_command_signals_disconnected_after_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_first(command_signals):
            assert signals.handle_started.receivers

        def test_second():
            assert not signals.handle_started.receivers
            assert not signals.build_finished.receivers
        """,
    )
    result.assert_outcomes(passed=2)


def test_command_signals_fresh_per_test(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_first(command_signals):
            add_note(PtAddNote(text="a", author=1))
            assert len(command_signals.sent) == 2

        def test_second(command_signals):
            assert command_signals.sent == []
        """,
    )
    result.assert_outcomes(passed=2)


def test_command_signals_clear(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it(command_signals):
            cmd = PtAddNote.build({"text": "a"}, author=1)
            command_signals.clear()
            add_note(cmd)
            assert command_signals.names() == ["handle_started", "handle_finished"]
        """,
    )
    result.assert_outcomes(passed=1)


# assert_invalid


def test_assert_invalid_passes(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            error = assert_invalid(PtAddNote, {"text": "too long"}, field="text", author=1)
            assert error.errors == {"text": ["Field cannot be longer than 5 characters."]}
        """,
    )
    result.assert_outcomes(passed=1)


def test_assert_invalid_passes_with_message(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            assert_invalid(
                PtAddNote, {}, field="text", message="This field is required.", author=1
            )
        """,
    )
    result.assert_outcomes(passed=1)


def test_assert_invalid_fails_when_valid(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            assert_invalid(PtAddNote, {"text": "hi"}, field="text", author=1)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E*Failed: PtAddNote.build({'text': 'hi'}) was valid: PtAddNote(*text='hi'*)"]
    )


def test_assert_invalid_fails_on_other_field(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            assert_invalid(PtAddNote, {"text": "hi", "rank": "x"}, field="text", author=1)
        """,
    )
    result.assert_outcomes(failed=1)
    failure = "PtAddNote was invalid, but not on 'text': {'rank': ['Not a valid integer value.']}"
    assert f"E       Failed: {failure}" in result.stdout.lines


def test_assert_invalid_fails_on_other_message(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            assert_invalid(PtAddNote, {}, field="text", message="Give a text.", author=1)
        """,
    )
    result.assert_outcomes(failed=1)
    failure = "PtAddNote.text errors are ['This field is required.'], not 'Give a text.'"
    assert f"E       Failed: {failure}" in result.stdout.lines


def test_assert_invalid_unknown_field(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            with pytest.raises(ValueError) as info:
                assert_invalid(PtAddNote, {}, field="txt", author=1)
            assert str(info.value) == (
                "PtAddNote has no field 'txt' that input can set; use one of 'id', 'text', 'rank'."
            )
        """,
    )
    result.assert_outcomes(passed=1)


def test_assert_invalid_trusted_field(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            with pytest.raises(ValueError) as info:
                assert_invalid(PtAddNote, {}, field="author", author=1)
            assert str(info.value) == (
                "PtAddNote has no field 'author' that input can set; use one of 'id', 'text', 'rank'."
            )
        """,
    )
    result.assert_outcomes(passed=1)


def test_assert_invalid_hides_its_frame(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_it():
            assert_invalid(PtAddNote, {"text": "hi"}, field="text", author=1)
        """,
    )
    result.assert_outcomes(failed=1)
    # The traceback ends at the test's own line, not inside the helper.
    result.stdout.fnmatch_lines(['>       assert_invalid(PtAddNote, {"text": "hi"}, field="text", author=1)'])
    result.stdout.no_fnmatch_line("*flask_commands/*.py*")
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
