"""The transactional outbox: jobs enqueued inside a handler's transaction leave with its commit.

:meth:`Handler.enqueue <flask_commands.Handler.enqueue>` called inside a handler's unit of work
(a SQLAlchemy session) writes the job to the table ``commands_outbox`` in that session's
transaction instead of sending it. Right after the outermost commit the process publishes the
jobs it holds in memory (no query: the envelopes are in hand) and, a moment later, deletes their
rows, many in one statement. A rollback (or a rolled-back savepoint) takes the rows and the jobs
in memory away, so nothing is sent. A row left behind (the broker was down, the process died
between commit and publish) is published later by :func:`relay`, run by ``flask commands relay``
or the Celery task ``flask_commands.relay_outbox``.

The relay leaves rows younger than its ``grace`` period (:data:`GRACE`) to the process that
committed them, and claims older ones with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB
(on SQLite, which has one writer at a time, the ``DELETE ... RETURNING`` is the claim), so relays
share the work. A row is deleted only after the broker accepted its job, so a job is never lost;
it may be published twice (a process dies after the publish, before the delete; or a publish
takes longer than the grace period): the task id is the command id and the worker runs it under
idempotency, so the effect happens once.

Each row keeps the message headers captured at enqueue time (the OpenTelemetry trace context,
when the application uses OpenTelemetry), so a job published by the relay, long after its
request, carries the same headers as one published right after the commit.
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
import sys
import threading
import time
import typing as t
import weakref

import sqlalchemy as sa
import sqlalchemy.orm
from flask import Flask

from .handler import _JOB_TASK

_log = logging.getLogger("flask_commands")

#: The name of the outbox table.
TABLE_NAME = "commands_outbox"

#: The metadata holding only the outbox table (Alembic: include it in ``target_metadata``).
metadata = sa.MetaData()

#: The outbox table: one row per job waiting to be published, oldest first by ``id``.
table = sa.Table(
    TABLE_NAME,
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("task_id", sa.String(36), nullable=False),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("envelope", sa.Text(), nullable=False),
    # When the job may run (epoch seconds, from ``countdown``/``eta``), or NULL for at once.
    sa.Column("eta", sa.Double(), nullable=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    # The message headers captured at enqueue time (a JSON object: the trace context), or NULL.
    # The newest column: last, where ALTER TABLE ... ADD COLUMN puts it (create_table adds it).
    sa.Column("headers", sa.Text(), nullable=True),
    # SQLite: never reuse the id of a deleted row.
    sqlite_autoincrement=True,
)

#: Rows claimed per transaction by the relay.
BATCH = 100
#: Seconds the relay leaves a fresh row to the process that committed it, by default.
GRACE = 10.0
# Seconds between a publish after commit and the DELETE of its row: the rows published meanwhile
# go in the same statement. Well below GRACE, so the relay does not publish them again.
_DELETE_DELAY = 0.5
# Ids per DELETE statement.
_DELETE_CHUNK = 500

# session.info key: the jobs written in the session's current transaction.
_PENDING = "_commands_outbox"
# Engines whose outbox table was seen, so the check costs one query per engine.
_checked: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
# Compiled once: SQLAlchemy's statement cache then finds it at every enqueue.
_INSERT = table.insert()


class _Job(t.NamedTuple):
    """A job written to the outbox in a transaction: what publishing it needs, held in memory."""

    row_id: int
    task_id: str
    queue: str
    envelope: dict[str, t.Any]
    headers: dict[str, str] | None
    eta: float | None
    engine: sa.Engine
    celery_app: t.Any
    # The innermost transaction that wrote it: if that rolls back, the job goes with it.
    transaction: sa.orm.SessionTransaction


def create_table(bind: sa.Engine | sa.Connection) -> None:
    """Create the outbox table in ``bind``'s database if it is missing, or add the columns it lacks.

    A table made by an earlier version gains the ``headers`` column (``ALTER TABLE ... ADD
    COLUMN``); with Alembic, add it in a migration instead (docs/background.md).
    """
    metadata.create_all(bind, checkfirst=True)
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            _add_missing_columns(conn)
    else:
        _add_missing_columns(bind)


def _add_missing_columns(conn: sa.Connection) -> None:
    present = {column["name"] for column in sa.inspect(conn).get_columns(TABLE_NAME)}
    preparer = conn.dialect.identifier_preparer
    for column in table.columns:
        if column.name not in present:
            name, kind = preparer.format_column(column), column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {name} {kind}")


def app_engines(app: Flask) -> list[sa.Engine]:
    """The databases of ``app``'s Flask-SQLAlchemy (its default and its binds), if it has one."""
    extension = app.extensions.get("sqlalchemy")
    if extension is None:
        return []
    with app.app_context():
        return list(dict.fromkeys(extension.engines.values()))


def create_tables(app: Flask) -> list[sa.Engine]:
    """Create the outbox table in each of ``app``'s Flask-SQLAlchemy databases; return them."""
    engines = app_engines(app)
    for engine in engines:
        create_table(engine)
    return engines


def stage(
    scoped: sa.orm.Session | sa.orm.scoped_session[t.Any],
    celery_app: t.Any,
    *,
    task_id: str,
    queue: str,
    envelope: dict[str, t.Any],
    eta: float | None,
) -> None:
    """Write one job to the outbox in the transaction of ``scoped`` (a session, or a scoped_session).

    The job is published after the outermost commit; a rollback takes it away.

    :raises RuntimeError: the session's database has no outbox table, or one without the
        ``headers`` column.
    """
    session: sa.orm.Session = scoped() if isinstance(scoped, sa.orm.scoped_session) else scoped
    connection = session.connection()
    engine = connection.engine
    if engine not in _checked:
        _check_table(connection)
        _checked.add(engine)
    headers = _propagation_headers()
    row = {
        "task_id": task_id,
        "queue": queue,
        "envelope": json.dumps(envelope, separators=(",", ":")),
        "eta": eta,
        "created_at": time.time(),
        "headers": json.dumps(headers, separators=(",", ":")) if headers else None,
    }
    result = connection.execute(_INSERT, row)
    row_id = int(t.cast("tuple[int]", result.inserted_primary_key)[0])
    transaction = session.get_nested_transaction() or session.get_transaction()
    assert transaction is not None  # session.connection() began one
    job = _Job(row_id, task_id, queue, envelope, headers, eta, engine, celery_app, transaction)
    session.info.setdefault(_PENDING, []).append(job)


def _check_table(connection: sa.Connection) -> None:
    where = connection.engine.url.render_as_string(hide_password=True)
    inspector = sa.inspect(connection)
    if not inspector.has_table(TABLE_NAME):
        raise RuntimeError(
            f"The database {where!r} of the handler's session has no {TABLE_NAME!r} table for"
            " transactional enqueue; run 'flask commands init-db', call 'Commands.create_tables()',"
            " or add flask_commands.outbox.table to your Alembic migrations."
        )
    present = {column["name"] for column in inspector.get_columns(TABLE_NAME)}
    missing = [column.name for column in table.columns if column.name not in present]
    if missing:
        raise RuntimeError(
            f"The {TABLE_NAME!r} table of the database {where!r} has no {missing[0]!r} column (it was"
            " made by an earlier version); run 'flask commands init-db' or"
            " 'Commands.create_tables()', which add it, or add it in an Alembic migration."
        )


def _propagation_headers() -> dict[str, str] | None:
    """The trace context to send with the job, when the application uses OpenTelemetry."""
    # Imported only once the application has imported OpenTelemetry: without it, this costs a
    # dictionary lookup and nothing of OpenTelemetry is loaded.
    if "opentelemetry" not in sys.modules:
        return None
    propagate = importlib.import_module("opentelemetry.propagate")
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def relay(bind: sa.Engine, celery_app: t.Any, *, limit: int | None = None, grace: float = GRACE) -> int:
    """Publish the jobs left in ``bind``'s outbox, oldest first; return how many were published.

    Rows are claimed in batches, so several relays share the work and never publish one row at
    the same time. A row the broker refuses stays for the next pass, and this pass stops.

    :param limit: publish at most this many rows; all of them by default.
    :param grace: leave rows younger than this many seconds (by their ``created_at``, this
        machine's clock) to the process that committed them, which publishes them itself; ``0``
        takes every row.
    :raises RuntimeError: the broker refused a row (its error is logged); the rows published
        before it are deleted.
    """
    if not grace >= 0:
        raise ValueError(f"grace must be a number of seconds, 0 or more, not {grace!r}.")
    cutoff = time.time() - grace
    published = 0
    while limit is None or published < limit:
        size = BATCH if limit is None else min(BATCH, limit - published)
        done, complete = _relay_batch(bind, celery_app, cutoff=cutoff, limit=size)
        published += done
        if not complete:
            raise _RelayStopped(published)
        if done < size:
            break
    return published


class _RelayStopped(RuntimeError):
    """The broker refused a row; ``published`` rows were published before it."""

    def __init__(self, published: int) -> None:
        super().__init__(f"the broker refused a job after {published} were published.")
        self.published = published


def _relay_batch(bind: sa.Engine, celery_app: t.Any, *, cutoff: float, limit: int) -> tuple[int, bool]:
    """Claim, publish and delete up to ``limit`` rows older than ``cutoff``, oldest first; one transaction.

    Returns how many rows were published and whether every claimed row was.
    """
    c = table.c
    columns = (c.id, c.task_id, c.queue, c.envelope, c.eta, c.headers)
    dialect = bind.dialect.name
    oldest = sa.select(c.id).where(c.created_at <= cutoff).order_by(c.id).limit(limit)
    with bind.connect() as conn:
        if dialect in ("mysql", "mariadb"):
            # REPEATABLE READ would add gap locks, on which two relays can deadlock.
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        transaction = conn.begin()
        if dialect == "sqlite":
            # The claim is the DELETE itself: it takes SQLite's single write lock, so another
            # relay waits and then finds the rows gone; a failed publish rolls it back.
            claim = table.delete().where(c.id.in_(oldest.scalar_subquery())).returning(*columns)
            rows = sorted(conn.execute(claim), key=lambda row: row.id)
        else:
            if dialect == "postgresql":
                # A delete lost in a database crash only means a duplicate publish, which is
                # harmless: no need to wait for the disk.
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            rows = list(conn.execute(oldest.with_only_columns(*columns).with_for_update(skip_locked=True)))
        sent: list[int] = []
        failure: BaseException | None = None
        for row in rows:
            try:
                _send(celery_app, row.task_id, row.queue, json.loads(row.envelope), row.eta, row.headers)
            except Exception as e:
                failure = e
                break
            sent.append(row.id)
        if failure is not None:
            _log.warning("Could not publish job %s from the outbox: %r", rows[len(sent)].task_id, failure)
        if dialect == "sqlite":
            if failure is not None:
                # Put every claimed row back: those already published will be published again,
                # which is harmless (the job runs under idempotency).
                transaction.rollback()
                return 0, False
        elif sent:
            # One primary-key lookup per row: InnoDB locks the record after a range it scans,
            # which another relay may hold (a deadlock), but a point lookup locks only its row.
            conn.execute(table.delete().where(c.id == sa.bindparam("row_id")), [{"row_id": i} for i in sent])
        transaction.commit()
    return len(sent), failure is None


def _send(
    celery_app: t.Any,
    task_id: str,
    queue: str,
    envelope: dict[str, t.Any],
    eta: float | None,
    headers: str | dict[str, str] | None,
) -> None:
    if isinstance(headers, str):
        headers = json.loads(headers)
    celery_app.send_task(
        _JOB_TASK,
        args=[envelope],
        task_id=task_id,
        queue=queue,
        eta=None if eta is None else datetime.datetime.fromtimestamp(eta, datetime.UTC),
        headers=headers or None,
        serializer="json",
        # The row waits in the outbox: a broker that is down is the relay's to retry, not the
        # request's to wait for.
        retry=False,
    )


def _publish_committed(jobs: list[_Job]) -> None:
    """Publish the jobs of a committed transaction from memory; leave the rest to the relay on a failure."""
    published: list[_Job] = []
    try:
        for job in jobs:
            _send(job.celery_app, job.task_id, job.queue, job.envelope, job.eta, job.headers)
            published.append(job)
    except Exception as e:
        # The commit succeeded: the request must not fail because the broker is down now. The
        # rows stay in the outbox; the relay publishes them once they are older than its grace.
        _log.warning("Could not publish %d outbox job(s) after commit: %r", len(jobs) - len(published), e)
    if published:
        _deletions.add(published)


class _Deletions:
    """The rows published after their commit, deleted a moment later, many per statement.

    A row must outlive its publish only until it is deleted: a process that dies first leaves
    it to the relay, which publishes it again (harmless). Deleting later and together costs one
    statement per ``_DELETE_DELAY`` instead of a transaction per commit.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flushing = threading.Lock()
        self.ids: dict[sa.Engine, list[int]] = {}
        self.timer: threading.Timer | None = None

    def add(self, jobs: list[_Job]) -> None:
        with self.lock:
            for job in jobs:
                if job.engine not in _watched:
                    sa.event.listen(job.engine, "engine_disposed", _engine_disposed)
                    _watched.add(job.engine)
                self.ids.setdefault(job.engine, []).append(job.row_id)
            if self.timer is not None:
                return
            # Not a daemon: an exiting process deletes what it published before it goes.
            timer = threading.Timer(_DELETE_DELAY, self.flush)
            timer.name = "flask_commands outbox deletions"
            try:
                timer.start()
            except RuntimeError:
                # No new thread at interpreter shutdown: the relay publishes these rows again.
                return
            self.timer = timer

    def flush(self, engine: sa.Engine | None = None) -> bool:
        """Delete the published rows (of ``engine`` only, when given); return whether there were any."""
        with self.flushing:
            with self.lock:
                if engine is None:
                    batches, self.ids, self.timer = self.ids, {}, None
                else:
                    batches = {engine: self.ids.pop(engine)} if engine in self.ids else {}
            for each, ids in batches.items():
                try:
                    _delete(each, ids)
                except Exception as e:
                    # The relay publishes these rows again after its grace period: harmless.
                    _log.warning("Could not delete %d published job(s) from the outbox: %r", len(ids), e)
        return bool(batches)


# Engines whose disposal flushes their deletions (listened once, kept across a fork).
_watched: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _engine_disposed(engine: sa.Engine) -> None:
    # Delete its rows now rather than later through a pool nobody closes, then close the
    # connection that took: the new pool of a disposed engine stays empty.
    if _deletions.flush(engine):
        engine.pool.dispose()


def _delete(engine: sa.Engine, ids: list[int]) -> None:
    c = table.c
    with engine.connect() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            # An id already gone (the relay published it too) would take a gap lock under
            # REPEATABLE READ, blocking the INSERTs of fresh rows.
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            for start in range(0, len(ids), _DELETE_CHUNK):
                conn.execute(table.delete().where(c.id.in_(ids[start : start + _DELETE_CHUNK])))


_deletions = _Deletions()


def _after_fork() -> None:
    # The parent's timer thread does not exist in the child: the child starts afresh (the
    # parent deletes what it published).
    global _deletions
    _deletions = _Deletions()


os.register_at_fork(after_in_child=_after_fork)


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _after_commit(session: sa.orm.Session) -> None:
    # Releasing a savepoint fires this event too: only the outermost commit publishes.
    if session.in_nested_transaction():
        return
    jobs = session.info.pop(_PENDING, None)
    if jobs:
        _publish_committed(jobs)


@sa.event.listens_for(sa.orm.Session, "after_transaction_end")
def _after_transaction_end(session: sa.orm.Session, transaction: sa.orm.SessionTransaction) -> None:
    # The outermost transaction ended without publishing (after_commit comes first): rolled back,
    # or closed with the session. Its jobs must never leave with a later transaction.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


@sa.event.listens_for(sa.orm.Session, "after_soft_rollback")
def _after_rollback(session: sa.orm.Session, previous_transaction: sa.orm.SessionTransaction) -> None:
    jobs: list[_Job] | None = session.info.get(_PENDING)
    if jobs and previous_transaction.parent is not None:
        # A savepoint rolled back: its rows are gone from the table, so are its jobs (and those
        # of savepoints inside it, released or not).
        jobs[:] = [job for job in jobs if not _within(job.transaction, previous_transaction)]


def _within(transaction: sa.orm.SessionTransaction | None, outer: sa.orm.SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is outer:
            return True
        transaction = transaction.parent
    return False
