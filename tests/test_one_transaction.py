"""One transaction per command: a claim inside the handler's transaction, on SQLite, PostgreSQL and MariaDB.

A duplicate of a running claim is told ``InProgress`` at once (the tests would hang, not pass,
if it waited for the first transaction); a rollback, or the death of the claimant's process,
frees the key at once; a commit makes the record replayable.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import typing as t
import urllib.error
import urllib.request

import flask
import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from test_idempotency import FP
from test_idempotency import OTHER_FP
from test_idempotency import RESPONSE
from test_idempotency import sql_url
from test_idempotency import unique

from flask_commands import Command
from flask_commands import Commands
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands.idempotency.sql import SQLAlchemyStore
from flask_commands.idempotency.store import Acquired
from flask_commands.idempotency.store import InProgress
from flask_commands.idempotency.store import LeaseLost
from flask_commands.idempotency.store import Mismatch
from flask_commands.idempotency.store import Replay

SQL_BACKENDS = ("sqlite", "postgresql", "mariadb")


@pytest.fixture(params=SQL_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: t.Any) -> str:
    return sql_url(request.param, tmp_path)


@pytest.fixture
def engine(url: str) -> t.Iterator[sa.Engine]:
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(url: str, engine: sa.Engine) -> t.Iterator[SQLAlchemyStore]:
    store = SQLAlchemyStore(url, table=unique("idem"))
    store.create_table()
    yield store
    store.dispose()
    store.table.drop(engine, checkfirst=True)


def claim_in(store: SQLAlchemyStore, conn: sa.Connection, key: str = "k", fp: str = FP) -> t.Any:
    return store.claim(key, fp, lease=30.0, connection=conn)


def test_duplicate_of_running_claim_in_progress_at_once(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    with engine.connect() as first, engine.connect() as second:
        first.begin()
        assert isinstance(claim_in(store, first), Acquired)
        # The first transaction stays open: a duplicate that waited for it would hang here.
        second.begin()
        assert isinstance(claim_in(store, second), InProgress)
        second.rollback()
        first.rollback()


def test_rollback_frees_key_at_once(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    with engine.connect() as first:
        first.begin()
        assert isinstance(claim_in(store, first), Acquired)
        first.rollback()
    assert store.get("k") is None
    with engine.connect() as second:
        second.begin()
        assert isinstance(claim_in(store, second), Acquired)
        second.rollback()


def test_commit_makes_record_replayable(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    with engine.connect() as first:
        first.begin()
        claim = claim_in(store, first)
        assert isinstance(claim, Acquired)
        store.complete("k", claim.token, outcome="ok", ttl=60.0, response=RESPONSE, connection=first)
        first.commit()
    with engine.connect() as second:
        second.begin()
        replay = claim_in(store, second)
        assert isinstance(replay, Replay)
        assert replay.record.response == RESPONSE
        assert isinstance(claim_in(store, second, fp=OTHER_FP), Mismatch)
        second.rollback()


def test_replay_takes_no_lock(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    # A replay only reads: its open transaction must not keep the key from a later claimant (and
    # on MariaDB it then owes no RELEASE_ALL_LOCKS round trip when its connection goes back).
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite's lock byte is taken before the read")
    with engine.connect() as first:
        first.begin()
        claim = claim_in(store, first)
        assert isinstance(claim, Acquired)
        store.complete("k", claim.token, outcome="ok", ttl=60.0, connection=first)
        first.commit()
    with engine.connect() as replaying, engine.connect() as later:
        replaying.begin()
        assert isinstance(claim_in(store, replaying), Replay)
        # The record expires while the replay's transaction is still open.
        store._clock = lambda: time.time() + 120.0
        later.begin()
        assert isinstance(claim_in(store, later), Acquired)
        later.rollback()
        replaying.rollback()


def test_other_keys_run_side_by_side(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time")
    with engine.connect() as first, engine.connect() as second:
        first.begin()
        second.begin()
        assert isinstance(claim_in(store, first, "a"), Acquired)
        assert isinstance(claim_in(store, second, "b"), Acquired)
        first.rollback()
        second.rollback()


def _hold_claim(url: str, table: str, ready: t.Any) -> None:
    store = SQLAlchemyStore(url, table=table)
    engine = sa.create_engine(url)
    conn = engine.connect()
    conn.begin()
    store.claim("k", FP, lease=600.0, connection=conn)
    ready.set()
    threading.Event().wait(600)


def test_killed_claimant_frees_key_at_once(store: SQLAlchemyStore, url: str, engine: sa.Engine) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_hold_claim, args=(url, store.table.name, ready))
    process.start()
    try:
        assert ready.wait(60)
        with engine.connect() as conn:
            conn.begin()
            assert isinstance(claim_in(store, conn), InProgress)
            conn.rollback()
    finally:
        os.kill(t.cast(int, process.pid), signal.SIGKILL)
        process.join(30)
    # No lease to wait out: the claim died with its transaction (and its lock with its process).
    for _ in range(100):
        with engine.connect() as conn:
            conn.begin()
            claim = claim_in(store, conn)
            conn.rollback()
        if isinstance(claim, Acquired):
            break
        # The server may take a moment to notice the closed connection.
        threading.Event().wait(0.05)
    assert isinstance(claim, Acquired)


# Over HTTP, with a handler whose session is on the store's database.


class Post(Command):
    text: str


def make_app(url: str, store: SQLAlchemyStore, engine: sa.Engine) -> tuple[flask.Flask, dict[str, t.Any]]:
    posts = sa.Table(
        unique("posts"),
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String(50)),
    )
    posts.create(engine)
    session = orm.scoped_session(orm.sessionmaker(engine))
    gate: dict[str, t.Any] = {"entered": threading.Event(), "release": threading.Event(), "fail": []}

    @handler(Post, transaction=session)
    def post(cmd: Post) -> int:
        session.execute(posts.insert().values(text=cmd.text))
        gate["entered"].set()
        gate["release"].wait(30)
        return 1

    app = flask.Flask(__name__)
    app.config.update(COMMANDS_IDEMPOTENCY_STORE=store, COMMANDS_IDEMPOTENCY_WAIT=30.0, SECRET_KEY="x")
    app.jinja_loader = __import__("jinja2").DictLoader({"form.html": "{{ form.text }}"})
    Commands(app)

    @app.route("/posts", methods=["POST"])
    @command_view(Post, post, template="form.html")
    def create(result: int, cmd: Post) -> t.Any:
        if gate["fail"]:
            raise gate["fail"].pop()
        if flask.request.is_json:
            return {"text": cmd.text}, 201
        return flask.redirect("/done", 303)

    app.teardown_appcontext(lambda exc: session.remove())
    gate["posts"] = posts
    gate["engine"] = engine
    return app, gate


def rows(gate: dict[str, t.Any]) -> int:
    with gate["engine"].connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(gate["posts"])).scalar_one())


@pytest.fixture
def http(
    url: str, store: SQLAlchemyStore, engine: sa.Engine
) -> t.Iterator[tuple[flask.Flask, dict[str, t.Any]]]:
    app, gate = make_app(url, store, engine)
    yield app, gate
    gate["release"].set()
    gate["posts"].drop(engine)


def _in_thread(app: flask.Flask, **post: t.Any) -> tuple[threading.Thread, list[t.Any]]:
    answers: list[t.Any] = []
    thread = threading.Thread(target=lambda: answers.append(app.test_client().post("/posts", **post)))
    thread.start()
    return thread, answers


def test_http_json_duplicate_in_progress(http: tuple[flask.Flask, dict[str, t.Any]]) -> None:
    app, gate = http
    post = {"json": {"text": "a"}, "headers": {"Idempotency-Key": "j1"}}
    thread, first = _in_thread(app, **post)
    assert gate["entered"].wait(30)
    duplicate = app.test_client().post("/posts", **post)
    gate["release"].set()
    thread.join(30)
    assert duplicate.status_code == 409
    assert duplicate.json is not None
    assert duplicate.json["code"] == "in_progress"
    assert first[0].status_code == 201
    replay = app.test_client().post("/posts", **post)
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (201, "true")
    assert rows(gate) == 1


def test_http_form_duplicate_waits_for_outcome(http: tuple[flask.Flask, dict[str, t.Any]]) -> None:
    app, gate = http
    post = {"data": {"text": "a", "id": "5b0c9a5e-8a8e-4bb9-9c43-52b0d35bd0e1"}}
    thread, first = _in_thread(app, **post)
    assert gate["entered"].wait(30)
    second_thread, second = _in_thread(app, **post)
    threading.Event().wait(0.3)
    gate["release"].set()
    thread.join(30)
    second_thread.join(30)
    assert first[0].status_code == second[0].status_code == 303
    assert second[0].headers["Location"] == "/done"
    assert rows(gate) == 1


def test_http_render_failure_rolls_back_and_frees_key(http: tuple[flask.Flask, dict[str, t.Any]]) -> None:
    app, gate = http
    gate["release"].set()
    gate["fail"].append(RuntimeError("the template failed"))
    app.testing = False
    post = {"json": {"text": "a"}, "headers": {"Idempotency-Key": "r1"}}
    assert app.test_client().post("/posts", **post).status_code == 500
    assert rows(gate) == 0
    assert app.test_client().post("/posts", **post).status_code == 201
    assert rows(gate) == 1


def test_store_engine_pings_and_limits_statements(url: str) -> None:
    store = SQLAlchemyStore(url, table=unique("idem"), statement_timeout=3.0)
    engine = store._engine
    try:
        assert engine.pool._pre_ping
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "3s"
            elif engine.dialect.name == "mysql":
                assert float(conn.exec_driver_sql("SELECT @@max_statement_time").scalar()) == 3.0
    finally:
        store.dispose()


def test_record_committed_meanwhile_refused(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite's writer would wait for our read transaction to end")
    with engine.connect() as first:
        first.begin()
        claim = claim_in(store, first)
        assert isinstance(claim, Acquired)
        # A claimant whose snapshot predated our claim's lock committed the key meanwhile.
        other = store.claim("k", FP, lease=30.0)
        assert isinstance(other, Acquired)
        store.complete("k", other.token, outcome="ok", ttl=60.0, response=RESPONSE)
        with pytest.raises(LeaseLost):
            store.complete("k", claim.token, outcome="ok", ttl=60.0, response=RESPONSE, connection=first)
        first.rollback()
    record = store.get("k")
    assert record is not None
    assert record.response == RESPONSE


def test_expired_record_replaced_inside_transaction(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    old = store.claim("k", OTHER_FP, lease=30.0)
    assert isinstance(old, Acquired)
    store.complete("k", old.token, outcome="ok", ttl=60.0)
    store._clock = lambda: 4_000_000_000.0  # long after the record's TTL
    with engine.connect() as conn:
        conn.begin()
        claim = claim_in(store, conn)
        assert isinstance(claim, Acquired)
        store.complete("k", claim.token, outcome="ok", ttl=60.0, response=RESPONSE, connection=conn)
        conn.commit()
    record = store.get("k")
    assert record is not None
    assert (record.fingerprint, record.response) == (FP, RESPONSE)


class Remove(Command):
    item_id: int = field(trusted=True)


def test_http_retried_keyed_delete_replays_204(store: SQLAlchemyStore, engine: sa.Engine) -> None:
    items = sa.Table(unique("items"), sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    items.create(engine)
    session = orm.scoped_session(orm.sessionmaker(engine))
    try:
        with engine.begin() as conn:
            conn.execute(items.insert().values(id=18))

        @handler(Remove, transaction=session)
        def remove(cmd: Remove) -> None:
            session.execute(items.delete().where(items.c.id == cmd.item_id))

        def item(item_id: int) -> dict[str, int]:
            if session.execute(sa.select(items.c.id).where(items.c.id == item_id)).first() is None:
                flask.abort(404)
            return {"item_id": item_id}

        app = flask.Flask(__name__)
        app.config["COMMANDS_IDEMPOTENCY_STORE"] = store
        Commands(app)
        app.teardown_appcontext(lambda exc: session.remove())

        @app.route("/items/<int:item_id>", methods=["DELETE"])
        @command_view(Remove, remove, trusted=item)
        def delete(result: None, cmd: Remove, item_id: int) -> t.Any:
            return "", 204

        client = app.test_client()
        key = {"Idempotency-Key": "del-18"}
        first = client.delete("/items/18", headers=key)
        retried = client.delete("/items/18", headers=key)
        unkeyed = client.delete("/items/18")
        assert (first.status_code, retried.status_code, unkeyed.status_code) == (204, 204, 404)
        assert retried.headers["Idempotent-Replayed"] == "true"
    finally:
        session.remove()
        items.drop(engine)


# 32 concurrent posts with one key, to 4 gunicorn workers.


@pytest.fixture
def served(url: str, engine: sa.Engine, store: SQLAlchemyStore) -> t.Iterator[tuple[str, sa.Table]]:
    posts = sa.Table(
        unique("posts"),
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String(50)),
    )
    posts.create(engine)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RACE_URL": url, "RACE_POSTS": posts.name, "RACE_STORE": store.table.name}
    tests = pathlib.Path(__file__).parent
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(tests),
            "race_app:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/nowhere", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        yield base, posts
    finally:
        server.terminate()
        server.wait(30)
        posts.drop(engine)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: t.Any, **kwargs: t.Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _race(url: str, body: bytes, headers: dict[str, str]) -> list[tuple[int, dict[str, str], bytes]]:
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return list(pool.map(lambda _: _post(url, body, headers), range(32)))


def _count(engine: sa.Engine, posts: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one())


def test_race_http_json_one_key(served: tuple[str, sa.Table], engine: sa.Engine) -> None:
    base, posts = served
    answers = _race(
        base + "/posts", b'{"text": "a"}', {"Content-Type": "application/json", "Idempotency-Key": "race-1"}
    )
    statuses = sorted(status for status, _, _ in answers)
    codes = {json.loads(body).get("code") for status, _, body in answers if status == 409}
    replayed = [h for status, h, _ in answers if status == 201 and h.get("Idempotent-Replayed") == "true"]
    assert set(statuses) <= {201, 409}, statuses
    assert statuses.count(201) - len(replayed) == 1
    assert codes <= {"in_progress"}
    assert _count(engine, posts) == 1


def test_race_http_forms_one_id(served: tuple[str, sa.Table], engine: sa.Engine) -> None:
    base, posts = served
    body = b"text=a&id=6c1f1e0e-3a57-4a0b-9d0e-2f0a4cf0c3b1"
    answers = _race(base + "/posts", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert [(status, h.get("Location")) for status, h, _ in answers] == [(303, "/done")] * 32
    assert _count(engine, posts) == 1
