"""A command view served by gunicorn workers for the HTTP race tests (tests/test_one_transaction.py).

Configured by environment: ``RACE_URL`` (the database of the posts, the session and the store),
``RACE_POSTS`` and ``RACE_STORE`` (table names).
"""

from __future__ import annotations

import os
import time
import typing as t

import flask
import sqlalchemy as sa
from sqlalchemy import orm

from flask_commands import Command
from flask_commands import Commands
from flask_commands import SQLAlchemyStore
from flask_commands import command_view
from flask_commands import handler

URL = os.environ["RACE_URL"]
engine = sa.create_engine(URL)
posts = sa.Table(
    os.environ["RACE_POSTS"],
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(50)),
)
session = orm.scoped_session(orm.sessionmaker(engine))


class Post(Command):
    text: str


@handler(Post, transaction=session)
def post(cmd: Post) -> int:
    session.execute(posts.insert().values(text=cmd.text))
    time.sleep(0.2)  # long enough for duplicates to arrive while it runs
    return 1


app = flask.Flask(__name__)
app.config.update(
    COMMANDS_IDEMPOTENCY_STORE=SQLAlchemyStore(engine, table=os.environ["RACE_STORE"]),
    COMMANDS_IDEMPOTENCY_WAIT=30.0,
)
app.jinja_loader = __import__("jinja2").DictLoader({"form.html": "{{ form.text }}"})
Commands(app)
app.teardown_appcontext(lambda exc: session.remove())


@app.route("/posts", methods=["POST"])
@command_view(Post, post, template="form.html")
def create(result: int, cmd: Post) -> t.Any:
    if flask.request.is_json:
        return {"text": cmd.text}, 201
    return flask.redirect("/done", 303)
