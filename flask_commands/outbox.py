"""The transactional outbox: jobs enqueued inside a handler's transaction leave with its commit.

:meth:`Handler.enqueue <flask_commands.Handler.enqueue>` called inside a handler's unit of work
(a SQLAlchemy session) writes the job's envelope to the table ``commands_outbox`` in that
session's transaction instead of sending it. Right after the outermost commit the rows are
published to the broker and deleted; a rollback (or a rolled-back savepoint) takes them away,
so nothing is sent. A row left behind (the broker was down, the process died between commit and
publish) is published later by :func:`relay`, run by ``flask commands relay`` or the Celery task
``flask_commands.relay_outbox``.

Each row is claimed by one publisher at a time and deleted in the same transaction once the
broker accepted it: the relay claims the oldest rows with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL and MariaDB, so relays share the work; on SQLite, which has one writer at a time, and
for the rows of a fresh commit, the ``DELETE ... RETURNING`` is the claim, rolled back if the
broker refuses. A row may still be published twice (a publisher dies after the
broker accepted it, before its delete commits): the task id is the command id and the worker runs
it under idempotency, so the effect happens once.
"""

from __future__ import annotations

import datetime
import json
import logging
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
    # SQLite: never reuse the id of a deleted row.
    sqlite_autoincrement=True,
)

# session.info key: the outbox rows written in the session's current transaction.
_PENDING = "_commands_outbox"
# Engines whose outbox table was seen, so the check costs one query per engine.
_checked: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
#: Rows claimed per transaction by the relay.
BATCH = 100


class _Pending(t.NamedTuple):
    """The rows a session's transaction wrote, and where to publish them once it commits."""

    engine: sa.Engine
    celery_app: t.Any
    ids: list[int]


def create_table(bind: sa.Engine | sa.Connection) -> None:
    """Create the outbox table in ``bind``'s database if it is missing."""
    metadata.create_all(bind, checkfirst=True)


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
    session: sa.orm.Session,
    celery_app: t.Any,
    *,
    task_id: str,
    queue: str,
    envelope: dict[str, t.Any],
    eta: float | None,
) -> None:
    """Write one job to the outbox in ``session``'s transaction, to be published after it commits.

    :raises RuntimeError: the session's database has no outbox table.
    """
    connection = session.connection()
    engine = connection.engine
    if engine not in _checked:
        if not sa.inspect(connection).has_table(TABLE_NAME):
            raise RuntimeError(
                f"The database {engine.url.render_as_string(hide_password=True)!r} of the handler's"
                f" session has no {TABLE_NAME!r} table for transactional enqueue; run 'flask commands"
                " init-db', call 'Commands.create_tables()', or add flask_commands.outbox.table to your"
                " Alembic migrations."
            )
        _checked.add(engine)
    row = {
        "task_id": task_id,
        "queue": queue,
        "envelope": json.dumps(envelope, separators=(",", ":")),
        "eta": eta,
        "created_at": time.time(),
    }
    result = connection.execute(table.insert().values(row))
    row_id = int(t.cast("tuple[int]", result.inserted_primary_key)[0])
    # Usually one entry; a session bound to several databases, or jobs for several Celery apps,
    # publish each group after the commit.
    pendings: list[_Pending] = session.info.setdefault(_PENDING, [])
    for pending in pendings:
        if pending.engine is engine and pending.celery_app is celery_app:
            break
    else:
        pending = _Pending(engine, celery_app, [])
        pendings.append(pending)
    pending.ids.append(row_id)


def relay(bind: sa.Engine, celery_app: t.Any, *, limit: int | None = None) -> int:
    """Publish the jobs left in ``bind``'s outbox, oldest first; return how many were published.

    Rows are claimed in batches, so several relays (and the publishers of fresh commits) share
    the work and never publish one row at the same time. A row the broker refuses stays for the
    next pass, and this pass stops.

    :param limit: publish at most this many rows; all of them by default.
    :raises RuntimeError: the broker refused a row (its error is logged); the rows published
        before it are deleted.
    """
    published = 0
    while limit is None or published < limit:
        size = BATCH if limit is None else min(BATCH, limit - published)
        done, complete = _publish(bind, celery_app, ids=None, limit=size)
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


def _publish(bind: sa.Engine, celery_app: t.Any, *, ids: list[int] | None, limit: int) -> tuple[int, bool]:
    """Claim, publish and delete up to ``limit`` rows (of ``ids``, or the oldest); one transaction.

    Returns how many rows were published and whether every claimed row was.
    """
    c = table.c
    columns = (c.id, c.task_id, c.queue, c.envelope, c.eta)
    dialect = bind.dialect.name
    with bind.connect() as conn:
        if ids is None and dialect in ("mysql", "mariadb"):
            # REPEATABLE READ would add gap locks, on which two relays can deadlock.
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        transaction = conn.begin()
        if ids is not None or dialect == "sqlite":
            # The claim is the DELETE itself: it locks the rows (PostgreSQL, MariaDB) or takes
            # SQLite's single write lock, so another publisher waits and then finds them gone.
            # Fresh rows after a commit take one statement; a failed publish rolls it back.
            if dialect == "postgresql":
                # A delete lost in a database crash only means a duplicate publish, which is
                # harmless: no need to wait for the disk.
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            if ids is not None:
                where = c.id.in_(ids)
            else:
                where = c.id.in_(sa.select(c.id).order_by(c.id).limit(limit).scalar_subquery())
            deleted = conn.execute(table.delete().where(where).returning(*columns))
            rows = sorted(deleted, key=lambda row: row.id)
            claimed_by_delete = True
        else:
            query = sa.select(*columns).order_by(c.id).limit(limit).with_for_update(skip_locked=True)
            rows = list(conn.execute(query))
            claimed_by_delete = False
        sent: list[int] = []
        failure: BaseException | None = None
        for row in rows:
            try:
                _send(celery_app, row)
            except Exception as e:
                failure = e
                break
            sent.append(row.id)
        if failure is not None:
            _log.warning("Could not publish job %s from the outbox: %r", rows[len(sent)].task_id, failure)
        if claimed_by_delete:
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


def _send(celery_app: t.Any, row: t.Any) -> None:
    eta = None if row.eta is None else datetime.datetime.fromtimestamp(row.eta, datetime.UTC)
    celery_app.send_task(
        _JOB_TASK,
        args=[json.loads(row.envelope)],
        task_id=row.task_id,
        queue=row.queue,
        eta=eta,
        serializer="json",
        # The row waits in the outbox: a broker that is down is the relay's to retry, not the
        # request's to wait for.
        retry=False,
    )


def _publish_pending(pending: _Pending) -> None:
    """Publish the rows a committed transaction wrote; any failure leaves them to the relay."""
    try:
        for start in range(0, len(pending.ids), BATCH):
            _publish(pending.engine, pending.celery_app, ids=pending.ids[start : start + BATCH], limit=BATCH)
    except Exception as e:
        # The commit succeeded: the request must not fail because the broker or the database is
        # down now. The rows stay in the outbox for the relay.
        _log.warning("Could not publish %d outbox job(s) after commit: %r", len(pending.ids), e)


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _after_commit(session: sa.orm.Session) -> None:
    # Releasing a savepoint fires this event too: only the outermost commit publishes.
    if session.in_nested_transaction():
        return
    for pending in session.info.pop(_PENDING, ()):
        _publish_pending(pending)


@sa.event.listens_for(sa.orm.Session, "after_soft_rollback")
def _after_rollback(session: sa.orm.Session, previous_transaction: sa.orm.SessionTransaction) -> None:
    # Only the outermost rollback drops the list: rows of a rolled-back savepoint are gone from
    # the table, and the publisher only publishes rows it finds.
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)
