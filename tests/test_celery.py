"""Background commands on Celery, run by a real worker process on Redis and on RabbitMQ.

The ``env`` fixture (once per broker) starts ``celery worker`` (prefork, 4 processes) on a queue
of its own and creates the tables of ``celery_app.py`` on PostgreSQL, where the worker's handlers
record their runs, effects and deliveries for the test to read. Every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
import types
import typing as t
import uuid

import celery_app as jobs
import flask
import pytest
import sqlalchemy as sa
from conftest import require_service

from flask_commands import Commands
from flask_commands import handler
from flask_commands._idempotent import command_fingerprint
from flask_commands._idempotent import scoped_key
from flask_commands.celery import _run_command
from flask_commands.celery import init_celery
from flask_commands.handler import _JOB_TASK
from flask_commands.state import app_state

if t.TYPE_CHECKING:
    import celery

TESTS = pathlib.Path(__file__).parent
WAIT = 30.0  # seconds any one wait may take
FINAL = ("SUCCESS", "FAILURE", "REJECTED")


class Worker:
    """A ``celery worker`` process in its own process group, its output collected line by line."""

    def __init__(self, broker_url: str, queue: str, database: str, run: str, instance_path: str = "") -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "COMMANDS_TEST_BROKER": broker_url,
            "COMMANDS_TEST_QUEUE": queue,
            "COMMANDS_TEST_DATABASE": database,
            "COMMANDS_TEST_RUN": run,
            "COMMANDS_TEST_INSTANCE": instance_path,
        }
        self.queue = queue
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "celery_app:celery_app", "worker"]
        command += ["--pool=prefork", "--concurrency=4", "-Q", self.queue, "-n", f"{self.queue}@%h"]
        command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel=INFO"]
        process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, so kill() takes the pool with it
        )
        self.process = process
        start = len(self.lines)
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        if not self.wait_for_line(" ready.", start=start):
            self.stop()
            raise AssertionError("The worker did not start:\n" + "".join(self.lines[start:]))

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.lines.append(line)

    def wait_for_line(self, text: str, start: int = 0, timeout: float = WAIT) -> bool:
        """Wait until a line of output from ``start`` on contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines[start:]):
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a machine crash would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=WAIT)

    def stop(self) -> None:
        """Shut the worker down, or kill it after a bounded wait."""
        if self.process is None or self.process.poll() is not None:
            return
        # Cold shutdown: the main process stops its pool at once (a warm one takes seconds).
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclasses.dataclass
class Env:
    """A broker, a worker on a queue of its own, and the database both sides read."""

    broker: str
    flask_app: flask.Flask
    celery_app: celery.Celery
    queue: str
    worker: Worker
    db: sa.Engine
    tables: jobs.Tables

    def runs(self, cmd: jobs.Job) -> int:
        query = sa.select(sa.func.count()).where(self.tables.runs.c.command_id == str(cmd.id))
        with self.db.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def effects(self, cmd: jobs.Job) -> int:
        query = sa.select(sa.func.count()).where(self.tables.effects.c.command_id == str(cmd.id))
        with self.db.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def deliveries(self, task_id: str) -> list[tuple[str, int | None]]:
        """The state and attempt of each message of ``task_id`` the worker ran, in order."""
        c = self.tables.deliveries.c
        query = sa.select(c.state, c.attempt).where(c.task_id == task_id).order_by(c.id)
        with self.db.connect() as conn:
            return [(row.state, row.attempt) for row in conn.execute(query)]

    def wait_until(self, condition: t.Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                output = "".join(self.worker.lines[-40:])
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; the worker said:\n{output}"
                )
            time.sleep(0.05)

    def wait_final(self, task_id: str, count: int = 1) -> list[tuple[str, int | None]]:
        """Wait until ``count`` messages of ``task_id`` ended (not retried); return all deliveries."""

        def ended() -> bool:
            return sum(state in FINAL for state, _ in self.deliveries(task_id)) >= count

        self.wait_until(ended, f"{count} final deliveries of {task_id}")
        return self.deliveries(task_id)


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def env(request: pytest.FixtureRequest) -> t.Iterator[Env]:
    database = require_service("postgresql")
    broker = require_service(request.param)
    run = uuid.uuid4().hex[:12]
    queue = f"commands-test-{run}"
    tables = jobs.make_tables(run)
    db = sa.create_engine(database)
    tables.metadata.create_all(db)
    flask_app = jobs.create_app(broker, queue, database, run)
    celery_app = flask_app.extensions["celery"]
    worker = Worker(broker, queue, database, run)
    try:
        worker.start()
        yield Env(request.param, flask_app, celery_app, queue, worker, db, tables)
    finally:
        worker.stop()
        _delete_queue(celery_app, broker, queue)
        with db.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {tables.idempotency}"))
        tables.metadata.drop_all(db)
        db.dispose()


def _delete_queue(celery_app: celery.Celery, broker: str, queue: str) -> None:
    with celery_app.connection_for_write() as conn:
        if broker.startswith("redis"):
            client = conn.default_channel.client
            for key in client.scan_iter(match=f"{queue}:*"):
                client.delete(key)
        else:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


def test_enqueue_runs_handler(env: Env) -> None:
    cmd = jobs.Job(label="hello")
    with env.flask_app.app_context():
        task_id = jobs.record.enqueue(cmd)
    assert task_id == str(cmd.id)
    assert env.wait_final(task_id) == [("SUCCESS", 1)]
    assert env.runs(cmd) == 1
    assert env.effects(cmd) == 1


def test_enqueue_outside_app_context_uses_default_celery_app(env: Env) -> None:
    env.celery_app.set_current()
    cmd = jobs.Job(label="no context")
    task_id = jobs.record.enqueue(cmd)
    assert env.wait_final(task_id) == [("SUCCESS", 1)]
    assert env.effects(cmd) == 1


def test_enqueue_countdown_delays_job(env: Env) -> None:
    cmd = jobs.Job(label="later")
    sent = time.time()
    with env.flask_app.app_context():
        jobs.record.enqueue(cmd, countdown=1.0)
    env.wait_final(str(cmd.id))
    with env.db.connect() as conn:
        ran = conn.execute(sa.select(env.tables.runs.c.at).where(env.tables.runs.c.command_id == str(cmd.id)))
        assert ran.scalar_one() >= sent + 1.0


def test_conflict_is_final(env: Env) -> None:
    cmd = jobs.Job(label="refused")
    with env.flask_app.app_context():
        task_id = jobs.refuse.enqueue(cmd)
    assert env.wait_final(task_id) == [("SUCCESS", 1)]
    assert env.runs(cmd) == 1


def test_transient_error_retried_until_success(env: Env) -> None:
    cmd = jobs.Job(label="flaky", failures=2)
    with env.flask_app.app_context():
        task_id = jobs.flaky.enqueue(cmd)
    assert env.wait_final(task_id) == [("RETRY", 1), ("RETRY", 2), ("SUCCESS", 3)]
    assert env.runs(cmd) == 3
    assert env.effects(cmd) == 1


def test_permanent_error_stops_at_max_attempts(env: Env) -> None:
    cmd = jobs.Job(label="broken")
    start = len(env.worker.lines)
    with env.flask_app.app_context():
        task_id = jobs.broken.enqueue(cmd)
    assert env.wait_final(task_id) == [("RETRY", 1), ("RETRY", 2), ("FAILURE", 3)]
    assert env.runs(cmd) == jobs.broken.max_attempts == 3
    assert env.effects(cmd) == 0
    line = f"Job {cmd.id} for celery_app:broken failed after 3 attempts: RuntimeError('failure 3')"
    assert env.worker.wait_for_line(line, start=start)


def test_same_command_enqueued_20_times_runs_once(env: Env) -> None:
    cmd = jobs.Job(label="twenty")
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            with env.flask_app.app_context():
                barrier.wait(timeout=WAIT)
                jobs.record.enqueue(cmd)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert errors == []
    deliveries = env.wait_final(str(cmd.id), count=20)
    assert [state for state, _ in deliveries if state in FINAL] == ["SUCCESS"] * 20
    # A duplicate that found the key held was retried without using up an attempt.
    assert all(attempt == 1 for _, attempt in deliveries)
    assert env.runs(cmd) == 1
    assert env.effects(cmd) == 1


def test_worker_killed_mid_job_redelivers_and_runs_once(env: Env) -> None:
    cmd = jobs.Job(label="crash", sleep=60.0)
    with env.flask_app.app_context():
        task_id = jobs.slow.enqueue(cmd)
    env.wait_until(lambda: env.runs(cmd) == 1, "the first run to start")
    env.worker.kill()
    env.worker.start()
    env.wait_final(task_id, count=1)
    assert env.runs(cmd) == 2
    assert env.effects(cmd) == 1


def _envelope(cmd: jobs.Job, **changes: t.Any) -> dict[str, t.Any]:
    envelope = {"type": "celery_app:Job", "handler": "celery_app:record", "command": cmd.to_dict()}
    envelope.update(changes)
    return envelope


POISON = {
    "not_json": (lambda cmd: "{not json", "the envelope does not decode as JSON"),
    "not_object": (lambda cmd: ["a", "list"], "the envelope is a list, not a JSON object."),
    "missing_key": (
        lambda cmd: {"type": "celery_app:Job", "command": cmd.to_dict()},
        "the envelope has no 'handler'.",
    ),
    "unknown_handler": (
        lambda cmd: _envelope(cmd, handler="os:system"),
        "no handler is registered as 'os:system'.",
    ),
    "foreign_type": (
        lambda cmd: _envelope(cmd, type="celery_app:Other"),
        "handler 'celery_app:record' does not take the command type 'celery_app:Other'.",
    ),
    "invalid_command": (
        lambda cmd: _envelope(cmd, command={**cmd.to_dict(), "label": "x" * 21}),
        "the celery_app:Job command does not restore: invalid command: label:"
        " Field cannot be longer than 20 characters.",
    ),
}


@pytest.mark.parametrize("kind", POISON)
def test_poison_envelope_rejected_and_queue_goes_on(env: Env, kind: str) -> None:
    make, reason = POISON[kind]
    poisoned = jobs.Job(label="poison")
    good = jobs.Job(label="good")
    start = len(env.worker.lines)
    env.celery_app.send_task(_JOB_TASK, args=[make(poisoned)], task_id=str(poisoned.id), queue=env.queue)
    with env.flask_app.app_context():
        jobs.record.enqueue(good)
    assert env.wait_final(str(poisoned.id)) == [("REJECTED", 1)]
    assert env.wait_final(str(good.id)) == [("SUCCESS", 1)]
    assert env.runs(poisoned) == 0
    assert env.effects(good) == 1
    assert env.worker.wait_for_line(f"Rejected job {poisoned.id} without requeue: {reason}", start=start)


def test_enqueue_without_celery_app() -> None:
    app = flask.Flask("no_celery")
    with app.app_context(), pytest.raises(RuntimeError) as e:
        jobs.record.enqueue(jobs.Job(label="x"))
    assert e.value.args == (
        "handler 'record' cannot enqueue: the Flask app 'no_celery' has no Celery app with the task"
        " 'flask_commands.run_command'; call flask_commands.celery.init_celery(app) first.",
    )


def test_enqueue_takes_only_its_command() -> None:
    with pytest.raises(TypeError):
        jobs.record.enqueue(jobs.Other(label="x"))  # type: ignore[arg-type]


def test_handler_backoff_negative() -> None:
    with pytest.raises(ValueError, match="backoff") as e:
        handler(jobs.Job, backoff=-1.0)
    assert e.value.args == ("backoff must be a number of seconds, 0 or more, not -1.0.",)


class _Retry(Exception):
    pass


class _FakeTask:
    """Stands in for the bound Celery task: records what ``retry`` was asked."""

    def __init__(self) -> None:
        self.request = types.SimpleNamespace(id="fake")
        self.retries: list[dict[str, t.Any]] = []

    def retry(self, **options: t.Any) -> _Retry:
        self.retries.append(options)
        return _Retry()


@handler(jobs.Job, max_attempts=20, backoff=0.5)
def _failing(cmd: jobs.Job) -> None:
    raise RuntimeError("down")


@pytest.mark.parametrize(("attempt", "bound"), [(1, 0.5), (2, 1.0), (5, 8.0), (12, 600.0)])
def test_fault_retry_waits_full_jitter(
    app: flask.Flask, monkeypatch: pytest.MonkeyPatch, attempt: int, bound: float
) -> None:
    Commands(app)
    drawn: list[tuple[float, float]] = []
    monkeypatch.setattr(random, "uniform", lambda a, b: drawn.append((a, b)) or b)
    task = _FakeTask()
    cmd = jobs.Job(label="x")
    envelope = {"type": "celery_app:Job", "handler": _failing.name, "command": cmd.to_dict()}
    with app.app_context(), pytest.raises(_Retry):
        _run_command(task, envelope, attempt=attempt)
    assert drawn == [(0.0, bound)]
    assert task.retries[0]["countdown"] == bound
    assert task.retries[0]["kwargs"] == {"attempt": attempt + 1}


def test_held_key_retry_keeps_attempt(app: flask.Flask) -> None:
    app.config["COMMANDS_IDEMPOTENCY_LEASE"] = 30.0
    Commands(app)
    task = _FakeTask()
    cmd = jobs.Job(label="x")
    envelope = {"type": "celery_app:Job", "handler": _failing.name, "command": cmd.to_dict()}
    with app.app_context():
        store = app_state(app).store
        store.claim(scoped_key(type(cmd), str(cmd.id)), command_fingerprint(cmd), lease=30.0)
        with pytest.raises(_Retry):
            _run_command(task, envelope, attempt=3)
    assert task.retries[0]["kwargs"] == {"attempt": 3}
    assert 29.0 < task.retries[0]["countdown"] <= 30.1


def test_embedded_broker_runs_job(tmp_path: pathlib.Path) -> None:
    database = require_service("postgresql")
    run = uuid.uuid4().hex[:12]
    tables = jobs.make_tables(run)
    db = sa.create_engine(database)
    tables.metadata.create_all(db)
    flask_app = jobs.create_app("", "default", database, run, instance_path=str(tmp_path))
    worker = Worker("", "default", database, run, instance_path=str(tmp_path))
    try:
        worker.start()
        env = Env("embedded", flask_app, flask_app.extensions["celery"], "default", worker, db, tables)
        cmd = jobs.Job(label="embedded")
        with flask_app.app_context():
            task_id = jobs.record.enqueue(cmd)
        assert env.wait_final(task_id) == [("SUCCESS", 1)]
        assert env.effects(cmd) == 1
    finally:
        worker.stop()
        with db.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {tables.idempotency}"))
        tables.metadata.drop_all(db)
        db.dispose()


def test_init_celery_defaults_to_embedded_broker(tmp_path: pathlib.Path) -> None:
    app = flask.Flask("embedded", instance_path=str(tmp_path / "instance"))
    celery_app = init_celery(app)
    assert app.extensions["celery"] is celery_app
    assert celery_app.conf.broker_url == "filesystem://localhost//"
    assert celery_app.conf.task_default_queue == "default"
    options = celery_app.conf.broker_transport_options
    assert (
        options["data_folder_in"]
        == options["data_folder_out"]
        == str(tmp_path / "instance/celery-broker/queue")
    )
    assert (tmp_path / "instance/celery-broker/queue").is_dir()
    task = celery_app.tasks[_JOB_TASK]
    assert (task.acks_late, task.reject_on_worker_lost, task.ignore_result) == (True, True, True)
