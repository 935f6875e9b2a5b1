"""The same JSON endpoint in Flask-Commands and its peers: server-side cost, and optionally HTTP throughput.

    .venv/bin/python bench/peers.py [--seconds 10] [--http] [--profile APP:PATH]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: flask-openapi3, APIFlask, flask-smorest,
pinned); a peer that is not installed is left out. Every app serves ``POST /todos`` with
``{"title": str 1..200, "order": int | null, "completed": bool}``, validated, a no-op handler, and
answers 201 with the todo as JSON or 422 with the errors:

- ``bare``: Flask, the checks written by hand (the limit);
- ``command``: ``@command_view(AddTodo, add_todo)`` (memory idempotency store, no key sent);
- ``keyed``: the same view, every request with a new ``Idempotency-Key`` (claim, record);
- ``openapi3``: flask-openapi3 with a pydantic body model;
- ``apiflask``: APIFlask with a marshmallow input schema (``@app.input``);
- ``smorest``: flask-smorest with a marshmallow schema (``@blp.arguments``).

Server-side cost, without the network: each request is ``app.wsgi_app(environ, start_response)``
on a prepared WSGI environ (body, headers), its body read to the end; rounds of a few hundred
requests alternate between the apps (each round starting with the next app) and each figure is
the best round's mean CPU time of this process (steadier than wall time on a shared machine).
Printed: µs per request, the cost over ``bare`` and each app's throughput relative to ``bare``.
Targets (issue 17): the command view at most 10 µs over bare on valid input, 20 µs keyed, 25 µs
invalid, each below every peer's.

``--http`` (bounded: ``--http-seconds`` per run) also serves each app with gunicorn on loopback
(sync ``-w 1``, sync ``-w 2``, ``gthread`` one worker of 4 threads) and drives it with ``wrk``
(Debian: ``apt-get install wrk``), printing requests per second relative to bare Flask, and the
server's CPU time per request relative to bare Flask's (time spent waiting for a CPU that another
process holds lowers the first, not the second).
``--profile command:valid`` prints a cProfile of that app and path instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
import typing as t
import uuid

import flask
import pydantic

sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # python -P leaves bench/ out
import loopback
from todos import BODY
from todos import bare_app
from todos import command_app
from todos import todo

VALID = BODY
INVALID = {"title": "", "order": "soon", "completed": False}
PATHS = {"valid": (VALID, 201), "invalid": (INVALID, 422)}


class TodoBody(pydantic.BaseModel):
    """flask-openapi3's body model (its view's annotation, so at module level)."""

    title: t.Annotated[str, pydantic.Field(min_length=1, max_length=200)]
    order: int | None = None
    completed: bool = False


def openapi3_app() -> flask.Flask:
    """flask-openapi3 with a pydantic model."""
    from flask_openapi3 import OpenAPI

    app = OpenAPI("openapi3")

    @app.post("/todos")
    def create(body: TodoBody) -> t.Any:  # flask-openapi3 evaluates the annotations
        return todo(str(uuid.uuid4()), body.title, body.order, body.completed)

    return app


def _marshmallow_schema() -> type:
    from marshmallow import Schema
    from marshmallow import fields
    from marshmallow import validate

    class TodoSchema(Schema):
        title = fields.String(required=True, validate=validate.Length(min=1, max=200))
        order = fields.Integer(allow_none=True, load_default=None)
        completed = fields.Boolean(load_default=False)

    return TodoSchema


def apiflask_app() -> flask.Flask:
    """APIFlask with a marshmallow input schema."""
    from apiflask import APIFlask

    app = APIFlask("apiflask")
    schema = _marshmallow_schema()

    @app.post("/todos")
    @app.input(schema)
    def create(json_data: dict[str, t.Any]) -> flask.typing.ResponseReturnValue:
        return todo(str(uuid.uuid4()), json_data["title"], json_data["order"], json_data["completed"])

    return t.cast(flask.Flask, app)


def smorest_app() -> flask.Flask:
    """flask-smorest with a marshmallow schema."""
    from flask_smorest import Api
    from flask_smorest import Blueprint

    app = flask.Flask("smorest")
    app.config.update(API_TITLE="bench", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    blp = Blueprint("todos", "todos")
    schema = _marshmallow_schema()

    @blp.route("/todos", methods=["POST"])
    @blp.arguments(schema)
    def create(data: dict[str, t.Any]) -> flask.typing.ResponseReturnValue:
        return todo(str(uuid.uuid4()), data["title"], data["order"], data["completed"])

    api.register_blueprint(blp)
    return app


FACTORIES: dict[str, t.Callable[[], flask.Flask]] = {
    "bare": bare_app,
    "command": command_app,
    "keyed": command_app,
    "openapi3": openapi3_app,
    "apiflask": apiflask_app,
    "smorest": smorest_app,
}


def available() -> dict[str, flask.Flask]:
    """The apps whose libraries are installed."""
    apps = {}
    for name, factory in FACTORIES.items():
        try:
            apps[name] = factory()
        except ImportError as e:
            print(f"{name}: left out, {e} (pip install -e '.[bench]')", file=sys.stderr)
    return apps


# --- server-side cost: app.wsgi_app(environ) ----------------------------------------------------


def _environ(body: bytes, keyed: bool) -> dict[str, t.Any]:
    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/todos",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if keyed:
        environ["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex
    return environ


def _call(app: flask.Flask, environ: dict[str, t.Any]) -> tuple[int, bytes]:
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        status.append(s)
        return lambda data: None

    result = app.wsgi_app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0]), body


def _check(apps: dict[str, flask.Flask]) -> None:
    """One request of each path by hand: the expected status, or the figures would be moot."""
    for name, app in apps.items():
        for path, (data, expected) in PATHS.items():
            status, body = _call(app, _environ(json.dumps(data).encode(), name == "keyed"))
            if status != expected:
                raise SystemExit(f"{name} answered {status} to the {path} input, not {expected}: {body!r}")


def server_side(apps: dict[str, flask.Flask], seconds: float, batch: int) -> dict[str, dict[str, float]]:
    """The best mean µs per request of each app and path, over interleaved rounds."""
    names = list(apps)
    best = {path: dict.fromkeys(names, float("inf")) for path in PATHS}
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < deadline:
        shift = rounds % len(names)
        for path, (data, _) in PATHS.items():
            body = json.dumps(data).encode()
            for name in names[shift:] + names[:shift]:
                if name == "keyed" and path == "invalid":
                    continue  # an invalid command is never keyed: the same as "command"
                environs = [_environ(body, name == "keyed") for _ in range(batch)]
                app = apps[name]
                # CPU time, not wall time: on a shared machine other processes take the CPU
                # away mid-round, which wall time would charge to whichever app was running.
                start = time.process_time()
                for environ in environs:
                    _call(app, environ)
                elapsed = (time.process_time() - start) / batch
                best[path][name] = min(best[path][name], elapsed * 1e6)
        rounds += 1
    best["invalid"].pop("keyed", None)
    return best


def report_server_side(best: dict[str, dict[str, float]], seconds: float) -> None:
    """Print the µs per request, the cost over bare and the throughput relative to bare."""
    print(
        f"Server-side cost, app.wsgi_app(environ) per request, best round's mean CPU time ({seconds:.0f} s)"
    )
    for path, figures in best.items():
        bare = figures["bare"]
        print(f"  {path}:")
        for name, us in figures.items():
            over = us - bare
            print(f"    {name:<9} {us:7.1f} µs   +{over:6.1f} µs over bare   {bare / us:5.2f}x bare's rate")
    for path, label, target in (("valid", "command", 10), ("valid", "keyed", 20), ("invalid", "command", 25)):
        figures = best[path]
        if label not in figures:
            continue
        over = figures[label] - figures["bare"]
        known = [name for name in ("openapi3", "apiflask", "smorest") if name in figures]
        peers = {name: figures[name] - figures["bare"] for name in known}
        fastest = min(peers, key=peers.__getitem__) if peers else None
        versus = f"; fastest peer {fastest} +{peers[fastest]:.1f} µs" if fastest else ""
        print(f"  {label} ({path}): +{over:.1f} µs over bare (target <= {target}){versus}")


# --- HTTP: gunicorn + wrk on loopback ----------------------------------------------------------

SETTINGS = {
    "sync -w 1": {"workers": 1, "worker_class": "sync"},
    "sync -w 2": {"workers": 2, "worker_class": "sync"},
    "gthread -w 1 x4": {"workers": 1, "worker_class": "gthread", "threads": 4},
}


def serve(name: str, port: int, setting: str) -> None:
    """Serve app ``name`` with gunicorn on 127.0.0.1:``port`` until killed."""
    app = FACTORIES[name]()
    loopback.serve(lambda: app, port, SETTINGS[setting])


def http(names: list[str], seconds: int, rounds: int, settings: list[str]) -> None:
    """gunicorn + wrk for each setting; print requests/s and CPU/request relative to bare Flask.

    The server's CPU time per request (master and workers, from /proc) is not charged with the time
    a server waits for a CPU that another process on a shared machine holds; its throughput is.
    """
    with loopback.wrk_script() as script:
        for setting in settings:
            served = [name for name in names if name != "keyed"]
            rates: dict[tuple[str, str], list[float]] = {}
            cpus: dict[tuple[str, str], list[float]] = {}
            with loopback.servers(__file__, served, "--setting", setting) as servers:
                runs = [(name, path) for name in names for path in PATHS]
                runs.remove(("keyed", "invalid"))  # an invalid command is never keyed
                for round_ in range(rounds):
                    shift = round_ % len(runs)
                    for name, path in runs[shift:] + runs[:shift]:
                        data, status = PATHS[path]
                        server = servers["command" if name == "keyed" else name]
                        before = loopback.cpu_seconds(server.process.pid)
                        run = loopback.wrk(
                            server.port, seconds, script, data, keyed=name == "keyed", expect_2xx=status < 300
                        )
                        used = loopback.cpu_seconds(server.process.pid) - before
                        rates.setdefault((name, path), []).append(run.rate)
                        cpus.setdefault((name, path), []).append(used / max(run.requests, 1))
            rate = {key: statistics.median(values) for key, values in rates.items()}
            cpu = {key: statistics.median(values) for key, values in cpus.items()}
            print(f"gunicorn {setting}, wrk -t1 -c8, {rounds} x {seconds} s, medians; ratio to bare Flask:")
            for path in PATHS:
                bare = ("bare", path)
                measured = [name for name in names if (name, path) in rate]
                by_rate = "  ".join(f"{name} {rate[(name, path)] / rate[bare]:.2f}" for name in measured)
                print(f"  {path:<8} req/s       bare {rate[bare]:.0f}; {by_rate}")
                if cpu[bare]:
                    by_cpu = "  ".join(f"{name} {cpu[bare] / cpu[(name, path)]:.2f}" for name in measured)
                    print(f"  {path:<8} CPU/request bare {cpu[bare] * 1e6:.0f} us; {by_cpu}")


# --- profile -----------------------------------------------------------------------------------


def profile(apps: dict[str, flask.Flask], target: str, count: int = 3000) -> None:
    """Print the cProfile of ``count`` requests to app:path (``command:valid``)."""
    name, _, path = target.partition(":")
    data, _ = PATHS[path or "valid"]
    body = json.dumps(data).encode()
    environs = [_environ(body, name == "keyed") for _ in range(count)]
    app = apps[name]
    profiler = cProfile.Profile()
    profiler.enable()
    for environ in environs:
        _call(app, environ)
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    stats.print_stats(25)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time for the server-side cost")
    parser.add_argument("--batch", type=int, default=200, help="requests per round and app")
    parser.add_argument("--http", action="store_true", help="also gunicorn + wrk on loopback")
    parser.add_argument("--http-seconds", type=int, default=3, help="length of one wrk run")
    parser.add_argument("--http-rounds", type=int, default=3, help="wrk runs per app, path and setting")
    parser.add_argument(
        "--http-setting", action="append", choices=SETTINGS, help="only this gunicorn setting (repeatable)"
    )
    parser.add_argument("--profile", metavar="APP:PATH", help="print a cProfile instead (command:valid)")
    parser.add_argument("--serve", choices=FACTORIES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port, args.setting)
        return
    apps = available()
    _check(apps)
    if args.profile:
        profile(apps, args.profile)
        return
    best = server_side(apps, args.seconds, args.batch)
    report_server_side(best, args.seconds)
    if args.http:
        loopback.require_wrk()
        http(list(apps), args.http_seconds, args.http_rounds, args.http_setting or list(SETTINGS))


if __name__ == "__main__":
    main()
