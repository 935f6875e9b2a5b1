"""End-to-end HTTP throughput of a command view against a bare Flask JSON view, under gunicorn.

    .venv/bin/python bench/http_view.py [--seconds 4] [--rounds 4] [--connections 4]

Needs ``wrk`` (Debian: ``apt-get install wrk``). Four gunicorn servers on loopback, each one
worker process with four threads (keep-alive), serve ``POST /todos`` with a JSON body:

1. ``bare``: a plain Flask view doing the same parsing by hand: the JSON object, a required
   ``title`` of at most 200 characters, an optional integer ``order``, a boolean ``completed``;
   answers 201 with the todo as JSON.
2. ``command``: ``@command_view(AddTodo, add_todo)`` with the same fields and response: build,
   the default memory idempotency store (every request carries a new ``Idempotency-Key``, so each
   one claims and completes a key), a no-op handler, signals with no receivers.
3. ``log``: as 2, with ``signals.log_to(logger)`` connected to a logger whose level (WARNING)
   discards the INFO records, as in production where signals log at INFO.
4. ``log-null``: as 2, with ``log_to`` to a logger that takes the records (INFO) into a
   ``NullHandler``: every signal becomes a ``LogRecord``, formatted arguments included.

``wrk`` (one thread, a few connections) drives each server in turn for ``--seconds``; the rounds
alternate between the servers, each round starting with the next one, so that a busy machine
slows them alike; each figure is the median of its rounds. Target: ``command`` at least 0.85 times ``bare``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import flask
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands import signals

SERVERS = ("bare", "command", "log", "log-null")
TARGET = 0.85
BODY = {"title": "Buy milk", "order": 3, "completed": False}

# Each wrk thread sends its own run of keys: "<nonce>-<thread>-<n>", new for every request.
WRK_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local prefix = ""
local body = ""
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  body = args[2]
end
function request()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = prefix .. counter}
  return wrk.format("POST", "/todos", headers, body)
end
"""


class AddTodo(Command):
    title: str = field(validators=[v.InputRequired(), v.Length(max=200)])
    order: int | None = None
    completed: bool = False


@handler(AddTodo)
def add_todo(cmd: AddTodo) -> AddTodo:
    return cmd


def _todo(ident: str, title: str, order: int | None, completed: bool) -> flask.Response:
    body = {"id": ident, "title": title, "order": order, "completed": completed}
    response = flask.jsonify(body)
    response.status_code = 201
    return response


def bare_app() -> flask.Flask:
    """A plain Flask view that parses and checks the same input by hand."""
    app = flask.Flask("bare")

    @app.post("/todos")
    def create() -> flask.typing.ResponseReturnValue:
        data = flask.request.get_json(silent=True)
        if not isinstance(data, dict):
            return {"detail": "The request body must be a JSON object."}, 400
        errors: dict[str, list[str]] = {}
        title = data.get("title")
        if not isinstance(title, str) or not title:
            errors["title"] = ["This field is required."]
        elif len(title) > 200:
            errors["title"] = ["Field cannot be longer than 200 characters."]
        order = data.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
            errors["order"] = ["Not a valid integer value."]
        completed = data.get("completed", False)
        if completed is None:
            completed = False
        if not isinstance(completed, bool):
            errors["completed"] = ["Not a valid value."]
        if errors:
            return {"errors": errors}, 422
        assert isinstance(title, str)
        return _todo(str(uuid.uuid4()), title, order, completed)

    return app


def command_app(log: str | None = None) -> flask.Flask:
    """The same endpoint as a command view; ``log`` connects ``signals.log_to``."""
    app = flask.Flask("command")
    Commands(app)

    @app.post("/todos")
    @command_view(AddTodo, add_todo)
    def create(result: AddTodo, cmd: AddTodo) -> flask.typing.ResponseReturnValue:
        return _todo(str(cmd.id), cmd.title, cmd.order, cmd.completed)

    if log is not None:
        logger = logging.getLogger(f"bench.{log}")
        logger.propagate = False
        if log == "log":
            logger.setLevel(logging.WARNING)  # the INFO records are discarded by the level check
        else:
            logger.setLevel(logging.INFO)
            logger.addHandler(logging.NullHandler())
        signals.log_to(logger, logging.INFO)
    return app


def serve(name: str, port: int) -> None:
    """Serve the app ``name`` with gunicorn on 127.0.0.1:``port`` until killed."""
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    app = bare_app() if name == "bare" else command_app(None if name == "command" else name)
    options = {
        "bind": f"127.0.0.1:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": 4,
        "keepalive": 5,
        "accesslog": None,
        "loglevel": "warning",
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> flask.Flask:
            return app

    Server().run()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server on port {port} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on port {port} did not start within {timeout:.0f} s")


def _check(name: str, port: int) -> None:
    """One request by hand: 201 with the todo, or the comparison would be meaningless."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/todos",
        data=json.dumps(BODY).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": f"check-{uuid.uuid4()}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
        if response.status != 201 or body["title"] != BODY["title"]:
            raise SystemExit(f"{name}: unexpected answer {response.status} {body!r}")


def _wrk(port: int, seconds: int, connections: int, script: str) -> float:
    """Requests per second of one wrk run; exits if any response was not 2xx."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        script,
        f"http://127.0.0.1:{port}",
        "--",
        uuid.uuid4().hex,
        json.dumps(BODY),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: .*", output)
    if bad or errors:
        raise SystemExit(f"wrk saw failures on port {port}:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{output}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=4, help="runs per server, alternating")
    parser.add_argument("--connections", type=int, default=4, help="wrk's open connections")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is not installed; on Debian: apt-get install wrk")

    ports = {name: _free_port() for name in SERVERS}
    processes = {
        name: subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", name, "--port", str(port)],
        )
        for name, port in ports.items()
    }
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(WRK_SCRIPT)
            script.flush()
            for name, port in ports.items():
                _wait_ready(port, processes[name])
                _check(name, port)
                _wrk(port, 1, args.connections, script.name)  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in SERVERS}
            for round_ in range(args.rounds):
                # Each round starts one server later, so no server always runs first or last.
                shift = round_ % len(SERVERS)
                for name in SERVERS[shift:] + SERVERS[:shift]:
                    rates[name].append(_wrk(ports[name], args.seconds, args.connections, script.name))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=10)

    median = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"gunicorn (1 worker, gthread x4) + wrk (-t1 -c{args.connections}), {args.rounds} x {args.seconds} s"
        f" each, medians; {os.cpu_count()} CPUs"
    )
    for name in SERVERS:
        runs = ", ".join(f"{r:.0f}" for r in rates[name])
        print(f"  {name:<9} {median[name]:8.0f} req/s   ({runs})")
    ratio = median["command"] / median["bare"]
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"command / bare:            {ratio:.2f}   ({verdict} the target {TARGET})")
    print(f"command + log_to (discarded by level) / bare: {median['log'] / median['bare']:.2f}")
    print(f"command + log_to (NullHandler) / bare:        {median['log-null'] / median['bare']:.2f}")


if __name__ == "__main__":
    main()
