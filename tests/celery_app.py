"""The worker module of ``test_celery.py``: a Flask app with Celery, and the handlers its jobs name.

The tests start ``celery -A celery_app:celery_app worker`` with ``tests/`` on ``PYTHONPATH``, so
the worker imports this module under the same name as the test process (``import celery_app``)
and the handler names in the envelopes match. The environment says where things are:

- ``COMMANDS_TEST_BROKER``: the broker URL, empty for the embedded one (no app without it);
- ``COMMANDS_TEST_INSTANCE``: the Flask app's instance folder, where the embedded broker lives;
- ``COMMANDS_TEST_QUEUE``: the queue, also the prefix of Redis keys, unique per test run;
- ``COMMANDS_TEST_DATABASE``: the PostgreSQL URL of the idempotency store and the tables below;
- ``COMMANDS_TEST_RUN``: the suffix of the table names, unique per test run.

Handlers record what happened in tables the test process reads: ``runs`` (one row per run of a
handler, written outside its transaction, so failed runs count too), ``effects`` (the handler's
work, written in its transaction; deliberately without a unique constraint) and ``deliveries``
(one row per message the worker ran, from Celery's ``task_postrun`` signal, with its state).
"""

from __future__ import annotations

import os
import time
import typing as t
import uuid

import sqlalchemy as sa
import sqlalchemy.orm
from celery import signals as celery_signals
from flask import Flask
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import field
from flask_commands import handler
from flask_commands.celery import init_celery
from flask_commands.idempotency.sql import SQLAlchemyStore

if t.TYPE_CHECKING:
    import celery

DATABASE = os.environ.get("COMMANDS_TEST_DATABASE", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RUN = os.environ.get("COMMANDS_TEST_RUN", "local")
#: Seconds a claim is held: short, so the crash test waits out a dead worker's lease quickly.
LEASE = 4.0
#: Redis redelivers a message not acknowledged for this long (the crash test waits for it).
VISIBILITY_TIMEOUT = 5


class Tables(t.NamedTuple):
    metadata: sa.MetaData
    runs: sa.Table
    effects: sa.Table
    deliveries: sa.Table
    idempotency: str


def make_tables(run: str) -> Tables:
    """The tables of test run ``run``."""
    metadata = sa.MetaData()
    runs = sa.Table(
        f"celery_{run}_runs",
        metadata,
        sa.Column("command_id", sa.String(36), nullable=False, index=True),
        sa.Column("handler", sa.String(100), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
    )
    effects = sa.Table(
        f"celery_{run}_effects",
        metadata,
        sa.Column("command_id", sa.String(36), nullable=False, index=True),
    )
    deliveries = sa.Table(
        f"celery_{run}_deliveries",
        metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("task_id", sa.String(36), nullable=False, index=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
    )
    return Tables(metadata, runs, effects, deliveries, f"celery_{run}_idempotency")


def create_app(broker_url: str, queue: str, database: str, run: str, instance_path: str = "") -> Flask:
    """A Flask app with Flask-Commands on a PostgreSQL store and Celery on ``broker_url``.

    An empty ``broker_url`` means Celery's embedded broker, in ``instance_path``.
    """
    flask_app = Flask(__name__, instance_path=instance_path or None)
    flask_app.config["COMMANDS_IDEMPOTENCY_STORE"] = SQLAlchemyStore(
        database, table=make_tables(run).idempotency
    )
    flask_app.config["COMMANDS_IDEMPOTENCY_LEASE"] = LEASE
    options: dict[str, t.Any] = {}
    if broker_url.startswith("redis"):
        options = {
            "global_keyprefix": f"{queue}:",
            "visibility_timeout": VISIBILITY_TIMEOUT,
            # Look for messages to redeliver every second, not every 100 s.
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    flask_app.config["CELERY"] = {
        "broker_transport_options": options,
        "task_default_queue": queue,
        "worker_prefetch_multiplier": 1,
        "worker_enable_remote_control": False,
    }
    if broker_url:
        flask_app.config["CELERY"]["broker_url"] = broker_url
    Commands(flask_app)
    init_celery(flask_app)
    flask_app.teardown_appcontext(lambda exc: Session.remove())
    return flask_app


engine = sa.create_engine(DATABASE)
Session = sa.orm.scoped_session(sa.orm.sessionmaker(engine))
tables = make_tables(RUN)
# A forked pool process must not use the parent's connections.
os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))


class Job(Command):
    """The command every test handler takes."""

    label: str = field(validators=[v.Length(max=20)])
    #: ``flaky`` fails this many runs before it succeeds.
    failures: int = 0
    #: ``slow`` sleeps this long in its first run, inside its transaction.
    sleep: float = 0.0


class Other(Command):
    """A command no test handler takes."""

    label: str


def _ran(name: str, cmd: Job) -> int:
    """Record a run of handler ``name`` outside its transaction; return how many runs there were."""
    with engine.connect() as conn:
        conn.execute(sa.insert(tables.runs).values(command_id=str(cmd.id), handler=name, at=time.time()))
        count = conn.execute(
            sa.select(sa.func.count()).where(tables.runs.c.command_id == str(cmd.id))
        ).scalar_one()
        conn.commit()
    return int(count)


def _effect(cmd: Job) -> None:
    Session.execute(sa.insert(tables.effects).values(command_id=str(cmd.id)))


@handler(Job, transaction=Session)
def record(cmd: Job) -> None:
    """Write the effect."""
    _ran("record", cmd)
    _effect(cmd)


@handler(Job, transaction=Session)
def refuse(cmd: Job) -> None:
    """Refuse every command."""
    _ran("refuse", cmd)
    raise Conflict("Refused.", code="refused")


@handler(Job, transaction=Session, max_attempts=5, backoff=0.05)
def flaky(cmd: Job) -> None:
    """Fail ``cmd.failures`` runs, then write the effect."""
    run = _ran("flaky", cmd)
    if run <= cmd.failures:
        raise RuntimeError(f"failure {run}")
    _effect(cmd)


@handler(Job, transaction=Session, max_attempts=3, backoff=0.05)
def broken(cmd: Job) -> None:
    """Fail every run."""
    run = _ran("broken", cmd)
    raise RuntimeError(f"failure {run}")


@handler(Job, transaction=Session)
def slow(cmd: Job) -> None:
    """Write the effect, and in the first run sleep before committing it."""
    run = _ran("slow", cmd)
    _effect(cmd)
    if run == 1:
        time.sleep(cmd.sleep)


@handler(Job, transaction=Session)
def needs_parent(cmd: Job) -> None:
    """Fail unless the effect of the command whose id starts with ``label`` has committed."""
    _ran("needs_parent", cmd)
    parent_effects = sa.select(sa.func.count()).where(tables.effects.c.command_id.startswith(cmd.label))
    if not Session.execute(parent_effects).scalar_one():
        raise RuntimeError(f"the effect of {cmd.label}... has not committed")
    _effect(cmd)


@handler(Job, transaction=Session)
def parent(cmd: Job) -> None:
    """Write the effect, enqueue ``needs_parent`` in the transaction, then sleep before committing.

    The child's id is ``uuid5(cmd.id, "child")``, so the test can find it.
    """
    _ran("parent", cmd)
    _effect(cmd)
    needs_parent.enqueue(Job(id=uuid.uuid5(cmd.id, "child"), label=str(cmd.id)[:20]))
    time.sleep(cmd.sleep)


@celery_signals.task_postrun.connect
def _delivered(task_id: str, state: str, kwargs: dict[str, t.Any], **extra: t.Any) -> None:
    with engine.connect() as conn:
        attempt = kwargs.get("attempt", 1) if isinstance(kwargs, dict) else None
        conn.execute(sa.insert(tables.deliveries).values(task_id=task_id, state=state, attempt=attempt))
        conn.commit()


if "COMMANDS_TEST_BROKER" in os.environ:
    flask_app = create_app(
        os.environ["COMMANDS_TEST_BROKER"],
        os.environ["COMMANDS_TEST_QUEUE"],
        DATABASE,
        RUN,
        os.environ.get("COMMANDS_TEST_INSTANCE", ""),
    )
    celery_app: celery.Celery = flask_app.extensions["celery"]
