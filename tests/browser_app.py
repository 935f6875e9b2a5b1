"""A tiny app for the browser tests: one command form, the macros, vendored htmx and CSRFProtect."""

from __future__ import annotations

import secrets

import flask
import jinja2
from flask_wtf.csrf import CSRFProtect
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands import htmx

INDEX = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Notes</title>
  {{ commands_macros.htmx_script() }}
</head>
<body>
  <h1>Notes</h1>
  {{ commands_macros.flashes() }}
  <ul id="notes">{% for note in notes %}<li>{{ note }}</li>{% endfor %}</ul>
  {% block new_note %}{{ commands_macros.render_form(form, submit="Add") }}{% endblock %}
</body>
</html>
"""

SAVED = '<p id="saved">Saved {{ title }}.</p>'


class AddNote(Command):
    title: str = field(validators=[v.InputRequired(), v.Length(max=20)], label="Title")


#: The titles of the notes added, in order.
NOTES: list[str] = []


@handler(AddNote)
def add_note(cmd: AddNote) -> str:
    if cmd.title == "taken":
        raise Conflict("A note with that title exists.", code="duplicate_title")
    NOTES.append(cmd.title)
    return cmd.title


def create_app() -> flask.Flask:
    """Return the app: ``/`` shows the notes and the form to add one."""
    app = flask.Flask(__name__)
    app.secret_key = secrets.token_hex()
    app.jinja_loader = jinja2.DictLoader({"index.html": INDEX})
    CSRFProtect(app)
    Commands(app)

    @app.context_processor
    def notes() -> dict[str, list[str]]:
        return {"notes": NOTES}

    @app.route("/", methods=["GET", "POST"])
    @command_view(AddNote, add_note, template="index.html", block="new_note")
    def index(result: str, cmd: AddNote) -> flask.typing.ResponseReturnValue:
        if htmx.details():
            return flask.render_template_string(SAVED, title=result)
        return flask.redirect(flask.url_for("index"))

    return app
