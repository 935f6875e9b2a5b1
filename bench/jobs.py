"""Throughput of command jobs through a real Celery worker, against a bare Celery task doing the same work.

    .venv/bin/python bench/jobs.py [--jobs 500] [--concurrency 4] [--rounds 3]

Both sides use the same Redis broker, the same worker process (prefork) and the same work: one
INSERT committed on PostgreSQL. A command job adds what Flask-Commands does per job: the JSON
envelope, ``from_dict`` re-validation, an app context, and the idempotency claim and completion
(a ``SQLAlchemyStore`` on the same database, the completion inside the handler's transaction). A
round queues N messages, starts a worker and takes the rate between the first and the last row
written (the database's clock), so neither sending nor start-up counts; rounds alternate between
the two and the best of each is kept. Target: command jobs at at least 0.85 times the bare
task's throughput.

This file is also the worker module (``celery -A jobs:celery_app worker``, ``bench/`` on the
path), configured by the ``BENCH_*`` environment variables the driver sets.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time
import typing as t
import uuid

import sqlalchemy as sa
import sqlalchemy.orm
from flask import Flask

from flask_commands import Command
from flask_commands import Commands
from flask_commands import handler
from flask_commands.celery import init_celery
from flask_commands.idempotency.sql import SQLAlchemyStore

# BENCH_BROKER and BENCH_DATABASE point the bench elsewhere (the smoke test uses its own).
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0")
DATABASE = os.environ.get("BENCH_DATABASE", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TIMEOUT = 120.0  # seconds one round may take


class Bump(Command):
    """The benchmark's command: one row to write."""

    round: str
    n: int


def _tables(run: str) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    effects = sa.Table(
        f"bench_{run}_effects",
        metadata,
        sa.Column("round", sa.String(40), nullable=False, index=True),
        sa.Column("n", sa.Integer(), nullable=False),
        # The commit time on the database's clock; clock_timestamp() moves within a transaction.
        sa.Column(
            "at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        ),
    )
    return metadata, effects


RUN = os.environ.get("BENCH_RUN", "local")
engine = sa.create_engine(os.environ.get("BENCH_DATABASE", DATABASE))
Session = sa.orm.scoped_session(sa.orm.sessionmaker(engine))
effects = _tables(RUN)[1]
os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))


def _work(round_: str, n: int) -> None:
    Session.execute(sa.insert(effects).values(round=round_, n=n))


@handler(Bump, transaction=Session)
def bump(cmd: Bump) -> None:
    """Write the row, committed by the handler's transaction with the idempotency record."""
    _work(cmd.round, cmd.n)


def create_app(broker: str, queue: str) -> Flask:
    """The benchmark's Flask app: Flask-Commands on PostgreSQL, Celery on ``broker``."""
    app = Flask(__name__)
    app.config["COMMANDS_IDEMPOTENCY_STORE"] = SQLAlchemyStore(engine, table=f"bench_{RUN}_idempotency")
    app.config["CELERY"] = {
        "broker_url": broker,
        "broker_transport_options": {"global_keyprefix": f"{queue}:"},
        "task_default_queue": queue,
        "worker_prefetch_multiplier": 4,
        "worker_enable_remote_control": False,
    }
    Commands(app)
    celery_app = init_celery(app)

    @celery_app.task(name="bench.bare", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def bare(round_: str, n: int) -> None:
        # The same work, committed the same way, in an app context as every task of this app.
        try:
            _work(round_, n)
            Session.commit()
        finally:
            Session.remove()

    app.teardown_appcontext(lambda exc: Session.remove())
    return app


if "BENCH_QUEUE" in os.environ:
    flask_app = create_app(os.environ.get("BENCH_BROKER", BROKER), os.environ["BENCH_QUEUE"])
    celery_app = flask_app.extensions["celery"]


class _Worker:
    """A ``celery worker`` on the benchmark's queue, in its own process group."""

    def __init__(self, queue: str, concurrency: int) -> None:
        bench = pathlib.Path(__file__).resolve().parent
        self.command = [sys.executable, "-m", "celery", "-A", "jobs:celery_app", "worker", "-Q", queue]
        self.command += [f"--concurrency={concurrency}", "--pool=prefork", "--loglevel=WARNING"]
        self.command += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(bench), os.environ.get("PYTHONPATH", "")]),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Worker:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _round(kind: str, jobs: int, module: t.Any, worker: _Worker, db: sa.Engine, table: sa.Table) -> float:
    """Queue ``jobs`` messages of ``kind``, let a fresh worker drain them, return the jobs per second.

    The rate is taken between the first and the last commit (the database's clock), so neither
    sending nor the worker's start-up is counted.
    """
    round_ = f"{kind}-{uuid.uuid4().hex[:8]}"
    celery_app = module.celery_app
    with module.flask_app.app_context():
        for n in range(jobs):
            if kind == "command":
                module.bump.enqueue(module.Bump(round=round_, n=n))
            else:
                celery_app.send_task("bench.bare", args=[round_, n], queue=celery_app.conf.task_default_queue)
    query = sa.select(sa.func.count(), sa.func.min(table.c.at), sa.func.max(table.c.at)).where(
        table.c.round == round_
    )
    deadline = time.monotonic() + TIMEOUT
    with worker:
        while True:
            with db.connect() as conn:
                done, first, last = conn.execute(query).one()
            if done >= jobs:
                return (jobs - 1) / (last - first).total_seconds()
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind} round: {done} of {jobs} jobs done after {TIMEOUT} s.")
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", default=BROKER, help="the Redis broker URL")
    parser.add_argument("--database", default=DATABASE, help="the PostgreSQL URL of the work and the store")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:10]
    queue = f"bench-jobs-{run}"
    os.environ.update(
        {"BENCH_RUN": run, "BENCH_QUEUE": queue, "BENCH_BROKER": args.broker, "BENCH_DATABASE": args.database}
    )
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import jobs as module  # this file as the worker imports it, so the handler's name matches

    db = sa.create_engine(args.database)
    metadata, table = _tables(run)
    metadata.create_all(db)
    store = module.flask_app.config["COMMANDS_IDEMPOTENCY_STORE"]
    store.create_table()
    worker = _Worker(queue, args.concurrency)
    best = {"bare": 0.0, "command": 0.0}
    try:
        for _ in range(args.rounds):
            for kind in ("bare", "command"):
                best[kind] = max(best[kind], _round(kind, args.jobs, module, worker, db, table))
    finally:
        with module.celery_app.connection_for_write() as conn:
            client = conn.default_channel.client
            for key in client.scan_iter(match=f"{queue}:*"):
                client.delete(key)
        metadata.drop_all(db)
        store.table.drop(db, checkfirst=True)
        db.dispose()

    print(f"{args.jobs} jobs from a full Redis queue, prefork worker of {args.concurrency} processes,")
    print(f"best of {args.rounds} rounds each (a fresh worker per round)")
    for kind, label in (("bare", "bare Celery task:"), ("command", "command job:     ")):
        print(f"{label} {best[kind]:7.0f} jobs/s ({1000 / best[kind]:.2f} ms per job)")
    print(f"ratio command/bare: {best['command'] / best['bare']:.2f} (target >= 0.85)")


if __name__ == "__main__":
    main()
