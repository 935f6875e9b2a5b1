"""Idempotency stores: the contract on every backend, atomicity with the handler, races and crashes.

The ``store`` fixture runs each contract test on memory, SQLite, PostgreSQL and MariaDB; service
backends skip when the service is down (fail under ``COMMANDS_REQUIRE_SERVICES=1``). Every SQL
test uses its own table names and drops them. The slow tests are ``test_race_*`` (64 spawned
processes, started once for the module) and ``test_crash_*`` (waits out a lease).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import threading
import time
import typing as t
import uuid

import _race
import pytest
import sqlalchemy as sa
from conftest import require_service
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from flask_commands.idempotency.memory import MemoryStore
from flask_commands.idempotency.sql import SQLAlchemyStore
from flask_commands.idempotency.store import Acquired
from flask_commands.idempotency.store import Claim
from flask_commands.idempotency.store import InProgress
from flask_commands.idempotency.store import LeaseLost
from flask_commands.idempotency.store import Mismatch
from flask_commands.idempotency.store import Replay
from flask_commands.idempotency.store import Store
from flask_commands.idempotency.store import StoredResponse
from flask_commands.idempotency.store import StoreUnavailable
from flask_commands.idempotency.store import fingerprint

BACKENDS = ("memory", "sqlite", "postgresql", "mariadb")
SQL_BACKENDS = ("sqlite", "postgresql", "mariadb")
FP = "a" * 64
OTHER_FP = "b" * 64
RESPONSE = StoredResponse(201, [("Content-Type", "application/json"), ("HX-Trigger", "added")], b'{"id":1}')


class Clock:
    """A clock the test moves by hand, so leases and TTLs expire without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def sql_url(backend: str, tmp_path: t.Any) -> str:
    if backend == "sqlite":
        # 64 racing processes queue for SQLite's one write lock; the default 5 s can run out.
        return f"sqlite:///{tmp_path / 'store.db'}?timeout=60"
    return require_service(backend)


def drop(url: str, *tables: sa.Table) -> None:
    engine = sa.create_engine(url)
    try:
        for table in tables:
            table.drop(engine, checkfirst=True)
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: t.Any, clock: Clock) -> t.Iterator[Store]:
    """Each store, on a fresh table, with the test's clock."""
    if request.param == "memory":
        memory = MemoryStore()
        memory._clock = clock
        yield memory
        return
    url = sql_url(request.param, tmp_path)
    sql = SQLAlchemyStore(url, table=unique("idem"))
    sql._clock = clock
    try:
        yield sql
    finally:
        sql.dispose()
        drop(url, sql.table)


@pytest.fixture(params=SQL_BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: t.Any) -> str:
    return sql_url(request.param, tmp_path)


@pytest.fixture
def db(db_url: str) -> t.Iterator[sa.Engine]:
    """The application's own engine, on the store's database (SQLite in WAL mode)."""
    engine = sa.create_engine(db_url)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    yield engine
    engine.dispose()


@pytest.fixture
def sql_store(db_url: str, db: sa.Engine, clock: Clock) -> t.Iterator[SQLAlchemyStore]:
    """A store created from the URL, next to the application's engine ``db``."""
    store = SQLAlchemyStore(db_url, table=unique("idem"))
    store._clock = clock
    yield store
    store.dispose()
    store.table.drop(db, checkfirst=True)


@pytest.fixture
def side(db: sa.Engine) -> t.Iterator[sa.Table]:
    """The handler's side-effect table, without a unique constraint."""
    table = _race.side_table(unique("side"))
    table.create(db)
    yield table
    table.drop(db)


def side_rows(db: sa.Engine, side: sa.Table) -> list[tuple[str, int]]:
    with db.connect() as conn:
        return [(row.ikey, row.worker) for row in conn.execute(sa.select(side.c.ikey, side.c.worker))]


def raises_exactly(exception: type[BaseException], message: str) -> t.Any:
    """``pytest.raises`` matching the whole message, not a prefix."""
    return pytest.raises(exception, match=f"^{re.escape(message)}$")


def acquire(store: Store, key: str = "k", fp: str = FP, lease: float = 10.0) -> str:
    claim = store.claim(key, fp, lease=lease)
    assert isinstance(claim, Acquired), claim
    return claim.token


# -- the contract, on every store ------------------------------------------------------------------


def test_claim_new_key_acquired(store: Store) -> None:
    claim = store.claim("k", FP, lease=10)
    assert isinstance(claim, Acquired)
    assert len(claim.token) == 32


def test_claim_running_in_progress(store: Store, clock: Clock) -> None:
    acquire(store)
    clock.advance(4)
    assert store.claim("k", FP, lease=10) == InProgress(retry_after=6.0)


def test_claim_running_other_fingerprint_mismatch(store: Store) -> None:
    acquire(store)
    assert store.claim("k", OTHER_FP, lease=10) == Mismatch()


def test_claim_done_replays(store: Store, clock: Clock) -> None:
    token = acquire(store)
    store.complete("k", token, outcome="conflict", ttl=60, response=RESPONSE)
    claim = store.claim("k", FP, lease=10)
    assert isinstance(claim, Replay)
    assert claim.record.key == "k"
    assert claim.record.fingerprint == FP
    assert claim.record.outcome == "conflict"
    assert claim.record.response == RESPONSE
    assert claim.record.expires_at == datetime.datetime.fromtimestamp(clock.now + 60, datetime.UTC)


def test_claim_done_other_fingerprint_mismatch(store: Store) -> None:
    store.complete("k", acquire(store), outcome="ok", ttl=60, response=RESPONSE)
    assert store.claim("k", OTHER_FP, lease=10) == Mismatch()


def test_claim_done_without_response_replays_none(store: Store) -> None:
    store.complete("k", acquire(store), outcome="ok", ttl=60)
    claim = store.claim("k", FP, lease=10)
    assert isinstance(claim, Replay)
    assert claim.record.outcome == "ok"
    assert claim.record.response is None


def test_claim_expired_record_acquired(store: Store, clock: Clock) -> None:
    store.complete("k", acquire(store), outcome="ok", ttl=60, response=RESPONSE)
    clock.advance(60)
    assert isinstance(store.claim("k", OTHER_FP, lease=10), Acquired)
    record = store.get("k")
    assert record is not None
    assert (record.fingerprint, record.outcome, record.response) == (OTHER_FP, None, None)


def test_claim_expired_lease_takes_over(store: Store, clock: Clock) -> None:
    old = acquire(store)
    clock.advance(10)
    new = acquire(store)
    assert new != old
    assert store.claim("k", FP, lease=10) == InProgress(retry_after=10.0)


def test_claim_expired_lease_other_fingerprint_takes_over(store: Store, clock: Clock) -> None:
    acquire(store)
    clock.advance(10)
    acquire(store, fp=OTHER_FP)
    assert store.claim("k", FP, lease=10) == Mismatch()


def test_complete_after_takeover_lease_lost(store: Store, clock: Clock) -> None:
    old = acquire(store)
    clock.advance(10)
    new = acquire(store)
    with pytest.raises(LeaseLost) as e:
        store.complete("k", old, outcome="ok", ttl=60)
    assert e.value.args == (
        f"the claim on idempotency key 'k' is no longer token {old!r}'s: its lease ended and another"
        " claimant took the key over.",
    )
    store.complete("k", new, outcome="ok", ttl=60)


def test_complete_expired_lease_not_taken_over(store: Store, clock: Clock) -> None:
    token = acquire(store)
    clock.advance(30)
    store.complete("k", token, outcome="ok", ttl=60)
    assert isinstance(store.claim("k", FP, lease=10), Replay)


def test_complete_twice_lease_lost(store: Store) -> None:
    token = acquire(store)
    store.complete("k", token, outcome="ok", ttl=60)
    with pytest.raises(LeaseLost):
        store.complete("k", token, outcome="rejected", ttl=60)


def test_complete_released_lease_lost(store: Store) -> None:
    token = acquire(store)
    store.release("k", token)
    with pytest.raises(LeaseLost):
        store.complete("k", token, outcome="ok", ttl=60)


def test_release_then_claim_acquired(store: Store) -> None:
    store.release("k", acquire(store))
    assert store.get("k") is None
    assert isinstance(store.claim("k", OTHER_FP, lease=10), Acquired)


def test_release_other_token_keeps_claim(store: Store) -> None:
    acquire(store)
    store.release("k", "0" * 32)
    assert isinstance(store.claim("k", FP, lease=10), InProgress)


def test_release_done_keeps_record(store: Store) -> None:
    token = acquire(store)
    store.complete("k", token, outcome="ok", ttl=60)
    store.release("k", token)
    assert isinstance(store.claim("k", FP, lease=10), Replay)


def test_attach_response_replayed(store: Store) -> None:
    token = acquire(store)
    store.complete("k", token, outcome="ok", ttl=60)
    # Over MySQL's 64 KiB BLOB, with every byte value.
    big = StoredResponse(
        200, [("Content-Type", "text/html; charset=utf-8"), ("X-Ü", "ü")], bytes(range(256)) * 400
    )
    store.attach_response("k", token, big)
    claim = store.claim("k", FP, lease=10)
    assert isinstance(claim, Replay)
    assert claim.record.response == big


def test_attach_response_twice_replaces(store: Store) -> None:
    token = acquire(store)
    store.complete("k", token, outcome="ok", ttl=60, response=RESPONSE)
    store.attach_response("k", token, RESPONSE)
    store.attach_response("k", token, StoredResponse(204, [], b""))
    record = store.get("k")
    assert record is not None
    assert record.response == StoredResponse(204, [], b"")


def test_attach_response_running_lease_lost(store: Store) -> None:
    token = acquire(store)
    with pytest.raises(LeaseLost) as e:
        store.attach_response("k", token, RESPONSE)
    assert e.value.args == (f"idempotency key 'k' has no done record of token {token!r}.",)


def test_get_absent_none(store: Store) -> None:
    assert store.get("k") is None


def test_get_running(store: Store, clock: Clock) -> None:
    acquire(store, lease=10)
    record = store.get("k")
    assert record is not None
    assert (record.key, record.fingerprint, record.outcome, record.response) == ("k", FP, None, None)
    assert record.expires_at == datetime.datetime.fromtimestamp(clock.now + 10, datetime.UTC)


def test_get_expired_none(store: Store, clock: Clock) -> None:
    store.complete("k", acquire(store), outcome="ok", ttl=60)
    clock.advance(60)
    assert store.get("k") is None


def test_purge_deletes_expired(store: Store, clock: Clock) -> None:
    store.complete("done-expired", acquire(store, "done-expired"), outcome="ok", ttl=10)
    store.complete("done-live", acquire(store, "done-live"), outcome="ok", ttl=100)
    acquire(store, "running-expired", lease=5)
    acquire(store, "running-live", lease=50)
    clock.advance(20)
    assert store.purge() == 2
    assert store.purge() == 0
    assert store.get("done-live") is not None
    assert store.get("running-live") is not None
    clock.advance(100)
    assert store.purge() == 2


def test_purge_at_given_time(store: Store, clock: Clock) -> None:
    store.complete("k", acquire(store), outcome="ok", ttl=10)
    assert store.purge(datetime.datetime.fromtimestamp(clock.now + 9, datetime.UTC)) == 0
    assert store.purge(datetime.datetime.fromtimestamp(clock.now + 10, datetime.UTC)) == 1


def test_purge_naive_time_error(store: Store) -> None:
    message = (
        "now datetime.datetime(2030, 1, 1, 0, 0) is naive; pass an aware datetime such as"
        " datetime.now(timezone.utc)."
    )
    with raises_exactly(ValueError, message):
        store.purge(datetime.datetime(2030, 1, 1))


def test_keys_compared_exactly(store: Store) -> None:
    # MariaDB's default collation would make some of these one key.
    for key in ("key", "KEY", "key ", "k\u00e9y", "ke\u0301y"):  # é composed and decomposed
        acquire(store, key)


def test_key_longest_accepted(store: Store) -> None:
    key = "😀" * 512  # 2048 bytes of utf8mb4 in MariaDB's primary key index
    token = acquire(store, key)
    store.complete(key, token, outcome="ok", ttl=60)
    assert isinstance(store.claim(key, FP, lease=10), Replay)
    assert isinstance(store.claim(key[:-1], FP, lease=10), Acquired)


def test_key_too_long_error(store: Store) -> None:
    message = (
        f"idempotency key {'k' * 40!r}... has 513 characters, more than 512; shorten it or hash its scope."
    )
    with raises_exactly(ValueError, message):
        store.claim("k" * 513, FP, lease=10)


def test_key_empty_error(store: Store) -> None:
    with raises_exactly(ValueError, "idempotency key '' is not a non-empty string."):
        store.claim("", FP, lease=10)


def test_fingerprint_too_long_error(store: Store) -> None:
    message = f"fingerprint {'x' * 65!r} is not a string of 1 to 64 characters; pass fingerprint(kind, data)."
    with raises_exactly(ValueError, message):
        store.claim("k", "x" * 65, lease=10)


@pytest.mark.parametrize("lease", [0, -1.0, float("inf"), float("nan")])
def test_lease_invalid_error(store: Store, lease: float) -> None:
    with raises_exactly(ValueError, f"lease {lease!r} is not a positive number of seconds."):
        store.claim("k", FP, lease=lease)


def test_outcome_invalid_error(store: Store) -> None:
    token = acquire(store)
    with raises_exactly(ValueError, "outcome 'fault' is not one of 'ok', 'conflict', 'rejected'."):
        store.complete("k", token, outcome="fault", ttl=60)  # type: ignore[arg-type]


def test_ttl_invalid_error(store: Store) -> None:
    token = acquire(store)
    with raises_exactly(ValueError, "ttl 0 is not a positive number of seconds."):
        store.complete("k", token, outcome="ok", ttl=0)


def test_race_threads_one_winner(store: Store) -> None:
    """64 threads claim one key at once: one runs, the others wait or replay."""
    barrier = threading.Barrier(64)
    ran: list[int] = []
    kinds: list[str] = []

    def racer(index: int) -> None:
        barrier.wait(30)
        claim = store.claim("k", FP, lease=30)
        if isinstance(claim, Acquired):
            ran.append(index)
            store.complete("k", claim.token, outcome="ok", ttl=60)
        kinds.append(type(claim).__name__)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ran) == 1
    assert len(kinds) == 64
    assert kinds.count("Acquired") == 1
    assert set(kinds) <= {"Acquired", "InProgress", "Replay"}


def test_memory_complete_in_transaction_error() -> None:
    store = MemoryStore()
    token = acquire(store)
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            message = (
                f"MemoryStore cannot write inside the transaction of {conn!r}; call complete() without"
                " connection= after the handler commits, or use an SQLAlchemyStore."
            )
            with raises_exactly(ValueError, message):
                store.complete("k", token, outcome="ok", ttl=60, connection=conn)
    finally:
        engine.dispose()


def test_memory_same_database_false() -> None:
    engine = sa.create_engine("sqlite://")
    assert not MemoryStore().same_database(engine)
    engine.dispose()


def test_fingerprint_canonical_json() -> None:
    expected = hashlib.sha256('["add_todo",{"due":"2030-01-02","title":"Ü"}]'.encode()).hexdigest()
    assert fingerprint("add_todo", {"title": "Ü", "due": datetime.date(2030, 1, 2)}) == expected


def test_fingerprint_key_order_ignored() -> None:
    assert fingerprint("add", {"a": 1, "b": 2}) == fingerprint("add", {"b": 2, "a": 1})


def test_fingerprint_kind_matters() -> None:
    assert fingerprint("add", {"a": 1}) != fingerprint("edit", {"a": 1})


# -- SQL stores: the handler's transaction -----------------------------------------------------------


def test_complete_in_committed_transaction(sql_store: SQLAlchemyStore, db: sa.Engine, side: sa.Table) -> None:
    token = acquire(sql_store)
    with db.begin() as conn:
        conn.execute(side.insert().values(ikey="k", worker=1))
        sql_store.complete("k", token, outcome="ok", ttl=60, connection=conn)
    sql_store.attach_response("k", token, RESPONSE)
    claim = sql_store.claim("k", FP, lease=10)
    assert isinstance(claim, Replay)
    assert claim.record.response == RESPONSE
    assert side_rows(db, side) == [("k", 1)]


def test_complete_in_rolled_back_transaction(
    sql_store: SQLAlchemyStore, db: sa.Engine, side: sa.Table, clock: Clock
) -> None:
    token = acquire(sql_store)

    def handler() -> None:
        with db.begin() as conn:
            conn.execute(side.insert().values(ikey="k", worker=1))
            sql_store.complete("k", token, outcome="ok", ttl=60, response=RESPONSE, connection=conn)
            raise RuntimeError("the handler failed after completing")

    with pytest.raises(RuntimeError):
        handler()
    assert side_rows(db, side) == []
    record = sql_store.get("k")
    assert record is not None
    assert record.outcome is None
    assert isinstance(sql_store.claim("k", FP, lease=10), InProgress)
    clock.advance(10)
    assert isinstance(sql_store.claim("k", FP, lease=10), Acquired)


def test_complete_in_transaction_after_takeover_lease_lost(
    sql_store: SQLAlchemyStore, db: sa.Engine, side: sa.Table, clock: Clock
) -> None:
    old = acquire(sql_store)
    clock.advance(10)
    acquire(sql_store)

    def handler() -> None:
        with db.begin() as conn:
            conn.execute(side.insert().values(ikey="k", worker=1))
            sql_store.complete("k", old, outcome="ok", ttl=60, connection=conn)

    with pytest.raises(LeaseLost):
        handler()
    assert side_rows(db, side) == []


def test_same_database_same_url(sql_store: SQLAlchemyStore, db: sa.Engine) -> None:
    assert sql_store.same_database(db)
    with db.connect() as conn:
        assert sql_store.same_database(conn)


def test_same_database_shared_engine(db: sa.Engine) -> None:
    assert SQLAlchemyStore(db, table="unused").same_database(db)


def test_same_database_password_and_driver_ignored() -> None:
    store = SQLAlchemyStore("postgresql+psycopg://app:one@db.example:5432/shop")
    engine = sa.create_engine("postgresql://app:two@db.example/shop")
    try:
        assert store.same_database(engine)
    finally:
        engine.dispose()
        store.dispose()


@pytest.mark.parametrize(
    "other",
    [
        "postgresql+psycopg://app@db.example/other",
        "postgresql+psycopg://admin@db.example/shop",
        "postgresql+psycopg://app@db.example:5433/shop",
        "postgresql+psycopg://app@replica.example/shop",
        "mysql+pymysql://app@db.example/shop",
    ],
)
def test_same_database_other_false(other: str) -> None:
    store = SQLAlchemyStore("postgresql+psycopg://app@db.example/shop")
    engine = sa.create_engine(other)
    try:
        assert not store.same_database(engine)
    finally:
        engine.dispose()
        store.dispose()


def test_same_database_sqlite_by_real_path(tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'app.db'}")
    same = sa.create_engine("sqlite:///app.db")
    other = sa.create_engine("sqlite:///other.db")
    memory = sa.create_engine("sqlite://")
    try:
        assert store.same_database(same)
        assert not store.same_database(other)
        assert not store.same_database(memory)
    finally:
        for engine in (same, other, memory):
            engine.dispose()
        store.dispose()


def test_table_in_own_metadata(sql_store: SQLAlchemyStore, db: sa.Engine) -> None:
    assert sql_store.table.name.startswith("idem_")
    assert list(sql_store.table.metadata.tables) == [sql_store.table.name]
    sql_store.create_table()
    sql_store.create_table()
    assert sa.inspect(db).has_table(sql_store.table.name)


def test_sqlite_url_store_uses_wal(tmp_path: t.Any) -> None:
    store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        acquire(store)
    finally:
        store.dispose()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_unsupported_dialect_error() -> None:
    message = (
        "SQLAlchemyStore does not support the 'mssql' dialect; use SQLite, PostgreSQL or MariaDB/MySQL,"
        " or MemoryStore."
    )
    with raises_exactly(ValueError, message):
        SQLAlchemyStore("mssql+pyodbc://app@db.example/shop")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres:secret@127.0.0.1:1/test?connect_timeout=2",
        "mysql+pymysql://root:secret@127.0.0.1:1/test?connect_timeout=2",
        "sqlite:////nonexistent-directory/store.db",
    ],
)
def test_claim_unavailable(url: str) -> None:
    store = SQLAlchemyStore(url)
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailable) as e:
            store.claim("k", FP, lease=10)
        assert time.monotonic() - start < 5
    finally:
        store.dispose()
    assert isinstance(e.value.__cause__, sa.exc.OperationalError)
    shown = sa.make_url(url).render_as_string(hide_password=True)
    assert str(e.value).startswith(f"the idempotency store at {shown} cannot be reached: ")
    assert "secret" not in str(e.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_gets_own_connections(db: sa.Engine) -> None:
    store = SQLAlchemyStore(db, table=unique("idem"))
    try:
        acquire(store, "parent")
        assert db.pool.checkedin() == 1  # type: ignore[attr-defined]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                fresh = db.pool.checkedin() == 0  # type: ignore[attr-defined]
                code = 0 if fresh and isinstance(store.claim("child", FP, lease=10), Acquired) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child did not close or share the parent's connection.
        assert isinstance(store.claim("parent", FP, lease=10), InProgress)
        assert isinstance(store.claim("child", FP, lease=10), InProgress)
    finally:
        store.table.drop(db, checkfirst=True)


# -- SQL stores agree with the memory store on any sequence of operations --------------------------

_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("claim"),
            st.sampled_from("xxy"),
            st.sampled_from([FP, OTHER_FP]),
            st.sampled_from([5.0, 20.0]),
        ),
        st.tuples(
            st.just("complete"), st.sampled_from("xxy"), st.sampled_from(["ok", "rejected"]), st.booleans()
        ),
        st.tuples(st.just("attach"), st.sampled_from("xxy")),
        st.tuples(st.just("release"), st.sampled_from("xxy")),
        st.tuples(st.just("get"), st.sampled_from("xxy")),
        st.tuples(st.just("purge")),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 5.0, 10.0, 30.0])),
    ),
    max_size=30,
)


def _apply(store: Store, tokens: dict[str, str], operation: tuple[t.Any, ...], clock: Clock) -> object:
    name, *args = operation
    try:
        if name == "claim":
            claim: Claim = store.claim(args[0], args[1], lease=args[2])
            if isinstance(claim, Acquired):
                tokens[args[0]] = claim.token
                return "Acquired"
            return claim
        if name == "complete":
            response = RESPONSE if args[2] else None
            store.complete(args[0], tokens.get(args[0], "-"), outcome=args[1], ttl=10, response=response)
        elif name == "attach":
            store.attach_response(args[0], tokens.get(args[0], "-"), RESPONSE)
        elif name == "release":
            store.release(args[0], tokens.get(args[0], "-"))
        elif name == "get":
            return store.get(args[0])
        elif name == "purge":
            return store.purge()
        else:
            clock.advance(args[0])
    except LeaseLost:
        return "LeaseLost"
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=_operations)
def test_sql_store_agrees_with_memory(
    sql_store: SQLAlchemyStore, operations: list[tuple[t.Any, ...]]
) -> None:
    clock = Clock()
    memory = MemoryStore()
    memory._clock = clock
    sql_store._clock = clock
    sql_store.purge(datetime.datetime(3000, 1, 1, tzinfo=datetime.UTC))
    memory_tokens: dict[str, str] = {}
    sql_tokens: dict[str, str] = {}
    for operation in operations:
        expected = _apply(memory, memory_tokens, operation, clock)
        if operation[0] == "advance":
            continue
        assert _apply(sql_store, sql_tokens, operation, clock) == expected, operation


# -- races and crashes across processes (slow) -----------------------------------------------------


@pytest.fixture(scope="module")
def racers() -> t.Iterator[_race.Racers]:
    """64 spawned processes, started once for all race tests of the module."""
    pool = _race.Racers(64)
    yield pool
    pool.close()


def _race_and_check(
    racers: _race.Racers,
    db_url: str,
    db: sa.Engine,
    side: sa.Table,
    keys: list[tuple[str, ...]],
    in_transaction: bool = False,
) -> None:
    table = unique("idem")
    store = SQLAlchemyStore(db, table=table)
    try:
        kinds = racers.run(
            [_race.Job(db_url, table, side.name, k, in_transaction=in_transaction) for k in keys]
        )
        per_key: dict[str, list[str]] = {}
        for worker_keys, worker_kinds in zip(keys, kinds, strict=True):
            for key, kind in zip(worker_keys, worker_kinds, strict=True):
                per_key.setdefault(key, []).append(kind)
        for key, key_kinds in per_key.items():
            assert key_kinds.count("Acquired") == 1, (key, key_kinds)
            # "Lost": claimed inside a transaction, then refused at the record and rolled back.
            assert set(key_kinds) <= {"Acquired", "InProgress", "Replay", "Lost"}, (key, key_kinds)
            record = store.get(key)
            assert record is not None
            assert record.outcome == "ok"
        rows = side_rows(db, side)
        assert sorted(key for key, _ in rows) == sorted(per_key)
    finally:
        store.table.drop(db, checkfirst=True)


def test_race_processes_one_key(db_url: str, db: sa.Engine, side: sa.Table, racers: _race.Racers) -> None:
    """64 processes claim one key at once: the handler's side effect happens exactly once."""
    _race_and_check(racers, db_url, db, side, [("only",)] * racers.size)


def test_race_processes_many_keys(db_url: str, db: sa.Engine, side: sa.Table, racers: _race.Racers) -> None:
    """16 keys, each claimed by 8 of the 64 processes: each side effect happens exactly once."""
    keys = [f"key-{i}" for i in range(16)]
    _race_and_check(
        racers, db_url, db, side, [(keys[w % 16], keys[(w + 8) % 16]) for w in range(racers.size)]
    )


def test_race_processes_one_key_in_transaction(
    db_url: str, db: sa.Engine, side: sa.Table, racers: _race.Racers
) -> None:
    """64 processes claim one key inside their transactions: one runs, the others never wait for it."""
    _race_and_check(racers, db_url, db, side, [("only",)] * racers.size, in_transaction=True)


def test_race_processes_many_keys_in_transaction(
    db_url: str, db: sa.Engine, side: sa.Table, racers: _race.Racers
) -> None:
    """16 keys, each claimed by 8 of the 64 processes inside their transactions: each effect once."""
    keys = [f"key-{i}" for i in range(16)]
    _race_and_check(
        racers,
        db_url,
        db,
        side,
        [(keys[w % 16], keys[(w + 8) % 16]) for w in range(racers.size)],
        in_transaction=True,
    )


def test_crash_lease_expires_then_runs_once(db_url: str, db: sa.Engine, side: sa.Table) -> None:
    """A claimant killed mid-handler blocks the key until its lease ends; then the handler runs once."""
    table = unique("idem")
    store = SQLAlchemyStore(db, table=table)
    ctx = _race.context()
    claimed = ctx.Event()
    lease = 2.0
    process = ctx.Process(
        target=_race.crash_while_handling, args=(db_url, table, side.name, "k", lease, claimed)
    )
    with _race._no_main_module():
        process.start()
    try:
        assert claimed.wait(60)
        killed_at = time.monotonic()
        process.kill()
        process.join()
        process.close()
        claim = store.claim("k", _race.FINGERPRINT, lease=lease)
        assert isinstance(claim, InProgress)
        assert 0 < claim.retry_after <= lease
        time.sleep(max(0.0, killed_at + lease - time.monotonic()) + 0.05)
        assert _race.handle(store, db, side, "k", lease, 7) == "Acquired"
        assert side_rows(db, side) == [("k", 7)]
    finally:
        with contextlib.suppress(ValueError):
            if process.is_alive():
                process.kill()
        store.table.drop(db, checkfirst=True)
