"""Tests for the macros of ``commands/macros.html`` and the ``commands_macros`` Jinja global."""

from __future__ import annotations

import json
import re
import typing as t
from html import unescape

import flask
import jinja2
import pytest
import wtforms
from flask_wtf.csrf import CSRFProtect
from jinja2_fragments.flask import render_block
from werkzeug.datastructures import MultiDict
from wtforms import validators as v

from flask_commands import Command
from flask_commands import CommandInvalid
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import field
from flask_commands import htmx

IMPORT = (
    '{% from "commands/macros.html" import render_form, render_field, form_errors, flashes, htmx_script,'
    " commands_script %}"
)


class AddTodo(Command):
    title: str = field(validators=[v.InputRequired(), v.Length(max=200)], label="Title")
    note: str | None = field(default=None, description="Anything to remember.")
    order: int | None = None
    completed: bool = False
    actor_id: int = field(trusted=True)


@pytest.fixture
def app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.secret_key = "test"
    app.jinja_loader = jinja2.DictLoader(
        {"page.html": "<h1>page</h1>{% block form %}{{ commands_macros.render_form(form) }}{% endblock %}"}
    )
    Commands(app)
    return app


@pytest.fixture
def render(app: flask.Flask) -> t.Iterator[t.Callable[..., str]]:
    """Render a template string (with the macros imported) in a request to ``/todos/new?x=1``."""
    with app.test_request_context("/todos/new?x=1"):

        def render(source: str, **context: t.Any) -> str:
            return flask.render_template_string(IMPORT + source, **context)

        yield render


def invalid_form(data: dict[str, str]) -> wtforms.Form:
    with pytest.raises(CommandInvalid) as excinfo:
        AddTodo.build(flask.request.form.__class__(data), actor_id=1)
    form = excinfo.value.form
    assert form is not None
    return form


def input_tag(html: str, name: str) -> str:
    match = re.search(rf'<input [^>]*name="{name}"[^>]*>', html)
    assert match is not None, html
    return match.group(0)


# render_field


def test_render_field_label(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.title) }}", form=AddTodo.form())
    assert '<label for="title">Title</label>' in html
    assert 'id="title"' in input_tag(html, "title")


def test_render_field_wrapper(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.title) }}", form=AddTodo.form())
    assert html.strip().startswith('<div class="commands-field" id="title-field">')


def test_render_field_required_and_maxlength(render: t.Callable[..., str]) -> None:
    tag = input_tag(render("{{ render_field(form.title) }}", form=AddTodo.form()), "title")
    assert " required" in tag
    assert 'maxlength="200"' in tag


def test_render_field_optional_not_required(render: t.Callable[..., str]) -> None:
    tag = input_tag(render("{{ render_field(form.order) }}", form=AddTodo.form()), "order")
    assert "required" not in tag
    assert "maxlength" not in tag


def test_render_field_valid_no_aria_invalid(render: t.Callable[..., str]) -> None:
    tag = input_tag(render("{{ render_field(form.title) }}", form=AddTodo.form()), "title")
    assert "aria-invalid" not in tag
    assert "aria-describedby" not in tag


def test_render_field_errors_aria(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.title) }}", form=invalid_form({"title": ""}))
    tag = input_tag(html, "title")
    assert 'aria-invalid="true"' in tag
    assert 'aria-describedby="title-errors"' in tag
    assert re.search(
        r'<ul class="commands-field-errors" id="title-errors">\s*<li>This field is required.</li>', html
    )


def test_render_field_description(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.note) }}", form=AddTodo.form())
    assert '<p class="commands-field-description" id="note-description">Anything to remember.</p>' in html
    assert 'aria-describedby="note-description"' in input_tag(html, "note")


def test_render_field_description_and_errors(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.note) }}", form=invalid_form({"note": "x" * 2, "title": ""}))
    assert "aria-invalid" not in input_tag(html, "note")
    form = invalid_form({"title": ""})
    form.note.errors = ["Too dull."]
    html = render("{{ render_field(form.note) }}", form=form)
    assert 'aria-describedby="note-description note-errors"' in input_tag(html, "note")


def test_render_field_escapes_errors_and_values(render: t.Callable[..., str]) -> None:
    form = invalid_form({"title": "<b>x</b>" * 40})
    form.title.errors = ["<i>bad</i>"]
    html = render("{{ render_field(form.title) }}", form=form)
    assert "<b>" not in html
    assert "<i>" not in html
    assert "&lt;i&gt;bad&lt;/i&gt;" in html


def test_render_field_live(render: t.Callable[..., str]) -> None:
    tag = input_tag(render("{{ render_field(form.title) }}", form=AddTodo.form()), "title")
    assert 'hx-post="/todos/new?x=1"' in tag
    # ``input``: arrow, Shift and Enter keys send nothing; the blur's ``change`` waits so that a click
    # on the submit button sends the submission alone (the validation is cancelled meanwhile).
    assert 'hx-trigger="change delay:250ms, input delay:400ms"' in tag
    # commands.js drops a marked field's validation while its form is being submitted; no inline
    # handler (hx-on needs 'unsafe-eval' in a Content-Security-Policy).
    assert " data-commands-live " in tag
    assert "hx-on" not in tag
    assert 'hx-target="closest .commands-field"' in tag
    assert 'hx-swap="outerHTML"' in tag
    headers = re.search(r'hx-headers="([^"]+)"', tag)
    assert headers is not None
    decoded = json.loads(unescape(headers.group(1)))
    assert decoded.pop("X-Commands-Render")  # the signed render arguments, see test_views
    assert decoded == {"X-Commands-Validate": "title"}


def test_render_field_live_off(render: t.Callable[..., str]) -> None:
    tag = input_tag(render("{{ render_field(form.title, live=false) }}", form=AddTodo.form()), "title")
    assert "hx-" not in tag


def test_render_field_live_url(render: t.Callable[..., str]) -> None:
    tag = input_tag(render("{{ render_field(form.title, url='/check') }}", form=AddTodo.form()), "title")
    assert 'hx-post="/check"' in tag


def test_render_field_extra_attributes(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.title, placeholder='Milk', autofocus=true) }}", form=AddTodo.form())
    tag = input_tag(html, "title")
    assert 'placeholder="Milk"' in tag
    assert " autofocus" in tag


def test_render_field_checkbox_before_label(render: t.Callable[..., str]) -> None:
    html = render("{{ render_field(form.completed) }}", form=AddTodo.form())
    assert html.index('type="checkbox"') < html.index("<label")


# render_form


def test_render_form_posts_back_and_swaps_itself(render: t.Callable[..., str]) -> None:
    html = render("{{ render_form(form) }}", form=AddTodo.form())
    tag = html[html.index("<form") : html.index(">", html.index("<form"))]
    assert 'method="post"' in tag
    assert 'action="/todos/new?x=1"' in tag
    assert 'hx-post="/todos/new?x=1"' in tag
    assert 'hx-target="this"' in tag
    assert 'hx-swap="outerHTML"' in tag


def test_render_form_disables_submit_in_flight(render: t.Callable[..., str]) -> None:
    assert 'hx-disable="find [type=submit]"' in render("{{ render_form(form) }}", form=AddTodo.form())


def test_render_form_novalidate_default(render: t.Callable[..., str]) -> None:
    assert " novalidate>" in render("{{ render_form(form) }}", form=AddTodo.form())


def test_render_form_novalidate_off(render: t.Callable[..., str]) -> None:
    assert "novalidate" not in render("{{ render_form(form, novalidate=false) }}", form=AddTodo.form())


def test_render_form_options(render: t.Callable[..., str]) -> None:
    html = render(
        "{{ render_form(form, action='/todos', submit='Add', target='#box', swap='innerHTML', id='f') }}",
        form=AddTodo.form(),
    )
    assert 'action="/todos"' in html
    assert 'hx-post="/todos"' in html
    assert 'hx-target="#box"' in html
    assert 'hx-swap="innerHTML"' in html
    assert 'id="f"' in html
    assert '<button type="submit">Add</button>' in html
    assert 'hx-post="/todos"' in input_tag(html, "title")


def test_render_form_hidden_id(render: t.Callable[..., str]) -> None:
    form = AddTodo.form()
    html = render("{{ render_form(form) }}", form=form)
    # No id attribute: several forms on one page would repeat it.
    assert f'<input name="id" type="hidden" value="{form.id.data}">' in html
    assert '<label for="id"' not in html


def test_render_form_two_forms_repeat_no_id(render: t.Callable[..., str]) -> None:
    html = render("{{ render_form(a) }}{{ render_form(b) }}", a=AddTodo.form(), b=AddTodo.form())
    ids = re.findall(r' id="([^"]+)"', html)
    assert "id" not in ids


def test_render_form_fields_in_order(render: t.Callable[..., str]) -> None:
    html = render("{{ render_form(form) }}", form=AddTodo.form())
    positions = [html.index(f'id="{name}-field"') for name in ("title", "note", "order", "completed")]
    assert positions == sorted(positions)
    assert "actor_id" not in html


def test_render_form_no_errors_no_alert(render: t.Callable[..., str]) -> None:
    assert 'role="alert"' not in render("{{ render_form(form) }}", form=AddTodo.form())


def test_render_form_form_errors_alert(render: t.Callable[..., str]) -> None:
    form = AddTodo.form()
    form.form_errors.append("Todos are closed on Sundays.")
    html = render("{{ render_form(form) }}", form=form)
    assert re.search(
        r'<div class="commands-errors" role="alert">\s*<p>Todos are closed on Sundays.</p>', html
    )


def test_render_form_hidden_id_errors_alert(render: t.Callable[..., str]) -> None:
    html = render("{{ render_form(form) }}", form=invalid_form({"title": "Milk", "id": "nope"}))
    assert re.search(r'role="alert">\s*<p>Invalid UUID.</p>', html)


def posted(data: dict[str, str]) -> wtforms.Form:
    """An ``AddTodo`` form bound to a post, as a view re-renders it."""
    return AddTodo.Form(formdata=MultiDict(data))


def test_render_form_shows_conflict_flash(render: t.Callable[..., str]) -> None:
    flask.flash("A todo with that title exists.", "conflict")
    html = render("{{ render_form(form) }}", form=posted({"title": "Milk"}))
    assert re.search(r'role="alert">\s*<p>A todo with that title exists.</p>', html)


def test_render_form_fresh_form_leaves_the_conflict_to_the_posted_one(render: t.Callable[..., str]) -> None:
    flask.flash("A todo with that title exists.", "conflict")
    html = render(
        "{{ render_form(fresh) }}{{ render_form(form) }}", fresh=AddTodo.form(), form=posted({"title": "x"})
    )
    assert html.count("A todo with that title exists.") == 1
    assert html.index("A todo with that title exists.") > html.index("</form>")


def test_render_form_no_csrf_without_csrfprotect(render: t.Callable[..., str]) -> None:
    html = render("{{ render_form(form) }}", form=AddTodo.form())
    assert "csrf_token" not in html
    assert "X-CSRFToken" not in html


def test_render_form_csrf_token(app: flask.Flask) -> None:
    CSRFProtect(app)
    with app.test_request_context("/todos/new"):
        html = flask.render_template_string(IMPORT + "{{ render_form(form) }}", form=AddTodo.form())
        match = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', html)
        assert match is not None, html
        token = match.group(1)
        form_tag = html[html.index("<form") : html.index(">", html.index("<form"))]
        assert f'hx-headers=\'{{"X-CSRFToken": "{token}"}}\'' in form_tag
        headers = re.search(r'hx-headers="([^"]+)"', input_tag(html, "title"))
        assert headers is not None
        decoded = json.loads(unescape(headers.group(1)))
        assert decoded.pop("X-Commands-Render")
        assert decoded == {"X-Commands-Validate": "title", "X-CSRFToken": token}


def test_render_form_csrf_custom_names(app: flask.Flask) -> None:
    app.config["WTF_CSRF_FIELD_NAME"] = "_token"
    app.config["WTF_CSRF_HEADERS"] = ["X-XSRF-Token"]
    CSRFProtect(app)
    with app.test_request_context("/todos/new"):
        html = flask.render_template_string(IMPORT + "{{ render_form(form) }}", form=AddTodo.form())
    assert 'name="_token"' in html
    assert "X-XSRF-Token" in html


def test_render_form_csrf_disabled(app: flask.Flask) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    CSRFProtect(app)
    with app.test_request_context("/todos/new"):
        html = flask.render_template_string(IMPORT + "{{ render_form(form) }}", form=AddTodo.form())
    assert "csrf" not in html.lower()


# flashes


def test_flashes_none(render: t.Callable[..., str]) -> None:
    assert render("{{ flashes() }}").strip() == ""


def test_flashes_messages(render: t.Callable[..., str]) -> None:
    flask.flash("Saved.", "success")
    flask.flash("<b>Careful</b>")
    html = render("{{ flashes() }}")
    assert '<div class="commands-flashes" role="status">' in html
    assert '<p class="commands-flash commands-flash-success">Saved.</p>' in html
    assert '<p class="commands-flash commands-flash-message">&lt;b&gt;Careful&lt;/b&gt;</p>' in html


def test_flashes_shown_once(render: t.Callable[..., str]) -> None:
    flask.flash("A todo with that title exists.", "conflict")
    html = render("{{ flashes() }}{{ render_form(form) }}{{ flashes() }}", form=AddTodo.form())
    assert html.count("A todo with that title exists.") == 1


def test_flashes_categories(render: t.Callable[..., str]) -> None:
    flask.flash("Saved.", "success")
    flask.flash("Oops.", "error")
    html = render("{{ flashes(['error']) }}")
    assert "Oops." in html
    assert "Saved." not in html


# htmx_script


def test_htmx_script(render: t.Callable[..., str]) -> None:
    assert render("{{ htmx_script() }}") == (
        f'<script src="/_commands/static/{htmx.HTMX_FILENAME}" integrity="{htmx.htmx_integrity()}"'
        ' crossorigin="anonymous"></script>\n<script src="/_commands/static/commands.js"></script>'
    )


def test_commands_script(render: t.Callable[..., str]) -> None:
    assert render("{{ commands_script() }}") == '<script src="/_commands/static/commands.js"></script>'


def test_commands_script_is_served(app: flask.Flask) -> None:
    response = app.test_client().get("/_commands/static/commands.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert b'"htmx:before:request"' in response.data
    response.close()


# The commands_macros global


def test_global_without_import(app: flask.Flask) -> None:
    with app.test_request_context("/todos/new"):
        html = flask.render_template_string("{{ commands_macros.render_form(form) }}", form=AddTodo.form())
    assert 'hx-post="/todos/new"' in html


def test_global_in_a_block_rendered_alone(app: flask.Flask) -> None:
    CSRFProtect(app)
    with app.test_request_context("/todos/new"):
        flask.flash("Taken.", "conflict")
        html = render_block("page.html", "form", form=posted({"title": "Milk"}))
    assert "<h1>" not in html
    assert html.strip().startswith("<form")
    assert 'name="csrf_token"' in html
    assert "Taken." in html


def test_global_unknown_macro(app: flask.Flask) -> None:
    with app.test_request_context("/"):
        assert flask.render_template_string("{{ commands_macros.nope is defined }}") == "False"


def test_global_repr(app: flask.Flask) -> None:
    assert repr(app.jinja_env.globals["commands_macros"]) == "<commands_macros from 'commands/macros.html'>"


def test_render_form_chosen_fields_attrs_and_caller(render: t.Callable[..., str]) -> None:
    source = (
        '{% call render_form(form, submit="Add", submit_class="button primary", fields=["title"],'
        ' attrs={"title": {"placeholder": "Buy milk", "autofocus": true}}) %}'
        '<p class="hint"></p>{% endcall %}'
    )
    html = render(source, form=AddTodo.form())
    tag = input_tag(html, "title")
    assert 'placeholder="Buy milk"' in tag
    assert "autofocus" in tag
    assert 'name="order"' not in html
    assert 'name="note"' not in html
    assert (
        '<button type="submit" class="button primary">Add</button>\n  <p class="hint"></p>\n</form>' in html
    )


def test_render_form_shows_errors_of_fields_left_out(render: t.Callable[..., str]) -> None:
    form = invalid_form({"title": "Milk", "order": "x"})
    html = render('{{ render_form(form, fields=["title"]) }}', form=form)
    alert = html[html.index('<div class="commands-errors" role="alert">') :]
    assert "Not a valid integer value." in alert[: alert.index("</div>")]


class EditTodo(Command):
    title: str = field(validators=[v.InputRequired()], label="Title")
    version: int = field()
    todo_id: int = field(trusted=True)


def test_render_form_hidden_renders_a_field_as_a_hidden_input(render: t.Callable[..., str]) -> None:
    html = render('{{ render_form(form, hidden=["version"]) }}', form=EditTodo.form({"version": 3}))
    assert '<input name="version" type="hidden" value="3">' in html
    assert 'id="version-field"' not in html
    assert '<label for="version"' not in html


def test_render_form_hidden_field_errors_alert(render: t.Callable[..., str]) -> None:
    form = EditTodo.Form(formdata=MultiDict({"title": "Milk", "version": "x"}))
    form.validate()
    html = render('{{ render_form(form, hidden=["version"]) }}', form=form)
    assert re.search(r'role="alert">\s*<p>Not a valid integer value.</p>', html)


def test_render_form_hidden_field_takes_the_conflicts_current_value(render: t.Callable[..., str]) -> None:
    form = EditTodo.Form(formdata=MultiDict({"title": "Soy milk", "version": "1"}))
    form.commands_conflict = Conflict("Changed.", code="stale", current={"title": "Oat milk", "version": 2})
    html = render('{{ render_form(form, hidden=["version"]) }}', form=form)
    assert '<input name="version" type="hidden" value="2">' in html  # saving again saves over it
    assert 'value="Soy milk"' in input_tag(html, "title")  # what the user typed


def test_render_form_button_form(render: t.Callable[..., str]) -> None:
    source = (
        '{% set icon %}<svg aria-hidden="true"></svg>{% endset %}'
        '{{ render_form(form, fields=[], hidden=["version"], submit=icon, class="toggle",'
        ' form_attrs={"aria-label": "Toggle", "data-x": none},'
        ' submit_attrs={"id": "toggle-1", "name": "completed", "value": "y", "aria-pressed": "false",'
        ' "autofocus": true, "disabled": false}) }}'
    )
    html = render(source, form=EditTodo.form({"version": 1}))
    assert 'novalidate aria-label="Toggle">' in html
    assert "data-x" not in html
    assert 'name="title"' not in html
    assert (
        '<button type="submit" id="toggle-1" name="completed" value="y" aria-pressed="false" autofocus>'
        '<svg aria-hidden="true"></svg></button>'
    ) in html


def test_render_form_submit_attrs_are_escaped(render: t.Callable[..., str]) -> None:
    html = render(
        "{{ render_form(form, submit=text, submit_attrs={'aria-label': label}) }}",
        form=AddTodo.form(),
        text="<b>",
        label='"><script>',
    )
    assert 'aria-label="&#34;&gt;&lt;script&gt;">&lt;b&gt;</button>' in html


def test_form_errors_of_a_form_without_visible_fields(render: t.Callable[..., str]) -> None:
    form = EditTodo.Form(formdata=MultiDict({"title": "Milk", "version": "x"}))
    form.validate()
    form.form_errors.append("Closed on Sundays.")
    html = render("{{ form_errors(form, fields=[]) }}", form=form)
    assert re.search(
        r'<div class="commands-errors" role="alert">\s*<p>Closed on Sundays.</p>\s*'
        r"<p>Not a valid integer value.</p>\s*</div>",
        html,
    ), html


def test_form_errors_none(render: t.Callable[..., str]) -> None:
    assert render("{{ form_errors(form) }}", form=AddTodo.form()).strip() == ""
