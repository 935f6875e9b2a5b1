"""Worker processes for the idempotency race and crash tests.

They live outside the test module because a spawned or forkserver worker finds its function by
module name in a fresh interpreter; this module imports only what a worker needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.context
import multiprocessing.queues
import multiprocessing.synchronize
import os
import queue
import sys
import time
import typing as t

import sqlalchemy as sa

from flask_commands.idempotency.sql import SQLAlchemyStore
from flask_commands.idempotency.store import Acquired
from flask_commands.idempotency.store import LeaseLost
from flask_commands.idempotency.store import Store

_PRELOAD = [
    "sqlalchemy",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.mysql.pymysql",
    "psycopg",
    "pymysql",
    "flask_commands.idempotency.sql",
]
FINGERPRINT = "f" * 64
BARRIER_TIMEOUT = 60.0


def side_table(name: str) -> sa.Table:
    """A table recording each time a handler ran; deliberately without a unique constraint."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("ikey", sa.String(512), nullable=False),
        sa.Column("worker", sa.Integer(), nullable=False),
    )


def handle(store: Store, engine: sa.Engine, side: sa.Table, key: str, lease: float, worker: int) -> str:
    """Claim ``key``; if acquired, run the handler and complete in one transaction; return the claim kind."""
    claim = store.claim(key, FINGERPRINT, lease=lease)
    if isinstance(claim, Acquired):
        with engine.begin() as conn:
            conn.execute(side.insert().values(ikey=key, worker=worker))
            # Hold the lease a moment, so that duplicates find the key running, not only done.
            time.sleep(0.05)
            store.complete(key, claim.token, outcome="ok", ttl=600.0, connection=conn)
    return type(claim).__name__


def handle_in_transaction(
    store: Store, engine: sa.Engine, side: sa.Table, key: str, lease: float, worker: int
) -> str:
    """Claim ``key`` inside the handler's transaction; if acquired, run and complete before its commit."""
    try:
        with engine.begin() as conn:
            claim = store.claim(key, FINGERPRINT, lease=lease, connection=conn)
            if isinstance(claim, Acquired):
                conn.execute(side.insert().values(ikey=key, worker=worker))
                time.sleep(0.05)
                store.complete(key, claim.token, outcome="ok", ttl=600.0, connection=conn)
    except LeaseLost:
        # Another claimant committed the key while we ran: our writes roll back with the claim.
        return "Lost"
    return type(claim).__name__


@dataclasses.dataclass(frozen=True)
class Job:
    """What one racer does: claim each of ``keys`` in turn on the store at ``url``."""

    url: str
    table: str
    side: str
    keys: tuple[str, ...]
    lease: float = 30.0
    in_transaction: bool = False


Result = tuple[int, list[str] | str]
"""A racer's index, and the kind of each of its claims or the error it met."""


def _serve(
    index: int,
    barrier: multiprocessing.synchronize.Barrier,
    jobs: multiprocessing.queues.SimpleQueue[Job | None],
    results: multiprocessing.queues.Queue[Result],
) -> None:
    while (job := jobs.get()) is not None:
        try:
            results.put((index, _run(index, job, barrier)))
        except BaseException as e:
            results.put((index, f"{type(e).__name__}: {e}"))
    # Tearing down 64 interpreters (SQLAlchemy, Flask...) costs seconds of CPU; nothing is left
    # to clean up once the results are flushed.
    results.close()
    results.join_thread()
    os._exit(0)


def _run(index: int, job: Job, barrier: multiprocessing.synchronize.Barrier) -> list[str]:
    # One engine for the store and the handler, as an app would share its own: one connection
    # per racer, so 64 racers stay inside PostgreSQL's default of 100 connections.
    engine = sa.create_engine(job.url)
    try:
        store = SQLAlchemyStore(engine, table=job.table)
        side = side_table(job.side)
        try:
            # Every racer creates the table at once: creation must tolerate the race too.
            store.create_table()
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except BaseException:
            barrier.abort()
            raise
        barrier.wait(BARRIER_TIMEOUT)
        run = handle_in_transaction if job.in_transaction else handle
        return [run(store, engine, side, key, job.lease, index) for key in job.keys]
    finally:
        engine.dispose()


def context() -> multiprocessing.context.BaseContext:
    """Processes forked from a fresh server process that imported this module once.

    Like ``spawn``, children share nothing with pytest's process (no connections, no threads);
    unlike ``spawn``, 64 children do not each import SQLAlchemy and Flask again (a second of CPU
    each). Falls back to ``spawn`` where there is no ``forkserver``.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # The server does not see pytest's sys.path (Python 3.11 ignores it), so preload what this
    # module imports rather than the module itself; a module that fails to import is skipped.
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


@contextlib.contextmanager
def _no_main_module() -> t.Iterator[None]:
    """Keep children from re-running the parent's ``__main__`` (the pytest script), 64 times over."""
    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


class Racers:
    """``size`` spawned processes, started once and released together by a barrier for each job."""

    def __init__(self, size: int) -> None:
        ctx = context()
        self.size = size
        self._barrier = ctx.Barrier(size)
        self._jobs: list[multiprocessing.queues.SimpleQueue[Job | None]] = [
            ctx.SimpleQueue() for _ in range(size)
        ]
        self._results: multiprocessing.queues.Queue[Result] = ctx.Queue()
        self._processes = [
            ctx.Process(target=_serve, args=(i, self._barrier, self._jobs[i], self._results), daemon=True)
            for i in range(size)
        ]
        with _no_main_module():
            for process in self._processes:
                process.start()

    def run(self, jobs: list[Job], timeout: float = 120.0) -> list[list[str]]:
        """Give racer ``i`` job ``i`` and return each racer's claim kinds, in racer order."""
        assert len(jobs) == self.size
        self._barrier.reset()
        for jobs_queue, job in zip(self._jobs, jobs, strict=True):
            jobs_queue.put(job)
        deadline = time.monotonic() + timeout
        results: dict[int, list[str] | str] = {}
        while len(results) < self.size:
            try:
                index, result = self._results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"only {len(results)} of {self.size} racers answered in {timeout} s"
                ) from None
            results[index] = result
        errors = {i: r for i, r in results.items() if isinstance(r, str)}
        if errors:
            raise AssertionError(f"racers failed: {errors}")
        return [t.cast(list[str], results[i]) for i in range(self.size)]

    def close(self) -> None:
        """Stop the racers and release their queues."""
        for jobs_queue in self._jobs:
            jobs_queue.put(None)
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
            process.close()
        for jobs_queue in self._jobs:
            jobs_queue.close()
        self._results.close()
        self._results.join_thread()


def crash_while_handling(
    url: str, table: str, side: str, key: str, lease: float, claimed: multiprocessing.synchronize.Event
) -> None:
    """Claim ``key``, start the handler's transaction, signal ``claimed`` and wait to be killed."""
    engine = sa.create_engine(url)
    store = SQLAlchemyStore(engine, table=table)
    claim = store.claim(key, FINGERPRINT, lease=lease)
    assert isinstance(claim, Acquired), claim
    with engine.begin() as conn:
        conn.execute(side_table(side).insert().values(ikey=key, worker=-1))
        claimed.set()
        time.sleep(600)
