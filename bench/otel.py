"""The command view's throughput with OpenTelemetry on (SDK, no-op exporters) against off, in one run.

    .venv/bin/python -P bench/otel.py [--seconds 2] [--rounds 4] [--connections 4]

The app serves ``POST /todos`` with ``@command_view(AddTodo, add_todo)``: a JSON body with a new
``Idempotency-Key`` per request (so each one claims and completes a key in the default memory
store), a no-op handler, 201 with JSON. It is measured twice:

- over HTTP, as bench/http_view.py does: one gunicorn server per configuration (1 worker, gthread x4)
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

import argparse
import io
import json
import os
import statistics
import sys
import time
import typing as t
import uuid

import flask
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import NoOpTracerProvider
from werkzeug.test import EnvironBuilder

from flask_commands import otel

sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # python -P leaves bench/ out
import loopback
from todos import BODY
from todos import command_app

CONFIGS = ("off", "api", "on", "on+flask")
TARGET = 0.9


class _NoExporter(SpanExporter):
    def export(self, spans: t.Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


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
    app = command_app()
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
    """Serve configuration ``name`` with gunicorn (1 worker, gthread x4) on 127.0.0.1:``port``."""
    # Loaded in the worker process: the SDK's batch thread must start after the fork.
    loopback.serve(lambda: _configured(name), port, loopback.GTHREAD)


def over_http(seconds: int, rounds: int, connections: int) -> dict[str, list[tuple[float, float]]]:
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    with loopback.servers(__file__, CONFIGS) as servers, loopback.wrk_script() as script:
        for server in servers.values():
            # A warm-up, and a check: 2xx only.
            loopback.wrk(server.port, 1, script, BODY, connections=connections)
        for round_ in range(rounds):
            shift = round_ % len(CONFIGS)
            for name in CONFIGS[shift:] + CONFIGS[:shift]:
                server = servers[name]
                before = loopback.cpu_seconds(server.process.pid)
                run = loopback.wrk(server.port, seconds, script, BODY, connections=connections)
                cpu = loopback.cpu_seconds(server.process.pid) - before
                rates[name].append((run.rate, cpu / max(run.requests, 1)))
    return rates


def in_process(seconds: float, rounds: int) -> dict[str, list[tuple[float, float]]]:
    tracer_provider, meter_provider = _providers()
    plain = command_app()
    flask_instrumented = command_app()
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
    loopback.require_wrk()
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
