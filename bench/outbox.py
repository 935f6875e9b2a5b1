"""Transactional enqueue (the outbox) against sending directly, from the same handler.

    .venv/bin/python -P bench/outbox.py [--database URL] [--broker URL] [--commands 50] [--rounds 40]

Both handlers run in a transaction on the same database, write one row and enqueue one job to
the same Redis broker (no worker: messages only pile up in a queue of the run's own, deleted at
the end). ``direct`` sends the job from inside the transaction, as ``enqueue`` did before the
outbox (the job could run before the row commits); ``outbox`` calls ``enqueue``, which writes the
job to ``commands_outbox`` in the transaction and publishes it from memory after the commit (one
more INSERT per command; the published rows are deleted together a moment later, by another
thread). A round runs ``--commands`` commands on each side, in alternating order (the machine is
shared: short rounds see the same load on both sides); each round gives the ratio
outbox/direct, and the median ratio is reported with the median rate of each side. Target:
``outbox`` at at least 0.8 times ``direct``.

Publish latency: from the end of the database commit (SQLAlchemy's ``after_commit``, registered
before the outbox's own listener) to Celery's ``after_task_publish`` for the job, median and p99
over every outbox command.

SQLite: ``--database sqlite:////tmp/bench-outbox.sqlite`` (a file: the deletions use another
connection). Run with ``-P`` (``bench/http.py`` would shadow the standard library's ``http``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import typing as t
import uuid

import sqlalchemy as sa
import sqlalchemy.orm

# Before flask_commands.outbox registers its listener, so this one sees the commit first.
_committed: list[float] = []


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _on_commit(session: sa.orm.Session) -> None:
    _committed.append(time.perf_counter())


import celery.signals  # noqa: E402
import redis  # noqa: E402
from flask import Flask  # noqa: E402

from flask_commands import Command  # noqa: E402
from flask_commands import Commands  # noqa: E402
from flask_commands import handler  # noqa: E402
from flask_commands import outbox  # noqa: E402
from flask_commands.celery import init_celery  # noqa: E402
from flask_commands.handler import _JOB_TASK  # noqa: E402

_published: list[float] = []


@celery.signals.after_task_publish.connect
def _on_publish(**kwargs: t.Any) -> None:
    _published.append(time.perf_counter())


class Ping(Command):
    """The benchmark's command: one row to write, one job to enqueue."""

    n: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--commands", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:10]
    queue = f"bench-outbox-{run}"
    engine = sa.create_engine(args.database)
    metadata = sa.MetaData()
    rows = sa.Table(f"bench_{run}_rows", metadata, sa.Column("n", sa.Integer(), nullable=False))
    metadata.create_all(engine)
    outbox.create_table(engine)
    session = sa.orm.scoped_session(sa.orm.sessionmaker(engine))
    app = Flask(__name__)
    app.config["CELERY"] = {"broker_url": args.broker, "task_default_queue": queue}
    Commands(app)
    celery_app = init_celery(app)

    @handler(Ping, transaction=session)
    def job(cmd: Ping) -> None:
        """The job both sides enqueue (never run here)."""

    @handler(Ping, transaction=session)
    def direct(cmd: Ping) -> None:
        session.execute(rows.insert().values(n=cmd.n))
        envelope = {"type": "x", "handler": job.name, "command": cmd.to_dict()}
        celery_app.send_task(_JOB_TASK, args=[envelope], task_id=str(cmd.id), queue=queue, serializer="json")

    @handler(Ping, transaction=session)
    def transactional(cmd: Ping) -> None:
        session.execute(rows.insert().values(n=cmd.n))
        job.enqueue(cmd)

    sides = {"direct": direct, "outbox": transactional}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    latencies: list[float] = []
    try:
        with app.app_context():
            for run_one in sides.values():  # warm up connections and caches
                for n in range(20):
                    run_one(Ping(n=n))
            for index in range(args.rounds):
                order = list(sides.items()) if index % 2 == 0 else list(reversed(sides.items()))
                for name, run_one in order:
                    cmds = [Ping(n=n) for n in range(args.commands)]
                    _committed.clear()
                    _published.clear()
                    start = time.perf_counter()
                    for cmd in cmds:
                        run_one(cmd)
                    rate = len(cmds) / (time.perf_counter() - start)
                    rates[name].append(rate)
                    if name == "outbox":
                        # The publisher commits on a Connection, not a Session: one handler
                        # commit, then one publish, per command, in order.
                        if not len(_committed) == len(_published) == len(cmds):
                            raise SystemExit(
                                f"{len(cmds)} commands: {len(_committed)} commits, {len(_published)} sent"
                            )
                        latencies += [p - c for c, p in zip(_committed, _published, strict=True)]
        # The published rows are deleted a moment after their publish, many per statement.
        deadline = time.monotonic() + 10
        while True:
            with engine.connect() as conn:
                left = conn.execute(sa.select(sa.func.count()).select_from(outbox.table)).scalar_one()
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        client = redis.Redis.from_url(args.broker)
        client.delete(queue)
        client.close()
        metadata.drop_all(engine)
        session.remove()
        engine.dispose()

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    ratios = [o / d for o, d in zip(rates["outbox"], rates["direct"], strict=True)]
    print(f"{engine.dialect.name}, {args.commands} commands x {args.rounds} rounds, medians:")
    print(f"  direct send  {statistics.median(rates['direct']):8.0f} commands/s")
    print(f"  outbox       {statistics.median(rates['outbox']):8.0f} commands/s")
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(
        f"  ratio outbox/direct: median {statistics.median(ratios):.2f} (target >= 0.80),"
        f" quartiles of the rounds {quartiles[0]:.2f} to {quartiles[2]:.2f}"
    )
    print(
        f"  publish latency after commit: median {statistics.median(latencies) * 1e3:.2f} ms,"
        f" p99 {p99 * 1e3:.2f} ms ({len(latencies)} jobs)"
    )
    print(f"  rows left in the outbox once the deletions ran: {left}")


if __name__ == "__main__":
    main()
