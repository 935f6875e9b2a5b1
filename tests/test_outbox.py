"""Transactional enqueue: the outbox on SQLite, PostgreSQL and MariaDB, with Redis as the broker.

Messages are counted on the broker itself (a Redis list per queue, no worker), so "nothing sent"
and "exactly one sent" are facts about the broker. The broker is reached through a small TCP
proxy the tests cut to make it unreachable; the shared Redis server is never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import typing as t
import uuid

import celery.signals
import flask
import pytest
import redis
import sqlalchemy as sa
import sqlalchemy.orm
from click.testing import CliRunner
from conftest import _sqlite_transactions
from conftest import require_service

from flask_commands import Command
from flask_commands import Commands
from flask_commands import handler
from flask_commands import outbox
from flask_commands.celery import init_celery
from flask_commands.cli import commands_cli


class Proxy:
    """A TCP proxy to ``target`` on a fixed local port; ``cut()`` refuses and drops connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            if self.listener is not None:
                # Shut down first: close() alone leaves a thread blocked in accept() accepting.
                with contextlib.suppress(OSError):
                    self.listener.shutdown(socket.SHUT_RDWR)
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()


class Job(Command):
    """The command the test jobs carry."""

    label: str


@dataclasses.dataclass
class Env:
    """A Flask app whose Celery publishes to Redis through ``proxy``, and a database."""

    app: flask.Flask
    engine: sa.Engine
    session: sa.orm.scoped_session[sa.orm.Session]
    items: sa.Table
    queue: str
    redis: redis.Redis
    proxy: Proxy

    def messages(self) -> list[str]:
        """The task ids of the messages waiting in the queue, oldest first."""
        raw = self.redis.lrange(self.queue, 0, -1)
        return [json.loads(m)["headers"]["id"] for m in reversed(raw)]

    def outbox_rows(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(outbox.table.c.task_id).order_by(outbox.table.c.id)))

    def outbox_rows_once_deleted(self) -> list[str]:
        """The task ids left in the outbox once the rows published after a commit are deleted."""
        deadline = time.monotonic() + 10
        while (rows := self.outbox_rows()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return rows

    def items_of(self, label: str) -> int:
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(self.items.c.label == label)
            return int(conn.execute(query).scalar_one())


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def env(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> t.Iterator[Env]:
    redis_url = require_service("redis")
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'outbox.sqlite'}")
        _sqlite_transactions(engine)
    else:
        engine = sa.create_engine(require_service(request.param))
    run = uuid.uuid4().hex[:10]
    metadata = sa.MetaData()
    items = sa.Table(f"outbox_{run}_items", metadata, sa.Column("label", sa.String(50)))
    metadata.create_all(engine)
    outbox.create_table(engine)
    with engine.begin() as conn:
        conn.execute(outbox.table.delete())
    client = redis.Redis.from_url(redis_url)
    where = client.connection_pool.connection_kwargs
    host, port, db = where["host"], where["port"], where.get("db", 0)
    proxy = Proxy((host, port))
    queue = f"outbox-{run}"
    app = flask.Flask(__name__)
    app.config["CELERY"] = {
        "broker_url": f"redis://127.0.0.1:{proxy.port}/{db}",
        "task_default_queue": queue,
        # Give up on a cut broker at once rather than after kombu's retries (seconds each).
        "broker_transport_options": {"max_retries": 0},
        "broker_connection_timeout": 1,
    }
    Commands(app)
    init_celery(app)
    session = sa.orm.scoped_session(sa.orm.sessionmaker(engine))
    try:
        with app.app_context():
            yield Env(app, engine, session, items, queue, client, proxy)
    finally:
        session.remove()
        proxy.cut()
        client.delete(queue)
        client.close()
        with engine.begin() as conn:
            conn.execute(outbox.table.delete())
        metadata.drop_all(engine)
        engine.dispose()


def _handlers(env: Env) -> types.SimpleNamespace:
    """Handlers on ``env``'s session: ``job`` (the job itself) and ``add`` (writes and enqueues)."""

    @handler(Job, transaction=env.session)
    def job(cmd: Job) -> None:
        env.session.execute(env.items.insert().values(label=f"job {cmd.label}"))

    @handler(Job, transaction=env.session)
    def add(cmd: Job) -> str:
        env.session.execute(env.items.insert().values(label=cmd.label))
        task_id = job.enqueue(cmd)
        if cmd.label.startswith("fail"):
            raise RuntimeError("the handler fails after enqueueing")
        return task_id

    return types.SimpleNamespace(job=job, add=add)


def test_outbox_rollback_sends_nothing(env: Env) -> None:
    h = _handlers(env)
    with pytest.raises(RuntimeError, match="fails after enqueueing"):
        h.add(Job(label="fail"))
    assert env.messages() == []
    assert env.outbox_rows() == []
    assert env.items_of("fail") == 0


def test_outbox_commit_sends_one_after_commit(env: Env) -> None:
    h = _handlers(env)
    cmd = Job(label="ok")
    seen: list[int] = []

    def before_publish(**kwargs: t.Any) -> None:
        # Another connection sees the handler's row when the message leaves: it was committed.
        seen.append(env.items_of("ok"))

    celery.signals.before_task_publish.connect(before_publish)
    try:
        assert h.add(cmd) == str(cmd.id)
    finally:
        celery.signals.before_task_publish.disconnect(before_publish)
    assert seen == [1]
    assert env.messages() == [str(cmd.id)]
    assert env.outbox_rows_once_deleted() == []


def test_outbox_several_jobs_leave_in_order(env: Env) -> None:
    h = _handlers(env)
    cmds = [Job(label=f"batch {i}") for i in range(3)]

    @handler(Job, transaction=env.session)
    def batch(cmd: Job) -> None:
        for each in cmds:
            h.job.enqueue(each)
        assert env.messages() == []  # nothing before the commit

    batch(Job(label="batch"))
    assert env.messages() == [str(cmd.id) for cmd in cmds]
    assert env.outbox_rows_once_deleted() == []


def test_outbox_nested_failure_drops_its_job(env: Env) -> None:
    h = _handlers(env)
    outer_cmd, inner_cmd = Job(label="outer"), Job(label="fail inner")

    @handler(Job, transaction=env.session)
    def outer(cmd: Job) -> None:
        h.job.enqueue(cmd)
        with pytest.raises(RuntimeError):
            h.add(inner_cmd)  # a savepoint: rolled back, with its outbox row

    outer(outer_cmd)
    assert env.messages() == [str(outer_cmd.id)]
    assert env.outbox_rows_once_deleted() == []


def test_outbox_nested_job_waits_for_outer_commit(env: Env) -> None:
    h = _handlers(env)
    inner_cmd = Job(label="inner")
    sent_during: list[list[str]] = []

    @handler(Job, transaction=env.session)
    def outer(cmd: Job) -> None:
        h.add(inner_cmd)
        sent_during.append(env.messages())
        raise RuntimeError("the outer handler fails")

    with pytest.raises(RuntimeError, match="outer handler fails"):
        outer(Job(label="outer"))
    assert sent_during == [[]]
    assert env.messages() == []
    assert env.outbox_rows() == []
    assert env.items_of("inner") == 0


def test_outbox_closed_session_drops_its_jobs(env: Env) -> None:
    h = _handlers(env)

    @handler(Job, transaction=env.session)
    def discarding(cmd: Job) -> None:
        h.job.enqueue(cmd)
        env.session.close()  # the transaction, its row and its job are gone

    discarding(Job(label="closed"))  # commits a new, empty transaction
    assert env.messages() == []
    assert env.outbox_rows() == []


def test_outbox_outside_unit_of_work_sends_at_once(env: Env) -> None:
    h = _handlers(env)
    cmd = Job(label="direct")
    assert h.job.enqueue(cmd) == str(cmd.id)
    assert env.messages() == [str(cmd.id)]
    assert env.outbox_rows() == []


def test_outbox_countdown_kept_as_eta(env: Env) -> None:
    h = _handlers(env)
    env.proxy.cut()

    @handler(Job, transaction=env.session)
    def later(cmd: Job) -> None:
        h.job.enqueue(cmd, countdown=30)

    later(Job(label="later"))
    with env.engine.connect() as conn:
        row = conn.execute(sa.select(outbox.table.c.eta, outbox.table.c.created_at)).one()
    assert row.eta == pytest.approx(row.created_at + 30, abs=1)


def test_outbox_broker_down_request_succeeds_and_relay_publishes(env: Env) -> None:
    h = _handlers(env)
    env.proxy.cut()
    cmds = [Job(label=f"down {i}") for i in range(3)]
    for cmd in cmds:
        assert h.add(cmd) == str(cmd.id)
    assert env.outbox_rows() == [str(cmd.id) for cmd in cmds]
    with pytest.raises(RuntimeError, match="the broker refused a job after 0 were published"):
        outbox.relay(env.engine, env.app.extensions["celery"], grace=0)
    assert len(env.outbox_rows()) == 3
    env.proxy.restore()
    assert outbox.relay(env.engine, env.app.extensions["celery"], grace=0) == 3
    # Oldest first.
    assert env.messages() == [str(cmd.id) for cmd in cmds]
    assert env.outbox_rows() == []
    assert outbox.relay(env.engine, env.app.extensions["celery"], grace=0) == 0


def test_outbox_relay_limit(env: Env) -> None:
    h = _handlers(env)
    env.proxy.cut()
    cmds = [Job(label=f"limit {i}") for i in range(5)]
    for cmd in cmds:
        h.add(cmd)
    env.proxy.restore()
    assert outbox.relay(env.engine, env.app.extensions["celery"], limit=2, grace=0) == 2
    assert env.messages() == [str(cmd.id) for cmd in cmds[:2]]
    assert len(env.outbox_rows()) == 3


def test_outbox_missing_table_names_the_fix(env: Env) -> None:
    h = _handlers(env)
    with env.engine.begin() as conn:
        outbox.table.drop(conn)
    outbox._checked.discard(env.engine)
    try:
        with pytest.raises(RuntimeError) as info:
            h.add(Job(label="no table"))
        message = str(info.value)
        assert "has no 'commands_outbox' table for transactional enqueue" in message
        assert "run 'flask commands init-db', call 'Commands.create_tables()'" in message
        assert "flask_commands.outbox.table to your Alembic migrations" in message
        assert env.items_of("no table") == 0
        assert env.messages() == []
    finally:
        outbox.create_table(env.engine)


def test_outbox_old_table_without_headers_names_the_fix(env: Env) -> None:
    h = _handlers(env)
    old = sa.MetaData()
    sa.Table(
        outbox.TABLE_NAME,
        old,
        *(column._copy() for column in outbox.table.columns if column.name != "headers"),
        sqlite_autoincrement=True,
    )
    with env.engine.begin() as conn:
        outbox.table.drop(conn)
    old.create_all(env.engine)
    outbox._checked.discard(env.engine)
    try:
        with pytest.raises(RuntimeError) as info:
            h.add(Job(label="old table"))
        message = str(info.value)
        assert message.startswith("The 'commands_outbox' table of the database ")
        assert message.endswith(
            " has no 'headers' column (it was made by an earlier version); run 'flask commands"
            " init-db' or 'Commands.create_tables()', which add it, or add it in an Alembic migration."
        )
        assert env.items_of("old table") == 0
        outbox.create_table(env.engine)  # adds the column
        cmd = Job(label="migrated")
        h.add(cmd)
        assert env.messages() == [str(cmd.id)]
    finally:
        with env.engine.begin() as conn:
            outbox.table.drop(conn)
        outbox.create_table(env.engine)


def test_outbox_relay_leaves_fresh_rows_to_their_process(env: Env) -> None:
    h = _handlers(env)
    env.proxy.cut()
    cmd = Job(label="fresh")
    h.add(cmd)
    env.proxy.restore()
    celery_app = env.app.extensions["celery"]
    assert outbox.relay(env.engine, celery_app) == 0  # younger than outbox.GRACE
    assert env.outbox_rows() == [str(cmd.id)]
    with env.engine.begin() as conn:
        conn.execute(outbox.table.update().values(created_at=outbox.table.c.created_at - outbox.GRACE - 1))
    assert outbox.relay(env.engine, celery_app) == 1
    assert env.messages() == [str(cmd.id)]
    assert env.outbox_rows() == []


def test_outbox_relay_grace_negative(env: Env) -> None:
    with pytest.raises(ValueError, match="grace must") as info:
        outbox.relay(env.engine, env.app.extensions["celery"], grace=-1)
    assert info.value.args == ("grace must be a number of seconds, 0 or more, not -1.",)


def test_outbox_publishes_from_memory_and_deletes_together(env: Env) -> None:
    h = _handlers(env)
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if outbox.TABLE_NAME in statement:
            statements.append(statement.split()[0].upper())

    sa.event.listen(env.engine, "before_cursor_execute", record)
    try:
        cmds = [Job(label=f"together {i}") for i in range(10)]
        for cmd in cmds:
            h.add(cmd)
        assert env.messages() == [str(cmd.id) for cmd in cmds]
        published = list(statements)
        assert env.outbox_rows_once_deleted() == []
    finally:
        sa.event.remove(env.engine, "before_cursor_execute", record)
    # No claim before a publish, and one DELETE for the rows published within a moment (the
    # count allows for a slow machine splitting them).
    assert published.count("INSERT") == 10
    assert "SELECT" not in published
    assert 1 <= statements.count("DELETE") < 10


def _traced(env: Env) -> tuple[t.Any, str]:
    """A span made current by an OpenTelemetry SDK tracer, and its ``traceparent``."""
    from opentelemetry.sdk.trace import TracerProvider

    span = TracerProvider().get_tracer("test").start_span("request")
    context = span.get_span_context()
    return span, f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_outbox_published_after_commit_with_the_enqueue_trace_context(env: Env) -> None:
    from opentelemetry import trace

    h = _handlers(env)
    span, traceparent = _traced(env)
    with trace.use_span(span, end_on_exit=True):
        h.add(Job(label="traced"))
    [message] = env.redis.lrange(env.queue, 0, -1)
    assert json.loads(message)["headers"]["traceparent"] == traceparent


def test_outbox_relayed_with_the_enqueue_trace_context(env: Env) -> None:
    from opentelemetry import trace

    h = _handlers(env)
    span, traceparent = _traced(env)
    env.proxy.cut()
    with trace.use_span(span, end_on_exit=True):
        h.add(Job(label="traced"))
    env.proxy.restore()
    assert outbox.relay(env.engine, env.app.extensions["celery"], grace=0) == 1  # no span current
    [message] = env.redis.lrange(env.queue, 0, -1)
    assert json.loads(message)["headers"]["traceparent"] == traceparent


def test_outbox_cli_relay(env: Env) -> None:
    h = _handlers(env)
    env.proxy.cut()
    cmd = Job(label="cli")
    h.add(cmd)
    url = env.engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    args = ["relay", "--database", url, "--grace", "0"]
    result = runner.invoke(commands_cli, args, obj=_script_info(env.app))
    assert result.exit_code == 1
    assert "Could not relay the outbox of " in result.output
    env.proxy.restore()
    result = runner.invoke(commands_cli, args, obj=_script_info(env.app))
    assert result.exit_code == 0, result.output
    assert result.output.endswith("Published 1 job from the outbox.\n")
    assert env.messages() == [str(cmd.id)]


def _script_info(app: flask.Flask) -> t.Any:
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


def test_outbox_celery_relay_task(env: Env) -> None:
    h = _handlers(env)
    env.proxy.cut()
    cmd = Job(label="sweep")
    h.add(cmd)
    env.proxy.restore()
    task = env.app.extensions["celery"].tasks["flask_commands.relay_outbox"]
    url = env.engine.url.render_as_string(hide_password=False)
    assert task(databases=[url], grace=0) == 1
    assert env.messages() == [str(cmd.id)]
    assert env.outbox_rows() == []
    assert task(databases=[url], grace=0) == 0


# Crashes and races, in real processes.

_CHILD = """
import os, signal, sys, time
import flask, sqlalchemy as sa, sqlalchemy.orm
from flask_commands import Command, Commands, handler
from flask_commands.celery import init_celery

database, broker, queue, mode, count = sys.argv[1:6]
engine = sa.create_engine(database)
if mode == "crash":
    # Registered before the outbox's own listener: the process dies after the commit, before
    # anything is published.
    @sa.event.listens_for(sa.orm.Session, "after_commit")
    def _die(session):
        os.kill(os.getpid(), signal.SIGKILL)
from flask_commands import outbox

app = flask.Flask("child")
app.config["CELERY"] = {"broker_url": broker, "task_default_queue": queue}
Commands(app)
init_celery(app)
session = sa.orm.scoped_session(sa.orm.sessionmaker(engine))

class Job(Command):
    label: str

@handler(Job, transaction=session)
def job(cmd):
    pass

@handler(Job, transaction=session)
def add(cmd):
    job.enqueue(cmd)

with app.app_context():
    if mode == "crash":
        add(Job(label="crash"))
        print("not killed", flush=True)
    else:
        print("ready", flush=True)
        sys.stdin.readline()
        print(outbox.relay(engine, app.extensions["celery"]), flush=True)
"""


def _child(env: Env, mode: str) -> subprocess.Popen[str]:
    url = env.engine.url.render_as_string(hide_password=False)
    where = env.redis.connection_pool.connection_kwargs
    broker = f"redis://{where['host']}:{where['port']}/{where.get('db', 0)}"
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, broker, env.queue, mode, "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_outbox_sigkill_between_commit_and_publish(env: Env) -> None:
    child = _child(env, "crash")
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    assert "not killed" not in out
    [task_id] = env.outbox_rows()
    assert env.messages() == []
    assert outbox.relay(env.engine, env.app.extensions["celery"], grace=0) == 1
    assert env.messages() == [task_id]
    assert env.outbox_rows() == []


@pytest.mark.slow
def test_outbox_two_relays_race_over_1000_rows(env: Env) -> None:
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    envelope = json.dumps({"type": "x", "handler": "y", "command": {}})
    with env.engine.begin() as conn:
        conn.execute(
            outbox.table.insert(),
            [
                {"task_id": i, "queue": env.queue, "envelope": envelope, "eta": None, "created_at": 0.0}
                for i in ids
            ],
        )
    relays = [_child(env, "relay") for _ in range(2)]
    try:
        for relay in relays:
            assert relay.stdout is not None
            assert relay.stdout.readline() == "ready\n"
        for relay in relays:  # both start at once
            assert relay.stdin is not None
            relay.stdin.write("go\n")
            relay.stdin.flush()
        counts = []
        for relay in relays:
            out, err = relay.communicate(timeout=120)
            assert relay.returncode == 0, err
            counts.append(int(out.strip()))
    finally:
        for relay in relays:
            if relay.poll() is None:
                relay.kill()
    # Every row published, none by both relays (each row had one claimant), oldest first per relay.
    assert sum(counts) == 1000
    published = env.messages()
    assert sorted(published) == sorted(ids)
    assert env.outbox_rows() == []


# The whole chain, with a real Celery worker (tests/celery_app.py) on Redis and on RabbitMQ.


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def chain(request: pytest.FixtureRequest) -> t.Iterator[t.Any]:
    import celery_app as jobs
    from test_celery import Env
    from test_celery import Worker
    from test_celery import _delete_queue

    database = require_service("postgresql")
    broker = require_service(request.param)
    run = uuid.uuid4().hex[:12]
    queue = f"commands-outbox-{run}"
    tables = jobs.make_tables(run)
    db = sa.create_engine(database)
    tables.metadata.create_all(db)
    outbox.create_table(db)
    flask_app = jobs.create_app(broker, queue, database, run)
    worker = Worker(broker, queue, database, run)
    try:
        worker.start()
        yield Env(request.param, flask_app, flask_app.extensions["celery"], queue, worker, db, tables)
    finally:
        worker.stop()
        flask_app.config["COMMANDS_IDEMPOTENCY_STORE"].dispose()
        _delete_queue(flask_app.extensions["celery"], broker, queue)
        with db.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {tables.idempotency}"))
            conn.execute(outbox.table.delete().where(outbox.table.c.queue == queue))
        tables.metadata.drop_all(db)
        db.dispose()


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    host = f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if netloc[1] else host))


def _left_in_outbox(chain: t.Any) -> int:
    query = sa.select(sa.func.count()).where(outbox.table.c.queue == chain.queue)
    with chain.db.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _left_once_deleted(chain: t.Any) -> int:
    """The rows left once those published after a commit (here or in the worker) are deleted."""
    deadline = time.monotonic() + 10
    while (left := _left_in_outbox(chain)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.slow
def test_outbox_job_sees_committed_rows_on_first_attempt(chain: t.Any) -> None:
    import celery_app as jobs

    # The worker runs ``parent``, which enqueues ``needs_parent`` in its transaction and sleeps
    # before committing: sent at once, the child would run first and fail.
    cmd = jobs.Job(label="parent", sleep=1.0)
    with chain.flask_app.app_context():
        jobs.parent.enqueue(cmd)
    child = jobs.Job(id=uuid.uuid5(cmd.id, "child"), label=str(cmd.id)[:20])
    assert chain.wait_final(str(child.id)) == [("SUCCESS", 1)]
    assert chain.runs(child) == 1
    assert chain.effects(child) == 1
    assert _left_once_deleted(chain) == 0


@pytest.mark.slow
def test_outbox_broker_unreachable_then_relay_runs_job_once(chain: t.Any) -> None:
    import celery_app as jobs

    host, port, url = conftest_services()[chain.broker]
    proxy = Proxy((host, port))
    database = require_service("postgresql")
    app = jobs.create_app(_through(url, proxy.port), chain.queue, database, "unused")
    app.config["CELERY"]["broker_transport_options"]["max_retries"] = 0
    init_celery(app)  # again, with the setting above
    session = sa.orm.scoped_session(sa.orm.sessionmaker(chain.db))

    @handler(jobs.Job, transaction=session)
    def order(cmd: jobs.Job) -> None:
        session.execute(chain.tables.effects.insert().values(command_id=str(cmd.id)))
        jobs.record.enqueue(jobs.Job(id=uuid.uuid5(cmd.id, "job"), label="after outage"))

    cmd = jobs.Job(label="outage")
    job = jobs.Job(id=uuid.uuid5(cmd.id, "job"), label="after outage")
    try:
        proxy.cut()
        with app.app_context():
            order(cmd)  # succeeds: the job waits in the outbox
        assert chain.effects(cmd) == 1
        assert _left_in_outbox(chain) == 1
        proxy.restore()
        assert outbox.relay(chain.db, app.extensions["celery"], grace=0) == 1
        assert chain.wait_final(str(job.id)) == [("SUCCESS", 1)]
        assert chain.effects(job) == 1
        assert _left_in_outbox(chain) == 0
    finally:
        proxy.cut()
        session.remove()
        app.config["COMMANDS_IDEMPOTENCY_STORE"].dispose()


def conftest_services() -> dict[str, tuple[str, int, str]]:
    from conftest import SERVICES

    return SERVICES


@pytest.mark.slow
def test_outbox_whole_chain_effects_exactly_once(chain: t.Any) -> None:
    """200 HTTP commands, each sent twice, each enqueueing a job; the worker is SIGKILLed mid-run."""
    import concurrent.futures
    import random

    import celery_app as jobs

    from flask_commands import command_view

    run = f"http{uuid.uuid4().hex[:8]}"
    app = jobs.create_app(
        conftest_services()[chain.broker][2], chain.queue, require_service("postgresql"), run
    )
    session = sa.orm.scoped_session(sa.orm.sessionmaker(chain.db))
    effects = chain.tables.effects

    @handler(jobs.Job, transaction=session)
    def place(cmd: jobs.Job) -> str:
        session.execute(effects.insert().values(command_id=f"http-{cmd.label}"))
        # ``slow`` sleeps in its first run, inside its transaction: a kill lands mid-run.
        return jobs.slow.enqueue(jobs.Job(id=uuid.uuid5(cmd.id, "job"), label=cmd.label, sleep=0.3))

    @app.post("/orders")
    @command_view(jobs.Job, place)
    def placed(result: str, cmd: jobs.Job) -> tuple[dict[str, str], int]:
        return {"job": result}, 201

    def post(label: str) -> str:
        for _ in range(100):
            response = app.test_client().post(
                "/orders", json={"label": label}, headers={"Idempotency-Key": f"order-{label}"}
            )
            if response.status_code == 201:
                return str(response.json["job"])
            assert response.status_code == 409, response.text  # a duplicate still running
            time.sleep(0.05)
        raise AssertionError(f"order {label} never succeeded")

    def job_effects() -> dict[str, int]:
        query = (
            sa.select(effects.c.command_id, sa.func.count())
            .where(~effects.c.command_id.startswith("http-"), effects.c.command_id.in_(expected))
            .group_by(effects.c.command_id)
        )
        with chain.db.connect() as conn:
            return {row[0]: row[1] for row in conn.execute(query)}

    labels = [f"o{i}" for i in range(200)]
    requests = labels * 2  # every request retried once
    random.Random(12).shuffle(requests)
    expected: set[str] = set()
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for job_id in pool.map(post, requests):
                expected.add(job_id)
        assert len(expected) == 200  # a retry answers with the first request's job
        chain.wait_until(lambda: len(job_effects()) >= 20, "20 jobs done", timeout=120)
        chain.worker.kill()
        chain.worker.start()
        chain.wait_until(lambda: len(job_effects()) == 200, "every job done", timeout=180)
        time.sleep(VISIBILITY_TIMEOUT_MARGIN)  # any redelivery of a killed job has run by now
        assert set(job_effects().values()) == {1}
        with chain.db.connect() as conn:
            http = conn.execute(
                sa.select(effects.c.command_id, sa.func.count())
                .where(effects.c.command_id.in_([f"http-{label}" for label in labels]))
                .group_by(effects.c.command_id)
            ).all()
        assert len(http) == 200
        assert {count for _, count in http} == {1}
        # The kill landed mid-run: some job ran twice, yet its effect is there once.
        with chain.db.connect() as conn:
            runs = conn.execute(
                sa.select(sa.func.count()).where(chain.tables.runs.c.command_id.in_(expected))
            ).scalar_one()
        assert runs > 200
        assert _left_once_deleted(chain) == 0
    finally:
        session.remove()
        store = app.config["COMMANDS_IDEMPOTENCY_STORE"]
        store.dispose()
        with chain.db.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {store.table.name}"))


VISIBILITY_TIMEOUT_MARGIN = 7.0  # celery_app.VISIBILITY_TIMEOUT (5 s) plus a margin
