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
import statistics
import sys
import urllib.request
import uuid

import flask

from flask_commands import signals

sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # python -P leaves bench/ out
import loopback
import todos
from todos import BODY
from todos import bare_app

SERVERS = ("bare", "command", "log", "log-null")
TARGET = 0.85


def command_app(log: str | None = None) -> flask.Flask:
    """The same endpoint as a command view; ``log`` connects ``signals.log_to``."""
    app = todos.command_app()
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
    """Serve the app ``name`` with gunicorn (1 worker, gthread x4) on 127.0.0.1:``port`` until killed."""
    app = bare_app() if name == "bare" else command_app(None if name == "command" else name)
    loopback.serve(lambda: app, port, loopback.GTHREAD)


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
    loopback.require_wrk()
    with loopback.servers(__file__, SERVERS) as servers, loopback.wrk_script() as script:
        for name, server in servers.items():
            _check(name, server.port)
            loopback.wrk(server.port, 1, script, BODY, connections=args.connections)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in SERVERS}
        for round_ in range(args.rounds):
            # Each round starts one server later, so no server always runs first or last.
            shift = round_ % len(SERVERS)
            for name in SERVERS[shift:] + SERVERS[:shift]:
                run = loopback.wrk(
                    servers[name].port, args.seconds, script, BODY, connections=args.connections
                )
                rates[name].append(run.rate)

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
