"""Cost of the SQL idempotency store around a trivial transactional handler, on SQLite and PostgreSQL.

    .venv/bin/python bench/idempotency.py [--commands 2000] [--postgresql URL]

The handler inserts one row in its own transaction (``engine.begin()``), as a Flask-SQLAlchemy
app would. Measured in one run, per database:

1. throughput of the handler alone, and with the store: ``claim`` (a new key), then the handler
   and ``complete(connection=...)`` in one transaction; also with ``attach_response`` afterwards,
   as views do when the response is rendered after the commit. Target: ratio at least 0.7.
2. SQL statements the store adds per command, counted with ``before_cursor_execute``; its own
   statements run in autocommit, so they cost no ``BEGIN``/``COMMIT`` either. Target: at most 2.
3. the time of a replayed claim against a first execution. Target: replay at least 2x faster.

The modes are interleaved command by command and each figure is a median, so that a busy machine
or disk slows them alike. The store is configured by URL, as ``COMMANDS_IDEMPOTENCY_STORE`` would
be: its own commits skip the disk flush (see ``sql.py``), the handler's do not.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import pathlib
import statistics
import tempfile
import time
import typing as t
import uuid

import sqlalchemy as sa

from flask_commands.idempotency.sql import SQLAlchemyStore
from flask_commands.idempotency.store import Acquired
from flask_commands.idempotency.store import Replay
from flask_commands.idempotency.store import StoredResponse

FINGERPRINT = "f" * 64
RESPONSE = StoredResponse(201, [("Content-Type", "application/json"), ("Location", "/todos/1")], b'{"id":1}')
LEASE = 60.0
TTL = 3600.0

_statements: collections.Counter[str] = collections.Counter()


@sa.event.listens_for(sa.Engine, "before_cursor_execute")
def _count(conn: sa.Connection, cursor: t.Any, statement: str, *args: t.Any) -> None:
    _statements[statement.split(None, 1)[0].upper()] += 1


class Bench:
    """One database: the application's engine, its side table and a store on the same database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        suffix = uuid.uuid4().hex[:8]
        self.side = sa.Table(
            f"bench_side_{suffix}",
            sa.MetaData(),
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("title", sa.String(200), nullable=False),
        )
        self.side.create(self.engine)
        self.store = SQLAlchemyStore(url, table=f"bench_idem_{suffix}")
        self.store.create_table()

    def close(self) -> None:
        self.store.table.drop(self.engine)
        self.side.drop(self.engine)
        self.store.dispose()
        self.engine.dispose()

    def handler(self, connection: sa.Connection) -> None:
        connection.execute(self.side.insert(), {"title": "buy milk"})

    def plain(self, key: str) -> None:
        with self.engine.begin() as conn:
            self.handler(conn)

    def stored(self, key: str) -> None:
        claim = self.store.claim(key, FINGERPRINT, lease=LEASE)
        assert isinstance(claim, Acquired), claim
        with self.engine.begin() as conn:
            self.handler(conn)
            self.store.complete(key, claim.token, outcome="ok", ttl=TTL, response=RESPONSE, connection=conn)

    def stored_then_attached(self, key: str) -> None:
        claim = self.store.claim(key, FINGERPRINT, lease=LEASE)
        assert isinstance(claim, Acquired), claim
        with self.engine.begin() as conn:
            self.handler(conn)
            self.store.complete(key, claim.token, outcome="ok", ttl=TTL, connection=conn)
        self.store.attach_response(key, claim.token, RESPONSE)

    def replay(self, key: str) -> None:
        claim = self.store.claim(key, FINGERPRINT, lease=LEASE)
        assert isinstance(claim, Replay), claim


def measure(name: str, url: str, commands: int) -> None:
    """Print the three figures for one database."""
    bench = Bench(url)
    modes: dict[str, t.Callable[[str], None]] = {
        "plain": bench.plain,
        "stored": bench.stored,
        "attached": bench.stored_then_attached,
        "replay": bench.replay,
    }
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    statements = dict.fromkeys(modes, 0)
    try:
        for mode in modes.values():  # warm the pools and the compiled-statement caches
            if mode != bench.replay:
                for _ in range(20):
                    mode(uuid.uuid4().hex)
        done = ""
        for i in range(commands):
            # Interleave the modes, rotating their order, so that a busy machine or disk slows
            # them alike; replay the key the previous "stored" command completed.
            names = [*modes][i % len(modes) :] + [*modes][: i % len(modes)]
            for mode_name in names:
                key = done if mode_name == "replay" and done else uuid.uuid4().hex
                if mode_name == "replay" and not done:
                    continue
                _statements.clear()
                start = time.perf_counter()
                modes[mode_name](key)
                seconds[mode_name].append(time.perf_counter() - start)
                statements[mode_name] += sum(_statements.values())
                if mode_name == "stored":
                    done = key
    finally:
        bench.close()

    median = {mode: statistics.median(samples) for mode, samples in seconds.items()}
    per_command = {mode: statements[mode] / len(seconds[mode]) for mode in modes}

    def rate(mode: str) -> float:
        return 1 / median[mode]

    print(f"{name}: {commands} commands per mode, interleaved; median time per command")
    print(f"  handler alone                           {rate('plain'):7.0f} commands/s")
    print(
        f"  + store (claim; complete in handler tx) {rate('stored'):7.0f} commands/s"
        f"   ratio {rate('stored') / rate('plain'):.2f}  (target >= 0.7)"
    )
    print(
        f"  + store, then attach_response           {rate('attached'):7.0f} commands/s"
        f"   ratio {rate('attached') / rate('plain'):.2f}"
    )
    print(
        f"  statements added per command            {per_command['stored'] - per_command['plain']:7.2f}"
        f"   (target <= 2); {per_command['attached'] - per_command['plain']:.2f} with attach_response"
    )
    print(
        f"  replay {median['replay'] * 1e6:.0f} us vs first execution {median['stored'] * 1e6:.0f} us:"
        f" {median['stored'] / median['replay']:.1f}x faster (target >= 2x);"
        f" {per_command['replay']:.2f} statements per replay"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000, help="commands per mode and database")
    parser.add_argument("--postgresql", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{pathlib.Path(directory) / 'bench.db'}"
        measure("SQLite (file, WAL)", url, args.commands)
    try:
        measure("PostgreSQL (psycopg 3)", args.postgresql, args.commands)
    except sa.exc.OperationalError as e:
        print(f"PostgreSQL: skipped, {args.postgresql} is not reachable: {e.orig}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
