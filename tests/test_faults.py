"""Bad text and database faults, end to end on the demo: a clear 4xx or a 503, never a 500.

Text that is not valid Unicode is refused before anything is built, on every command view path
(form, htmx, JSON, live validation) and every database. A database that refuses, drops or never
answers connections is made with a TCP proxy in front of the shared server (the server itself
is never stopped): every view then answers 503 with ``Retry-After``, and the first request after
the database returns succeeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import select
import socket
import struct
import threading
import time
import typing as t
import urllib.parse
import uuid

import flask
import pytest
import sqlalchemy as sa
from conftest import require_service
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from demo_app import create_app
from demo_app.models import Todo
from demo_app.models import db
from flask_commands import Commands
from flask_commands.state import app_state

HX = {"HX-Request": "true", "HX-Request-Type": "partial", "HX-Target": "form#add-form", "Accept": "text/html"}
FORM = "application/x-www-form-urlencoded"



def demo_config(url: str, **config: t.Any) -> dict[str, t.Any]:
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": url,
        "WTF_CSRF_ENABLED": False,
        "CELERY": {"broker_url": "memory://", "task_default_queue": f"faults-{uuid.uuid4()}"},
        **config,
    }


def drop_tables(app: flask.Flask) -> None:
    """Drop the demo's tables and the store's, and close every connection the app opened."""
    with app.app_context():
        db.session.remove()
        db.drop_all()
        with db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS commands_idempotency")
        db.engine.dispose()
    engine = getattr(app_state(app).store, "_engine", None)
    if engine is not None:
        engine.dispose()


def database_url(name: str, tmp_path: pathlib.Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'demo.sqlite'}"
    return require_service(name)


def count_todos(app: flask.Flask) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(Todo)) or 0


def form_body(**values: str) -> bytes:
    """A url-encoded body as a client would send it, lone surrogates encoded as their UTF-8-like bytes."""
    return b"&".join(
        urllib.parse.quote_from_bytes(name.encode()).encode()
        + b"="
        + urllib.parse.quote_from_bytes(value.encode("utf-8", "surrogatepass")).encode()
        for name, value in values.items()
    )


def json_body(**values: t.Any) -> str:
    # ensure_ascii writes a lone surrogate as its \ud800 escape, as JavaScript's JSON.stringify does.
    return json.dumps(values)


# One demo per database for the text tests, its tables dropped at the end.


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[flask.Flask]:
    app = create_app(demo_config(database_url(request.param, tmp_path_factory.mktemp("faults"))))
    yield app
    drop_tables(app)


PATHS = ["form", "htmx", "json-board", "json-api", "keyed-json-api", "validate-form", "validate-json"]


def submit(app: flask.Flask, path: str, title: str) -> TestResponse:
    """Post ``title`` to the demo's AddTodo along ``path``."""
    client = app.test_client()
    key = {"Idempotency-Key": str(uuid.uuid4())}
    if path in ("form", "htmx", "validate-form"):
        headers = {
            **(HX if path != "form" else {}),
            **({"X-Commands-Validate": "title"} if "validate" in path else {}),
        }
        return client.post(
            "/items", data=form_body(title=title, id=str(uuid.uuid4())), content_type=FORM, headers=headers
        )
    if path == "json-board":
        return client.post("/items", data=json_body(title=title), content_type="application/json")
    if path == "validate-json":
        headers = {"X-Commands-Validate": "title"}
        return client.post(
            "/items", data=json_body(title=title), content_type="application/json", headers=headers
        )
    headers = key if path == "keyed-json-api" else {}
    return client.post(
        "/todos", data=json_body(title=title), content_type="application/json", headers=headers
    )


# Text that is not valid Unicode: 400 on every path and database, nothing written


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("title", ["\ud800", "Milk \udfff", "\udc00\ud83d"])
def test_lone_surrogate_is_400(demo: flask.Flask, path: str, title: str) -> None:
    before = count_todos(demo)
    response = submit(demo, path, title)
    assert response.status_code == 400, response.text
    if path.startswith("json") or path.endswith("json") or path == "keyed-json-api":
        assert response.mimetype == "application/problem+json"
        assert response.json is not None
        assert response.json["code"] == "invalid_unicode"
    assert count_todos(demo) == before


@pytest.mark.parametrize("path", ["json-api", "json-board", "keyed-json-api"])
def test_encoded_surrogate_bytes_are_400(demo: flask.Flask, path: str) -> None:
    url = "/todos" if "api" in path else "/items"
    headers = {"Idempotency-Key": "k-" + uuid.uuid4().hex} if path == "keyed-json-api" else {}
    before = count_todos(demo)
    response = demo.test_client().post(
        url, data=b'{"title": "\xed\xa0\x80"}', content_type="application/json", headers=headers
    )
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["code"] == "invalid_unicode"
    assert count_todos(demo) == before


# NUL and other control characters in a str field: a field error, alike on every database


@pytest.mark.parametrize("path", ["form", "htmx", "json-board", "json-api", "keyed-json-api"])
@pytest.mark.parametrize("title", ["a\x00b", "bell\x07", "\x1b[31mred"])
def test_control_character_is_a_field_error(demo: flask.Flask, path: str, title: str) -> None:
    before = count_todos(demo)
    response = submit(demo, path, title)
    assert response.status_code == 422, response.text
    if response.mimetype == "application/problem+json":
        assert response.json is not None
        assert list(response.json["errors"]) == ["title"]
    assert count_todos(demo) == before


@pytest.mark.parametrize("path", ["validate-form", "validate-json"])
def test_control_character_live_validation(demo: flask.Flask, path: str) -> None:
    response = submit(demo, path, "a\x00b")
    assert response.status_code == 200
    if path == "validate-json":
        assert response.json is not None
        assert response.json["errors"]["title"]
    else:
        assert 'aria-invalid="true"' in response.text


@pytest.mark.parametrize("path", ["form", "json-api"])
def test_tab_and_newlines_are_text(demo: flask.Flask, path: str) -> None:
    response = submit(demo, path, "Milk\tand\neggs\r\n")
    assert response.status_code in (201, 303), response.text


# Fuzz: arbitrary Unicode, surrogates, NUL and control characters never make a 500

TEXT = st.text(
    alphabet=st.characters(exclude_categories=())
    | st.integers(0xD800, 0xDFFF).map(chr)
    | st.integers(0, 0x1F).map(chr)
    | st.sampled_from(["\x7f", "\x85", "\u2028", "\ufeff", "\U0001f600"]),
    max_size=24,
)


@pytest.mark.parametrize(
    "demo",
    [
        "sqlite",
        # PostgreSQL text cannot hold NUL: a 500 (DataError) until str fields refuse it.
        "postgresql",
        "mariadb",
    ],
    indirect=True,
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=TEXT, path=st.sampled_from(PATHS))
@example(title="a\x00b", path="json-api")
@example(title="\ud800", path="form")
@example(title="\ud83d\ude00", path="json-board")
def test_fuzz_text_never_500(demo: flask.Flask, title: str, path: str) -> None:
    response = submit(demo, path, title)
    assert response.status_code < 500, response.text
    # In JSON a high and a low surrogate escape in a row are one character; a form sends bytes.
    sent = json.loads(json_body(title=title))["title"] if "json" in path else title
    if any(0xD800 <= ord(c) <= 0xDFFF for c in sent):
        assert response.status_code == 400


# A database behind a proxy that a test can cut, black-hole and restore


class Proxy:
    """A TCP proxy to a database server: ``open`` forwards; ``refuse`` drops open connections and
    resets new ones at once; ``black_hole`` drops open ones and accepts new ones, never answering.

    The listening port stays bound throughout, so no other socket can take it during an outage.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode = "open"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        return listener

    def refuse(self) -> None:
        self.mode = "refuse"
        self._drop()

    def black_hole(self) -> None:
        self.mode = "black_hole"
        self._drop()

    def stall(self) -> None:
        """Keep open connections open but forward nothing more, and never answer new ones."""
        self.mode = "stall"

    def restore(self) -> None:
        self.mode = "open"
        self._drop()  # held black-holed connections end: their clients have given up

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self._listener.close()
        self._drop()

    def _drop(self) -> None:
        with self._lock:
            dropped, self._sockets = self._sockets, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):
                return  # closed
            if self.mode == "refuse":
                # A reset, as from a host with nothing listening on the port.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            with self._lock:
                self._sockets.append(client)
            if self.mode in ("black_hole", "stall"):
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.mode != "stall":
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT = 3


@pytest.fixture(params=["postgresql", "mariadb"])
def outage(request: pytest.FixtureRequest) -> t.Iterator[tuple[flask.Flask, Proxy]]:
    """The demo on PostgreSQL or MariaDB through a :class:`Proxy`, its store too."""
    url = sa.make_url(require_service(request.param))
    assert url.host is not None
    assert url.port is not None
    proxy = Proxy(url.host, url.port)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = create_app(
        demo_config(
            proxied,
            DATABASE_CONNECT_TIMEOUT=CONNECT_TIMEOUT,
            DATABASE_STATEMENT_TIMEOUT=STATEMENT_TIMEOUT,
        )
    )
    try:
        yield app, proxy
    finally:
        proxy.restore()
        drop_tables(app)
        proxy.close()


def warm(app: flask.Flask) -> None:
    """Fill the pools: the first requests open the connections that an outage then drops."""
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert (
        client.post("/todos", json={"title": "warm"}, headers={"Idempotency-Key": "warm"}).status_code == 201
    )


def assert_503(response: TestResponse, *, json_caller: bool) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    if json_caller:
        assert response.mimetype == "application/problem+json"
        assert response.json is not None
        assert response.json["code"] in ("database_unavailable", "store_unavailable")
        assert "Traceback" not in response.text
        assert "SELECT" not in response.text
    else:
        assert response.mimetype == "text/html"


REQUESTS: dict[str, tuple[str, str, dict[str, t.Any], bool]] = {
    # name: (method, url, keyword arguments of the test client, whether the caller wants JSON)
    "unkeyed-json": ("POST", "/todos", {"json": {"title": "Milk"}}, True),
    "keyed-json": ("POST", "/todos", {"json": {"title": "Milk"}, "headers": {"Idempotency-Key": "k1"}}, True),
    "form": ("POST", "/items", {"data": {"title": "Milk", "id": str(uuid.uuid4())}}, False),
    "htmx": ("POST", "/items", {"data": {"title": "Milk"}, "headers": HX}, False),
    "read-json": ("GET", "/todos", {"headers": {"Accept": "application/json"}}, True),
    "read-page": ("GET", "/", {}, False),
}


def send(app: flask.Flask, name: str) -> TestResponse:
    method, url, kwargs, _ = REQUESTS[name]
    return app.test_client().open(url, method=method, **kwargs)


@pytest.mark.parametrize("name", REQUESTS)
def test_refused_database_is_503(outage: tuple[flask.Flask, Proxy], name: str) -> None:
    app, proxy = outage
    warm(app)
    proxy.refuse()
    assert_503(send(app, name), json_caller=REQUESTS[name][3])


@pytest.mark.parametrize("name", ["unkeyed-json", "keyed-json", "read-json", "read-page"])
def test_first_request_after_recovery_succeeds(outage: tuple[flask.Flask, Proxy], name: str) -> None:
    app, proxy = outage
    warm(app)
    proxy.refuse()
    assert send(app, name).status_code == 503
    proxy.restore()
    response = send(app, name)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("name", ["unkeyed-json", "read-json", "read-page"])
def test_hung_database_is_503_within_the_timeout(outage: tuple[flask.Flask, Proxy], name: str) -> None:
    app, proxy = outage
    warm(app)
    proxy.black_hole()
    started = time.monotonic()
    response = send(app, name)
    elapsed = time.monotonic() - started
    assert_503(response, json_caller=REQUESTS[name][3])
    # The connect timeout (MariaDB: the read timeout, for the server's greeting) bounds the wait,
    # with room for a busy machine; without one the request waits for the kernel (minutes).
    assert elapsed < CONNECT_TIMEOUT + STATEMENT_TIMEOUT + 5


@pytest.mark.parametrize("name", ["unkeyed-json", "read-page"])
def test_stalled_database_is_503_within_the_timeout(outage: tuple[flask.Flask, Proxy], name: str) -> None:
    app, proxy = outage
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip(
            "a proxy in user space acknowledges every byte, so libpq's tcp_user_timeout never fires, and"
            " psycopg has no client-side read timeout: only a real network partition can test this"
        )
    warm(app)
    proxy.stall()
    started = time.monotonic()
    response = send(app, name)
    elapsed = time.monotonic() - started
    assert_503(response, json_caller=REQUESTS[name][3])
    # PyMySQL's read timeout (the statement timeout) ends the pre-ping of a pooled connection.
    assert elapsed < CONNECT_TIMEOUT + 2 * STATEMENT_TIMEOUT + 5


def test_programming_error_stays_500(tmp_path: pathlib.Path) -> None:
    app = create_app(demo_config(f"sqlite:///{tmp_path / 'demo.sqlite'}"))
    app.config["TESTING"] = False
    with app.app_context():
        db.session.execute(sa.text("DROP TABLE todos"))
        db.session.commit()
    response = app.test_client().get("/todos")
    assert response.status_code == 500


# Two visitors with the same display name never share a key scope


def test_same_display_name_never_shares_a_scope(tmp_path: pathlib.Path) -> None:
    app = create_app(demo_config(f"sqlite:///{tmp_path / 'demo.sqlite'}"))
    form = {"title": "Milk", "id": str(uuid.uuid4())}
    responses = []
    for _ in range(2):
        client = app.test_client()
        with client.session_transaction() as session:
            session["visitor"] = "guest-abcd"
        responses.append(client.post("/items", data=form))
    assert [r.status_code for r in responses] == [303, 303]
    assert "Idempotent-Replayed" not in responses[1].headers
    assert count_todos(app) == 2


# The handler on an app of one's own


def _lost() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))


def plain_app(*, before: t.Callable[[flask.Flask], None] | None = None) -> flask.Flask:
    """An app whose views fail as a lost database connection does."""
    app = flask.Flask(__name__)
    app.config["TESTING"] = True
    if before is not None:
        before(app)
    Commands(app)

    @app.get("/read")
    def read() -> str:
        raise _lost()

    @app.get("/bug")
    def bug() -> str:
        raise sa.exc.ProgrammingError("SELEC 1", {}, ValueError("syntax error"))

    return app


def test_unavailable_html_gets_the_apps_503_page() -> None:
    app = plain_app()
    app.register_error_handler(503, lambda error: ("our 503 page", 503))
    response = app.test_client().get("/read")
    assert response.status_code == 503
    assert response.text == "our 503 page"
    assert response.headers["Retry-After"] == "5"


def test_unavailable_html_without_a_503_page() -> None:
    response = plain_app().test_client().get("/read")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "The database cannot be reached right now; retry shortly." in response.text


def test_unavailable_json_gets_a_problem() -> None:
    response = plain_app().test_client().get("/read", headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert response.json == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The database cannot be reached right now; retry shortly.",
        "code": "database_unavailable",
    }


def test_unavailable_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flask_commands")
    plain_app().test_client().get("/read")
    [record] = [r for r in caplog.records if r.name == "flask_commands"]
    assert record.getMessage() == (
        "The database cannot be reached; answered 503:"
        " (builtins.ConnectionError) server closed the connection"
    )
    assert record.exc_info is None


def test_programming_error_is_not_handled() -> None:
    with pytest.raises(sa.exc.ProgrammingError):
        plain_app().test_client().get("/bug")


def test_apps_own_handler_registered_before_wins() -> None:
    def own(app: flask.Flask) -> None:
        app.register_error_handler(sa.exc.DBAPIError, lambda error: ("ours", 500))

    assert plain_app(before=own).test_client().get("/read").text == "ours"


def test_apps_own_handler_registered_after_wins() -> None:
    app = plain_app()
    app.register_error_handler(sa.exc.OperationalError, lambda error: ("ours", 500))
    assert app.test_client().get("/read").text == "ours"


# A rejected poison job is one log line


def test_poison_job_logs_one_line(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    from celery.exceptions import Reject

    from flask_commands.celery import init_celery
    from flask_commands.handler import _JOB_TASK

    for name in ("flask_commands", "celery.app.trace"):
        caplog.set_level(logging.WARNING, logger=name)
    app = flask.Flask(__name__, instance_path=str(tmp_path))
    app.config["CELERY"] = {"broker_url": "memory://"}
    celery_app = init_celery(app)
    # apply() runs the task through Celery's tracer, which logs a rejection as the worker does.
    result = celery_app.tasks[_JOB_TASK].apply(args=["{not json"], task_id="poison-1")
    assert isinstance(result.result, Reject)
    # Only the package's and Celery's tracer's records: another module's worker test may leave a
    # receiver of Celery's signals connected in this process, whose errors are not ours to judge.
    logged = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("flask_commands", "celery.app.trace"))
    ]
    assert [r.getMessage() for r in logged] == [
        "Rejected job poison-1 without requeue: the envelope does not decode as JSON"
        " (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))."
    ]
    assert all(r.exc_info is None for r in logged)


# The demo's hardening


def test_demo_security_headers(tmp_path: pathlib.Path) -> None:
    app = create_app(demo_config(f"sqlite:///{tmp_path / 'demo.sqlite'}"))
    response = app.test_client().get("/")
    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'self'; script-src 'self'; style-src 'self';")
    assert "unsafe" not in policy
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_demo_session_cookie_is_samesite_lax(tmp_path: pathlib.Path) -> None:
    app = create_app(demo_config(f"sqlite:///{tmp_path / 'demo.sqlite'}"))
    cookie = app.test_client().get("/").headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie
    assert "HttpOnly" in cookie


def test_demo_refuses_large_bodies(tmp_path: pathlib.Path) -> None:
    app = create_app(demo_config(f"sqlite:///{tmp_path / 'demo.sqlite'}"))
    response = app.test_client().post("/todos", json={"title": "x" * (1024 * 1024)})
    assert response.status_code == 413
    assert response.json is not None
    assert response.json["detail"] == "The request body is larger than the limit of 65536 bytes."


@pytest.mark.parametrize(
    ("url", "connect_args"),
    [
        (
            "postgresql+psycopg://app@db/app",
            {
                "connect_timeout": 5,
                "options": "-c statement_timeout=15000",
                "tcp_user_timeout": 15000,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
            },
        ),
        (
            "mysql+pymysql://app@db/app",
            {"connect_timeout": 5, "read_timeout": 15.0, "write_timeout": 15.0},
        ),
    ],
)
def test_demo_engine_options(url: str, connect_args: dict[str, t.Any]) -> None:
    from demo_app import _engine_options

    options = _engine_options(url, {}, connect_timeout=5.0, statement_timeout=15.0)
    assert options == {"pool_pre_ping": True, "connect_args": connect_args}


def test_demo_engine_options_the_apps_own_win() -> None:
    from demo_app import _engine_options

    given = {"pool_pre_ping": False, "connect_args": {"connect_timeout": 30}}
    options = _engine_options(
        "postgresql://db/app?options=-c%20x%3D1", given, connect_timeout=5, statement_timeout=15
    )
    assert options["pool_pre_ping"] is False
    assert options["connect_args"]["connect_timeout"] == 30
    assert "options" not in options["connect_args"]  # the URL's own


def test_demo_works_under_its_content_security_policy(tmp_path: pathlib.Path) -> None:
    """The board, htmx and live validation in Chromium: no CSP violation, and htmx still swaps."""
    from conftest import CHROMIUM_ARGS
    from conftest import require_chromium
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    executable = require_chromium()
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite'}", "SECRET_KEY": "csp"}
    )
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    violations: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.on(
                "console",
                lambda message: (
                    violations.append(message.text) if "Content Security Policy" in message.text else None
                ),
            )
            page.add_init_script(
                "document.addEventListener('securitypolicyviolation',"
                " e => console.error('Content Security Policy: ' + e.violatedDirective + ' ' + e.blockedURI))"
            )
            page.goto(f"http://127.0.0.1:{httpd.server_port}/")
            page.wait_for_function("window.htmx !== undefined")
            page.evaluate("window.sameDocument = true")
            page.type("#title", "a")  # live validation swaps the field with its error
            page.keyboard.press("Backspace")
            page.locator("#title-errors").wait_for()
            page.keyboard.type("Buy milk")
            page.press("#title", "Enter")
            page.locator(".todo .title", has_text="Buy milk").wait_for()
            assert page.evaluate("window.sameDocument === true"), (
                "htmx did not swap: a full page load happened"
            )
            browser.close()
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
    assert violations == []


@pytest.mark.parametrize(
    ("errno", "status"),
    [(2003, 503), (2013, 503), (1213, 503), (1969, 503), (1054, 500), (1045, 500)],
)
def test_mysql_errors_by_number(errno: int, status: int) -> None:
    import pymysql

    app = plain_app()

    @app.get("/mysql")
    def mysql() -> str:
        raise sa.exc.OperationalError("SELECT x", {}, pymysql.err.OperationalError(errno, "a message"))

    app.config["TESTING"] = False
    assert app.test_client().get("/mysql").status_code == status
