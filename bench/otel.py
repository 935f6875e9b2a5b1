"""The command view's throughput with OpenTelemetry on (SDK, no-op exporters) against off, in one run.

    .venv/bin/python -P bench/otel.py [--seconds 2] [--rounds 4] [--connections 4]

The app serves ``POST /todos`` with ``@command_view(AddTodo, add_todo)``: a JSON body with a new
``Idempotency-Key`` per request (so each one claims and completes a key in the default memory
store), a no-op handler, 201 with JSON. It is measured twice:

- over HTTP, as bench/http.py does: one gunicorn server per configuration (1 worker, gthread x4)
  driven in turn by ``wrk`` (Debian: ``apt-get install wrk``); the target is measured so;
- in process: requests straight to the WSGI app (no server, no socket), where the
  instrumentation's share of the cost is largest.

1. ``off``: :func:`flask_commands.otel.uninstrument` (the signals have no receivers).
2. ``api``: :func:`flask_commands.otel.instrument` with the API's no-op providers (no SDK): the
   cost of the receivers themselves, without the SDK's spans and points.
3. ``on``: :func:`flask_commands.otel.instrument` with an SDK ``TracerProvider`` whose
   ``BatchSpanProcessor`` exports to a no-op exporter, and an SDK ``MeterProvider`` with a metric
   reader: every request makes the ``handle AddTodo`` span and a duration point.
4. ``on+flask``: as 3, on a second app also instrumented by opentelemetry-instrumentation-flask
   (its server span and metrics), for context: that cost is the Flask instrumentation's, not ours.

The rounds alternate the configurations, each round starting with the next one, so that a busy
machine slows them alike; each figure is the median of its rounds, as throughput and as CPU time
per request (the server process's, or this process's): on a shared machine the second is the
steadier. Target: ``on`` at least 0.9 times ``off``.
"""

from __future__ import annotations

import os
import sys

# Run as bench/otel.py without -P, Python puts bench/ first on sys.path, where bench/http.py
# would shadow the standard library's http package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import typing as t  # noqa: E402
import uuid  # noqa: E402

import flask  # noqa: E402
from opentelemetry.metrics import NoOpMeterProvider  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: E402
from opentelemetry.trace import NoOpTracerProvider  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402
from wtforms import validators as v  # noqa: E402

from flask_commands import Command  # noqa: E402
from flask_commands import Commands  # noqa: E402
from flask_commands import command_view  # noqa: E402
from flask_commands import field  # noqa: E402
from flask_commands import handler  # noqa: E402
from flask_commands import otel  # noqa: E402

CONFIGS = ("off", "api", "on", "on+flask")
TARGET = 0.9
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
def add_todo(cmd: AddTodo) -> dict[str, t.Any]:
    return {"title": cmd.title, "order": cmd.order, "completed": cmd.completed}


class _NoExporter(SpanExporter):
    def export(self, spans: t.Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def make_app() -> flask.Flask:
    app = flask.Flask(__name__)
    Commands(app)

    @app.post("/todos")
    @command_view(AddTodo, add_todo)
    def new_todo(result: dict[str, t.Any], cmd: AddTodo) -> t.Any:
        return {**result, "id": str(cmd.id)}, 201

    return app


def run(app: flask.Flask, seconds: float) -> tuple[float, float]:
    """Requests per second served by ``app`` for ``seconds``, and CPU seconds per request.

    The CPU time is the whole process's (the SDK's export thread included).
    """
    body = json.dumps({"title": "Buy milk", "order": 3, "completed": False}).encode()
    base = EnvironBuilder(
        path="/todos", method="POST", data=body, content_type="application/json"
    ).get_environ()
    wsgi = app.wsgi_app
    statuses: list[str] = []

    def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> t.Any:
        statuses.append(status)
        return None

    count = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    cpu = time.process_time()
    while True:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex
        response = wsgi(environ, start_response)
        for _ in response:
            pass
        if hasattr(response, "close"):
            response.close()
        count += 1
        if count % 64 == 0 and time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if not statuses[-1].startswith("201"):
        raise SystemExit(f"the view answered {statuses[-1]!r}, not 201")
    return count / elapsed, cpu / count


def _providers() -> tuple[TracerProvider, MeterProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_NoExporter()))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def _configured(name: str) -> flask.Flask:
    """The app of configuration ``name``, instrumented as it says (in this process)."""
    app = make_app()
    if name == "off":
        return app
    if name == "api":
        otel.instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
        return app
    tracer_provider, meter_provider = _providers()
    otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    if name == "on+flask":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    return app


def serve(name: str, port: int) -> None:
    """Serve configuration ``name`` with gunicorn on 127.0.0.1:``port`` until killed."""
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

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
            # In the worker process: the SDK's batch thread must start after the fork.
            return _configured(name)

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


def _wrk(port: int, seconds: float, connections: int, script: str) -> tuple[float, int]:
    """Requests per second and requests of one wrk run; exits if any response was not 2xx."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}"]
    command += ["--", uuid.uuid4().hex, json.dumps(BODY)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output) or re.search(r"Socket errors: .*", output):
        raise SystemExit(f"wrk saw failures on port {port}:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{output}")
    total = re.search(r"(\d+) requests in", output)
    return float(found.group(1)), int(total.group(1)) if total else 0


def _cpu(master: int) -> float:
    """CPU seconds used so far by the gunicorn master ``master`` and its workers (from /proc)."""
    total = 0.0
    pids = [master]
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            pids += [int(p) for p in f.read().split()]
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0
    return total


def over_http(seconds: int, rounds: int, connections: int) -> dict[str, list[tuple[float, float]]]:
    ports = {name: _free_port() for name in CONFIGS}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-P", os.path.abspath(__file__), "--serve", name, "--port", str(port)]
        )
        for name, port in ports.items()
    }
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(WRK_SCRIPT)
            script.flush()
            for name, port in ports.items():
                _wait_ready(port, processes[name])
                _wrk(port, 1, connections, script.name)  # warm-up (and a check: 2xx only)
            for round_ in range(rounds):
                shift = round_ % len(CONFIGS)
                for name in CONFIGS[shift:] + CONFIGS[:shift]:
                    before = _cpu(processes[name].pid)
                    rate, requests = _wrk(ports[name], seconds, connections, script.name)
                    rates[name].append((rate, (_cpu(processes[name].pid) - before) / max(requests, 1)))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=10)
    return rates


def in_process(seconds: float, rounds: int) -> dict[str, list[tuple[float, float]]]:
    tracer_provider, meter_provider = _providers()
    plain = make_app()
    flask_instrumented = make_app()
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(
        flask_instrumented, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    apps = {"off": plain, "api": plain, "on": plain, "on+flask": flask_instrumented}
    for name in CONFIGS:  # warm up every path once
        _switch(name, tracer_provider, meter_provider)
        run(apps[name], 0.2)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for round_ in range(rounds):
        shift = round_ % len(CONFIGS)
        for name in CONFIGS[shift:] + CONFIGS[:shift]:
            _switch(name, tracer_provider, meter_provider)
            results[name].append(run(apps[name], seconds))
    otel.uninstrument()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return results


def _report(title: str, runs: dict[str, list[tuple[float, float]]]) -> tuple[float, float]:
    """Print each configuration's median throughput and CPU per request; return on/off of both.

    The CPU time per request is the steadier figure on a shared machine: other processes slow
    the throughput of every configuration, but not the CPU time each request takes.
    """
    rate = {name: statistics.median(r for r, _ in values) for name, values in runs.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in runs.items()}
    print(title)
    for name in CONFIGS:
        rates = ", ".join(f"{r:.0f}" for r, _ in runs[name])
        print(
            f"  {name:<9} {rate[name]:7.0f} req/s {rate[name] / rate['off']:5.2f}x off"
            f"  {cpu[name] * 1e6:6.0f} us CPU/request {cpu['off'] / cpu[name]:5.2f}x off  ({rates})"
        )
    print(f"  the receivers alone (api): {cpu['api'] - cpu['off']:+.1e} s CPU/request")
    return rate["on"] / rate["off"], cpu["off"] / cpu["on"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=2, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=4, help="runs per configuration, alternating")
    parser.add_argument("--connections", type=int, default=4, help="wrk's open connections")
    parser.add_argument("--serve", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is not installed; on Debian: apt-get install wrk")
    http = _report(
        f"over HTTP: gunicorn (1 worker, gthread x4) + wrk (-t1 -c{args.connections}),"
        f" {args.rounds} x {args.seconds} s each, medians; {os.cpu_count()} CPUs",
        over_http(args.seconds, args.rounds, args.connections),
    )
    local = _report(
        f"in process (WSGI calls, no server), {args.rounds} x 0.5 s each, medians",
        in_process(0.5, args.rounds),
    )
    verdict = "meets" if http[0] >= TARGET else "misses"
    print(
        f"on / off over HTTP: {http[0]:.2f} by throughput ({verdict} the target {TARGET}),"
        f" {http[1]:.2f} by CPU per request; in process: {local[0]:.2f} and {local[1]:.2f}"
    )


def _switch(name: str, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    otel.uninstrument()
    if name == "api":
        otel.instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    elif name != "off":
        otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


if __name__ == "__main__":
    main()
