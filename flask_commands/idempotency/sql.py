"""An idempotency store in a database table, shared by every process: SQLite, PostgreSQL, MariaDB/MySQL.

Every state change is one atomic statement, never a check followed by a write:

- claim: ``INSERT … ON CONFLICT DO NOTHING RETURNING key`` (PostgreSQL, SQLite; ``INSERT IGNORE``
  on MariaDB/MySQL) takes a new key in one statement. Otherwise the row is read to tell the
  duplicate why, and an expired row is taken over by ``UPDATE … WHERE key = ? AND expires_at <=
  now``, which only one claimant can win.
- complete: ``UPDATE … WHERE key = ? AND token = ? AND outcome IS NULL``.

Inside a handler's transaction (``claim(connection=...)``, a store on the handler's database)
the claim writes nothing: one ``SELECT`` takes the key's lock without waiting
(``pg_try_advisory_xact_lock``, ``GET_LOCK(name, 0)``, or a ``lockf`` byte of the SQLite sidecar
file ``<database>-commands-locks``) and reads its record; ``complete(connection=...)`` then
inserts the record, last in the transaction, refusing one committed meanwhile. A rollback, or
the death of the process, leaves nothing behind.

The store's own statements run in autocommit mode: each is a transaction by itself, and no
``BEGIN``/``COMMIT`` round trips are spent around them. Times are epoch seconds (UTC) from the
Python clock, stored as double precision on every dialect.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
import typing as t
import weakref

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from .store import _KEY_MAX_LENGTH
from .store import Acquired
from .store import Claim
from .store import InProgress
from .store import LeaseLost
from .store import OutcomeKind
from .store import Record
from .store import StoredResponse
from .store import StoreUnavailable
from .store import _check_claim
from .store import _check_complete
from .store import _check_key
from .store import _datetime
from .store import _decide
from .store import _timestamp

_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb")
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
_LIBPQ_DRIVERS = ("psycopg", "psycopg2", "psycopg2cffi")
# A claim retries only when the row it lost to vanished, or was taken over by another claimant,
# between two of its statements.
_CLAIM_ATTEMPTS = 4


def _make_table(name: str, metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        # MySQL's string collations would make "abc", "ABC" and "abc " one key (case-insensitive,
        # padding with spaces); VARBINARY compares the UTF-8 bytes. 512 characters are at most
        # 2048 bytes, inside InnoDB's 3072-byte index limit.
        sa.Column(
            "key",
            sa.String(_KEY_MAX_LENGTH).with_variant(mysql.VARBINARY(4 * _KEY_MAX_LENGTH), "mysql", "mariadb"),
            primary_key=True,
        ),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        # NULL while the claimant runs; "ok", "conflict" or "rejected" once done.
        sa.Column("outcome", sa.String(16), nullable=True),
        # Epoch seconds: the end of the lease while running, of the record's life once done.
        sa.Column("expires_at", sa.Double(), nullable=False, index=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        # MySQL's BLOB stops at 64 KiB; a rendered page can be larger.
        sa.Column("body", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"), nullable=True),
    )


class SQLAlchemyStore:
    """An idempotency store in the table ``table`` of a database, shared by all processes.

    The table is created on first use if missing (or by :meth:`create_table`); add
    :attr:`table` to your Alembic metadata to manage it with migrations instead. Given a URL, the
    store creates and owns its engine: autocommit, commits that do not wait for the disk (the
    handler's own commit flushes them), SQLite in WAL mode; :meth:`dispose` closes it. Given an
    engine, the store shares its pool and leaves its settings alone. Engines are disposed in a
    forked child, so a pre-forking server never shares connections.

    :param engine_or_url: an engine, or a database URL for the store to create one.
    :param table: the name of the table.
    :param connect_timeout: seconds to wait for a connection to a server (an engine the store
        creates from a URL; its pool also pings a connection before reusing it, so a restarted
        database costs no failed request). A ``connect_timeout`` in the URL wins.
    :param statement_timeout: seconds one of the store's own statements may run (PostgreSQL's
        ``statement_timeout``, MariaDB's ``max_statement_time``; SQLite waits this long for its
        write lock). Its statements inside a handler's transaction follow the handler's engine.
    :raises ValueError: the database is not SQLite, PostgreSQL or MariaDB/MySQL.
    """

    table: sa.Table
    """The store's table, in its own :class:`~sqlalchemy.MetaData`."""

    def __init__(
        self,
        engine_or_url: sa.Engine | sa.URL | str,
        *,
        table: str = "commands_idempotency",
        connect_timeout: float = 10.0,
        statement_timeout: float = 10.0,
    ) -> None:
        url = engine_or_url.url if isinstance(engine_or_url, sa.Engine) else sa.make_url(engine_or_url)
        if url.get_backend_name() not in _DIALECTS:
            raise ValueError(
                f"SQLAlchemyStore does not support the {url.get_backend_name()!r} dialect;"
                " use SQLite, PostgreSQL or MariaDB/MySQL, or MemoryStore."
            )
        if isinstance(engine_or_url, sa.Engine):
            self._engine = engine_or_url
            self._owns_engine = False
            self._autocommit: sa.Engine = engine_or_url.execution_options(isolation_level="AUTOCOMMIT")
        else:
            self._engine = _create_engine(url, connect_timeout, statement_timeout)
            self._owns_engine = True
            self._autocommit = self._engine
        self.table = _make_table(table, sa.MetaData())
        self._statements = _Statements(self.table, self._engine.dialect.name)
        self._binary_keys = self._engine.dialect.name in ("mysql", "mariadb")
        self._ready = False
        self._ready_lock = threading.Lock()
        self._same: weakref.WeakKeyDictionary[sa.Engine, bool] = weakref.WeakKeyDictionary()
        self._file_locks: tuple[int, _FileLocks] | None = None
        # Tests replace the clock to expire leases without sleeping.
        self._clock: t.Callable[[], float] = time.time
        _dispose_after_fork(self._engine)

    def __repr__(self) -> str:
        return f"<SQLAlchemyStore {self.table.name!r} at {self._url()}>"

    def create_table(self) -> None:
        """Create the store's table and index if they do not exist yet.

        :raises StoreUnavailable: the database cannot be reached.
        """
        with self._unavailable():
            try:
                self.table.create(self._engine, checkfirst=True)
            except sa.exc.DBAPIError:
                # Another process created the table between our check and our CREATE TABLE.
                if not sa.inspect(self._engine).has_table(self.table.name):
                    raise
        self._ready = True

    def dispose(self) -> None:
        """Close the connections of the engine the store created; an engine passed in is left alone."""
        if self._owns_engine:
            self._engine.dispose()

    def same_database(self, bind: sa.Engine | sa.Connection) -> bool:
        """Return whether ``bind`` reaches the store's database, so ``complete(connection=...)`` applies.

        Engines match when they share a pool, or when their URLs name the same backend, user, host,
        port and database (passwords and drivers aside; SQLite files by their real path).
        """
        engine = bind.engine if isinstance(bind, sa.Connection) else bind
        if engine.pool is self._engine.pool:
            return True
        # Asked on every keyed command: remembered per engine (an engine's URL never changes;
        # hashing a URL renders it, and a SQLite path is resolved on disk).
        same = self._same.get(engine)
        if same is None:
            mine = _identity(self._engine.url)
            same = self._same[engine] = mine is not None and mine == _identity(engine.url)
        return same

    def _sqlite_locks(self) -> _FileLocks:
        """The lock file of the store's SQLite database, for this process (looked up once per process)."""
        pid = os.getpid()
        cached = self._file_locks
        if cached is None or cached[0] != pid:
            cached = self._file_locks = (pid, _file_locks(self._engine.url))
        return cached[1]

    def claim(
        self, key: str, fingerprint: str, *, lease: float, connection: sa.Connection | None = None
    ) -> Claim:
        """Claim ``key`` atomically for ``lease`` seconds, or say why not.

        :param connection: the handler's connection in its open transaction (see
            :meth:`same_database`): the claim is then part of that transaction, so its rollback
            frees the key at once. A per-key lock taken with it (PostgreSQL's
            ``pg_try_advisory_xact_lock``, MariaDB's ``GET_LOCK``, a byte of the sidecar file
            ``<database>-commands-locks`` on SQLite) makes a duplicate see :class:`InProgress`
            at once instead of waiting for the transaction. Its errors are the handler's.
        :raises StoreUnavailable: the database cannot be reached (without ``connection``).
        """
        _check_claim(key, fingerprint, lease)
        statements = self._statements
        if connection is not None:
            self._ensure_table()
            return self._claim_in(connection, key, fingerprint, lease)
        with self._connect() as conn:
            for _ in range(_CLAIM_ATTEMPTS):
                now = self._clock()
                token = secrets.token_hex(16)
                params = {"k": self._key(key), "fp": fingerprint, "tok": token, "exp": now + lease}
                if statements.insert_new(conn, params):
                    return Acquired(token)
                row = conn.execute(statements.select, params).first()
                if row is None:
                    continue  # released or purged since our insert: claim again
                now = self._clock()
                decision = _decide(_record(key, row), row.expires_at, fingerprint, now)
                if decision is not None:
                    return decision
                params.update(now=now, exp=now + lease)
                if conn.execute(statements.take_over, params).rowcount == 1:
                    return Acquired(token)
        # The row kept vanishing or expiring under us; the caller may retry at once.
        return InProgress(retry_after=0.0)

    def _claim_in(self, conn: sa.Connection, key: str, fingerprint: str, lease: float) -> Claim:
        """Claim ``key`` inside ``conn``'s transaction: take its lock and read its record; write nothing yet.

        One statement on PostgreSQL and MariaDB (the lock is taken by the ``SELECT``); on SQLite
        a byte of the sidecar file is locked first. The record is inserted by :meth:`complete`,
        last in the transaction. The lock keeps other claimants out until the transaction ends
        (PostgreSQL) or its connection returns to the pool (MariaDB, SQLite: after the commit or
        rollback), and the insert refuses a record committed meanwhile (by a claimant whose
        snapshot predates our lock), so the handler never runs twice.
        """
        statements = self._statements
        dialect = conn.dialect.name
        # One clock reading: the statement skips the lock for a record done at `now`, and the
        # decision below must see that record as done too.
        now = self._clock()
        params: dict[str, t.Any] = {"k": self._key(key)}
        row: t.Any
        if dialect == "sqlite":
            locks = self._sqlite_locks()
            locked = locks.acquire(key)
            if locked:
                _hold(conn, ("file", key, locks))
            row = conn.execute(statements.select, params).first()
        else:
            params["lk"] = _lock_id(key, dialect)
            params["now"] = now
            try:
                row = conn.execute(statements.lock_and_read, params).one()
            except BaseException:
                if dialect != "postgresql":
                    _hold(conn, ("mysql", key, None))  # the lock may have been taken
                raise
            locked = bool(row.locked)
            if locked and dialect != "postgresql":
                _hold(conn, ("mysql", key, None))
            if row.fingerprint is None:
                row = None
        if row is not None:
            decision = _decide(_record(key, row), row.expires_at, fingerprint, now)
            if decision is not None:
                return decision
        if not locked:
            return InProgress(retry_after=0.1)
        if row is not None and dialect not in ("postgresql", "sqlite"):
            # An expired record: MariaDB's insert cannot replace it only when expired, so it goes now.
            conn.execute(statements.delete_expired, {**params, "now": now})
        token = _IN_TRANSACTION + secrets.token_hex(15)
        _claims(conn)[key] = (token, fingerprint)
        return Acquired(token)

    def complete(
        self,
        key: str,
        token: str,
        *,
        outcome: OutcomeKind,
        ttl: float,
        response: StoredResponse | None = None,
        connection: sa.Connection | None = None,
    ) -> None:
        """Mark ``token``'s claim done with ``outcome`` for ``ttl`` seconds.

        :param connection: the handler's connection, in its open transaction (see
            :meth:`same_database`): the record then commits or rolls back with its writes. Its
            errors are the handler's and pass through unchanged.
        :raises LeaseLost: the claim is no longer ``token``'s; roll the handler's transaction back.
        :raises StoreUnavailable: the database cannot be reached (without ``connection``).
        """
        _check_complete(outcome, ttl)
        params: dict[str, t.Any] = {
            "k": self._key(key),
            "tok": token,
            "outcome": outcome,
            "exp": self._clock() + ttl,
        }
        if response is None:
            statement = self._statements.complete
        else:
            statement = self._statements.complete_with_response
            params.update(_response_params(response))
        if connection is not None and token.startswith(_IN_TRANSACTION):
            # Claimed by _claim_in_postgresql: the record is written now, for the first time.
            claimed = _claims(connection).pop(key, None)
            if claimed is None or claimed[0] != token:
                raise LeaseLost(
                    f"idempotency key {key!r} was not claimed by token {token!r} on {connection!r}."
                )
            params.update(fp=claimed[1], now=self._clock())
            if response is None:
                params.update(status=None, headers=None, body=None)
            if connection.dialect.name in ("postgresql", "sqlite"):
                rowcount = 1 if connection.execute(self._statements.record, params).first() is not None else 0
            else:
                try:
                    rowcount = connection.execute(self._statements.record, params).rowcount
                except sa.exc.IntegrityError:
                    rowcount = 0  # a duplicate key: the record was committed meanwhile
        elif connection is not None:
            self._ensure_table()
            rowcount = connection.execute(statement, params).rowcount
        else:
            with self._connect() as conn:
                rowcount = conn.execute(statement, params).rowcount
        if rowcount != 1:
            raise LeaseLost(
                f"the claim on idempotency key {key!r} is no longer token {token!r}'s: its lease ended"
                " and another claimant took the key over."
            )

    def attach_response(self, key: str, token: str, response: StoredResponse) -> None:
        """Store ``response`` on the done record of ``token``'s claim.

        :raises LeaseLost: there is no done record of ``token``'s claim.
        :raises StoreUnavailable: the database cannot be reached.
        """
        params = {"k": self._key(key), "tok": token, **_response_params(response)}
        with self._connect() as conn:
            # MySQL counts matched rows (SQLAlchemy sets CLIENT_FOUND_ROWS), so attaching the
            # same response twice still counts 1.
            if conn.execute(self._statements.attach, params).rowcount != 1:
                raise LeaseLost(f"idempotency key {key!r} has no done record of token {token!r}.")

    def release(self, key: str, token: str) -> None:
        """Forget ``token``'s running claim on ``key``; do nothing when it is not running.

        :raises StoreUnavailable: the database cannot be reached.
        """
        with self._connect() as conn:
            conn.execute(self._statements.release, {"k": self._key(key), "tok": token})

    def get(self, key: str) -> Record | None:
        """Return the record of ``key``, or ``None`` when it is absent or expired.

        :raises StoreUnavailable: the database cannot be reached.
        """
        _check_key(key)
        with self._connect() as conn:
            row = conn.execute(self._statements.select, {"k": self._key(key)}).first()
        if row is None or row.expires_at <= self._clock():
            return None
        return _record(key, row)

    def purge(self, now: datetime.datetime | None = None) -> int:
        """Delete records expired at ``now`` (default: the current time); return how many.

        :raises StoreUnavailable: the database cannot be reached.
        """
        cutoff = _timestamp(now, self._clock())
        with self._connect() as conn:
            return conn.execute(self._statements.purge, {"now": cutoff}).rowcount

    def _key(self, key: str) -> str | bytes:
        # The key column is VARBINARY on MySQL (see _make_table), which PyMySQL binds from bytes.
        return key.encode() if self._binary_keys else key

    def _ensure_table(self) -> None:
        if not self._ready:
            with self._ready_lock:
                if not self._ready:
                    self.create_table()

    @contextlib.contextmanager
    def _connect(self) -> t.Iterator[sa.Connection]:
        self._ensure_table()
        with self._unavailable(), self._autocommit.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _unavailable(self) -> t.Iterator[None]:
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
            raise StoreUnavailable(
                f"the idempotency store at {self._url()} cannot be reached: {e.orig}"
            ) from e

    def _url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)


class _Statements:
    """The store's statements, built once; parameters are bound by name at execution."""

    def __init__(self, table: sa.Table, dialect: str) -> None:
        c = table.c
        by_key = c.key == sa.bindparam("k")
        by_token = c.token == sa.bindparam("tok")
        row: dict[str, t.Any] = {
            "key": sa.bindparam("k"),
            "fingerprint": sa.bindparam("fp"),
            "token": sa.bindparam("tok"),
            "expires_at": sa.bindparam("exp"),
        }
        cleared = {"outcome": None, "status": None, "headers": None, "body": None}
        claimable = c.expires_at <= sa.bindparam("now")
        # A new key: one statement that inserts or does nothing. ON CONFLICT DO NOTHING neither
        # locks nor writes the existing row, so a duplicate's claim stays a read. Psycopg 3 may
        # report rowcount -1 for it, hence RETURNING.
        self.insert: sa.Insert
        if dialect in ("postgresql", "sqlite"):
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            self.insert = insert(table).values(row).on_conflict_do_nothing()
        else:
            # INSERT IGNORE would also turn data errors into warnings: keys and fingerprints are
            # checked first.
            self.insert = sa.insert(table).prefix_with("IGNORE").values(row)
        self.insert_returning = self.insert.returning(c.key)
        # An expired key: the UPDATE re-checks expiry on the row's latest committed version
        # (PostgreSQL and InnoDB wait for a writer's lock, then re-read), so of two claimants of
        # one expired row only one updates it.
        self.take_over = (
            sa.update(table)
            .where(by_key, claimable)
            .values(
                fingerprint=sa.bindparam("fp"),
                token=sa.bindparam("tok"),
                expires_at=sa.bindparam("exp"),
                **cleared,
            )
        )
        # One statement per claim inside a handler's transaction: the lock, and the record if any
        # (NULLs if none); the record is inserted at the end, replacing only an expired one.
        one = sa.select(sa.literal(1).label("one")).subquery("one")
        read = (c.fingerprint, c.outcome, c.expires_at, c.status, c.headers, c.body)
        lock: sa.ColumnElement[t.Any]
        if dialect == "postgresql":
            lock = sa.func.pg_try_advisory_xact_lock(sa.bindparam("lk", type_=sa.BigInteger()))
        else:
            lock = sa.func.get_lock(sa.bindparam("lk", type_=sa.String()), 0)
        # A done, unexpired record is replayed: no lock is taken for it (CASE evaluates only the
        # branch it takes), so a replay on MariaDB owes no RELEASE_ALL_LOCKS round trip.
        done_now = c.outcome.is_not(None) & (c.expires_at > sa.bindparam("now"))
        maybe_lock = sa.case((done_now, sa.null()), else_=lock)
        self.lock_and_read = sa.select(maybe_lock.label("locked"), *read).select_from(
            one.outerjoin(table, by_key)
        )
        self.delete_expired = sa.delete(table).where(by_key, claimable)
        record_values: dict[str, t.Any] = {
            "key": sa.bindparam("k"),
            "fingerprint": sa.bindparam("fp"),
            "token": sa.bindparam("tok"),
            "outcome": sa.bindparam("outcome"),
            "expires_at": sa.bindparam("exp"),
            "status": sa.bindparam("status"),
            "headers": sa.bindparam("headers"),
            "body": sa.bindparam("body"),
        }
        self.record: sa.Executable
        if dialect in ("postgresql", "sqlite"):
            upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(
                record_values
            )
            replaced = ("fingerprint", "token", "outcome", "expires_at", "status", "headers", "body")
            self.record = upsert.on_conflict_do_update(
                index_elements=[c.key],
                set_={name: upsert.excluded[name] for name in replaced},
                where=c.expires_at <= sa.bindparam("now"),
            ).returning(c.key)
        else:
            self.record = sa.insert(table).values(record_values)
        self.select = sa.select(c.fingerprint, c.outcome, c.expires_at, c.status, c.headers, c.body).where(
            by_key
        )
        done: dict[str, t.Any] = {"outcome": sa.bindparam("outcome"), "expires_at": sa.bindparam("exp")}
        response: dict[str, t.Any] = {
            "status": sa.bindparam("status"),
            "headers": sa.bindparam("headers"),
            "body": sa.bindparam("body"),
        }
        running_claim = (by_key, by_token, c.outcome.is_(None))
        self.complete = sa.update(table).where(*running_claim).values(done)
        self.complete_with_response = sa.update(table).where(*running_claim).values({**done, **response})
        self.attach = sa.update(table).where(by_key, by_token, c.outcome.is_not(None)).values(response)
        self.release = sa.delete(table).where(*running_claim)
        self.purge = sa.delete(table).where(claimable)

    def insert_new(self, conn: sa.Connection, params: dict[str, t.Any]) -> bool:
        """Insert the key unless it exists; return whether it was inserted."""
        if conn.dialect.insert_returning:
            return conn.execute(self.insert_returning, params).first() is not None
        # MySQL (unlike MariaDB 10.5+) has no RETURNING; INSERT IGNORE's rowcount is exact.
        return conn.execute(self.insert, params).rowcount == 1


def _record(key: str, row: sa.Row[*tuple[t.Any, ...]]) -> Record:
    response = None
    if row.status is not None:
        headers = [(name, value) for name, value in json.loads(row.headers)]
        response = StoredResponse(row.status, headers, bytes(row.body))
    return Record(key, row.fingerprint, row.outcome, response, _datetime(row.expires_at))


def _response_params(response: StoredResponse) -> dict[str, t.Any]:
    return {
        "status": response.status,
        "headers": json.dumps([[name, value] for name, value in response.headers]),
        "body": response.body,
    }


def _create_engine(url: sa.URL, connect_timeout: float, statement_timeout: float) -> sa.Engine:
    connect_args: dict[str, t.Any] = {}
    backend = url.get_backend_name()
    if backend == "postgresql" and url.get_driver_name() in _LIBPQ_DRIVERS:
        if "connect_timeout" not in url.query:
            # libpq waits for the operating system's TCP timeout (minutes) by default.
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
        if "options" not in url.query:
            # The store's own commits need not wait for the disk: PostgreSQL writes one log in
            # order, so the handler's commit flushes every claim made before it. A crash can only
            # forget a claim whose handler never committed, and its retry then runs, as it should.
            timeout = round(statement_timeout * 1000)
            connect_args["options"] = f"-c synchronous_commit=off -c statement_timeout={timeout}"
    elif backend in ("mysql", "mariadb"):
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
    elif backend == "sqlite" and "timeout" not in url.query:
        connect_args["timeout"] = statement_timeout
    engine = sa.create_engine(
        url, isolation_level="AUTOCOMMIT", connect_args=connect_args, pool_pre_ping=True
    )
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        sa.event.listen(engine, "connect", _sqlite_wal)
    if backend in ("mysql", "mariadb"):

        def limit(dbapi_connection: t.Any, connection_record: t.Any) -> None:
            # MariaDB's max_statement_time is in seconds; MySQL's max_execution_time in
            # milliseconds (and for SELECT only).
            info = str(getattr(dbapi_connection, "get_server_info", lambda: "")())
            if "mariadb" in info.lower():
                statement = f"SET SESSION max_statement_time={statement_timeout:g}"
            else:
                statement = f"SET SESSION max_execution_time={round(statement_timeout * 1000)}"
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()

        sa.event.listen(engine, "connect", limit)
    return engine


def _sqlite_wal(dbapi_connection: t.Any, connection_record: t.Any) -> None:
    # WAL lets readers go on while a handler's transaction writes; the mode persists in the file.
    # synchronous=NORMAL skips the fsync at the store's own commits, for the same reason as
    # PostgreSQL's synchronous_commit=off: the WAL is one file, and a handler's (FULL) commit
    # syncs it up to and including every earlier claim.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _dispose_after_fork(engine: sa.Engine) -> None:
    # A forked child must not use its parent's pooled connections (two processes on one socket).
    # close=False drops the pool without closing the parent's connections; the weak reference
    # lets the engine be collected, as at-fork hooks cannot be unregistered.
    ref = weakref.ref(engine)

    def after_in_child() -> None:
        engine = ref()
        if engine is not None:
            engine.dispose(close=False)

    os.register_at_fork(after_in_child=after_in_child)


# Tokens of claims that wrote nothing yet (PostgreSQL, inside a handler's transaction), and
# where the connection keeps them until complete() writes the record.
_IN_TRANSACTION = "tx"
_CLAIMS = "commands_claims"


def _claims(conn: sa.Connection) -> dict[str, tuple[str, str]]:
    """The claims of ``conn``'s current transaction (those of an earlier one are forgotten)."""
    transaction = conn.get_transaction()
    entry = conn.info.get(_CLAIMS)
    if entry is None or entry[0] is not transaction:
        entry = conn.info[_CLAIMS] = (transaction, {})
    return t.cast("dict[str, tuple[str, str]]", entry[1])


# Per-key locks of claims made inside a handler's transaction, on MariaDB/MySQL and SQLite,
# released when the transaction ends (PostgreSQL's advisory transaction locks end by themselves).
_HELD = "commands_locks"
_listening: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _lock_id(key: str, dialect: str) -> t.Any:
    digest = hashlib.sha256(key.encode()).digest()
    if dialect == "postgresql":
        return int.from_bytes(digest[:8], "big", signed=True)
    return "commands:" + digest.hex()[:48]  # GET_LOCK names are at most 64 characters


def _hold(conn: sa.Connection, lock: tuple[str, str, t.Any]) -> None:
    """Remember ``lock`` on ``conn`` until its transaction ends."""
    conn.info.setdefault(_HELD, []).append(lock)
    engine = conn.engine
    if engine not in _listening:
        with _listen_lock:
            if engine not in _listening:
                # Only once the connection is back in the pool, so after the commit or rollback:
                # a claimant that gets the lock then sees the record the transaction committed.
                sa.event.listen(engine, "checkin", _end_of_checkout)
                _listening.add(engine)


_listen_lock = threading.Lock()


def _end_of_checkout(dbapi_connection: t.Any, record: t.Any) -> None:
    held = record.info.pop(_HELD, None) if record is not None else None
    if held:
        _release_locks(held, dbapi_connection)


def _release_locks(held: list[tuple[str, str, t.Any]], dbapi_connection: t.Any) -> None:
    mysql_locks = False
    for kind, key, url in held:
        if kind == "file":
            url.release(key)
        else:
            mysql_locks = True
    if mysql_locks and dbapi_connection is not None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT RELEASE_ALL_LOCKS()")
        finally:
            cursor.close()


class _FileLocks:
    """Per-key locks of a SQLite database: a byte each of ``<database>-commands-locks``, per process
    (``lockf``) and per thread (a set), so a process that dies frees its keys at once."""

    def __init__(self, path: str) -> None:
        self.path = path + "-commands-locks"
        self.fd: int | None = None
        self.held: set[int] = set()
        self.lock = threading.Lock()

    def _offset(self, key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:6], "big")

    def acquire(self, key: str) -> bool:
        offset = self._offset(key)
        with self.lock:
            if offset in self.held:
                return False
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except OSError:
                return False
            self.held.add(offset)
            return True

    def release(self, key: str) -> None:
        offset = self._offset(key)
        with self.lock:
            if offset in self.held and self.fd is not None:
                self.held.discard(offset)
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)


_file_locks_by_path: dict[tuple[int, str], _FileLocks] = {}


def _file_locks(url: sa.URL) -> _FileLocks:
    # Locks belong to a process: a forked child opens its own file (fcntl locks are not inherited).
    path = os.path.realpath(url.database or "")
    ident = (os.getpid(), path)
    locks = _file_locks_by_path.get(ident)
    if locks is None:
        locks = _file_locks_by_path.setdefault(ident, _FileLocks(path))
    return locks


def _identity(url: sa.URL) -> tuple[t.Any, ...] | None:
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            return None
        return (backend, os.path.realpath(url.database))
    backend = "mysql" if backend == "mariadb" else backend
    return (backend, url.username, url.host, url.port or _DEFAULT_PORTS.get(backend), url.database)
