"""Cost of idempotency around a small transactional handler, on SQLite, PostgreSQL and MariaDB.

    .venv/bin/python -P bench/idempotency.py [--commands 1000] [--postgresql URL] [--mariadb URL]

The handler inserts one row through a SQLAlchemy session (``transaction=session``), as a
Flask-SQLAlchemy app would. The store is configured by URL on the same database, as
``COMMANDS_IDEMPOTENCY_STORE`` would be, so ``handle()`` takes the one-transaction path: the
claim is the first statement of the handler's transaction, the record its last. Measured in one
run, per database, the modes interleaved command by command (medians):

1. ``handle(cmd)`` (a new key each time) against the plain call ``handler(cmd)``.
   Targets: PostgreSQL at least 0.85, SQLite at least 0.9, MariaDB reported.
2. SQL statements and commits the store adds per keyed command (``before_cursor_execute`` and
   ``commit`` events). Target: at most 2 statements, 0 commits.
3. a replayed ``handle(cmd)`` against the first run. Target: at least 3x faster.
4. the fingerprint of the command (``command_fingerprint``), in microseconds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import pathlib
import statistics
import tempfile
import time
import timeit
import typing as t
import uuid

import flask
import sqlalchemy as sa
from sqlalchemy import orm

from flask_commands import Command
from flask_commands import Commands
from flask_commands import handler
from flask_commands._idempotent import command_fingerprint
from flask_commands.idempotency.sql import SQLAlchemyStore

_statements: collections.Counter[str] = collections.Counter()
_commits = [0]


@sa.event.listens_for(sa.Engine, "before_cursor_execute")
def _count(conn: sa.Connection, cursor: t.Any, statement: str, *args: t.Any) -> None:
    _statements[statement.split(None, 1)[0].upper()] += 1


@sa.event.listens_for(sa.Engine, "commit")
def _count_commit(conn: sa.Connection) -> None:
    _commits[0] += 1


class AddTodo(Command):
    title: str
    order: int = 0
    completed: bool = False


def measure(name: str, url: str, commands: int) -> None:
    """Print the figures for one database."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    suffix = uuid.uuid4().hex[:8]
    side = sa.Table(
        f"bench_side_{suffix}",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(200), nullable=False),
    )
    side.create(engine)
    store = SQLAlchemyStore(url, table=f"bench_idem_{suffix}")
    store.create_table()
    session = orm.scoped_session(orm.sessionmaker(engine))

    @handler(AddTodo, transaction=session)
    def add_todo(cmd: AddTodo) -> None:
        session.execute(side.insert(), {"title": cmd.title})

    app = flask.Flask(__name__)
    app.config["COMMANDS_IDEMPOTENCY_STORE"] = store
    Commands(app)
    done: list[AddTodo] = []

    def plain() -> None:
        add_todo(AddTodo(title="buy milk"))

    def keyed() -> None:
        cmd = AddTodo(title="buy milk")
        add_todo.handle(cmd)
        done.append(cmd)

    def replay() -> None:
        assert add_todo.handle(done[-1]) is None

    modes: dict[str, t.Callable[[], None]] = {"plain": plain, "keyed": keyed, "replay": replay}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    statements = dict.fromkeys(modes, 0)
    commits = dict.fromkeys(modes, 0)
    try:
        with app.app_context():
            for _ in range(20):  # warm the pools and the compiled-statement caches
                plain()
                keyed()
                replay()
            for i in range(commands):
                names = [*modes][i % 3 :] + [*modes][: i % 3]
                if names[0] == "replay":
                    names = names[1:] + names[:1]
                for mode in names:
                    _statements.clear()
                    _commits[0] = 0
                    start = time.perf_counter()
                    modes[mode]()
                    seconds[mode].append(time.perf_counter() - start)
                    statements[mode] += sum(_statements.values())
                    commits[mode] += _commits[0]
            cmd = AddTodo(title="buy milk")
            fingerprint_us = (
                min(timeit.repeat(lambda: command_fingerprint(cmd), number=2000, repeat=3)) / 2000 * 1e6
            )
    finally:
        session.remove()
        store.table.drop(engine)
        side.drop(engine)
        store.dispose()
        engine.dispose()

    median = {mode: statistics.median(samples) for mode, samples in seconds.items()}
    per = {mode: statements[mode] / len(seconds[mode]) for mode in modes}
    commit_per = {mode: commits[mode] / len(seconds[mode]) for mode in modes}
    print(f"{name}: {commands} commands per mode, interleaved; median time per command")
    print(f"  handler alone               {1 / median['plain']:7.0f} commands/s")
    print(
        f"  handle() with the store     {1 / median['keyed']:7.0f} commands/s"
        f"   ratio {median['plain'] / median['keyed']:.2f}"
    )
    print(
        f"  added per keyed command     {per['keyed'] - per['plain']:.2f} statements,"
        f" {commit_per['keyed'] - commit_per['plain']:.2f} commits (target <= 2, 0)"
    )
    print(
        f"  replay {median['replay'] * 1e6:.0f} us vs first run {median['keyed'] * 1e6:.0f} us:"
        f" {median['keyed'] / median['replay']:.1f}x faster (target >= 3x);"
        f" {per['replay']:.2f} statements per replay"
    )
    print(f"  fingerprint of the command  {fingerprint_us:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1000, help="commands per mode and database")
    parser.add_argument("--postgresql", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--mariadb", default="mysql+pymysql://root@127.0.0.1:3306/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{pathlib.Path(directory) / 'bench.db'}"
        measure("SQLite (file, WAL)", url, args.commands)
    for name, url in (("PostgreSQL (psycopg 3)", args.postgresql), ("MariaDB (PyMySQL)", args.mariadb)):
        try:
            measure(name, url, args.commands)
        except sa.exc.OperationalError as e:
            print(f"{name}: skipped, {url} is not reachable: {e.orig}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
