"""Traces and metrics of the demo, when the OpenTelemetry SDK is installed and asked for.

On when ``OTEL_TRACES_EXPORTER`` is set (``console`` prints each span) or ``COMMANDS_OTEL`` is
true (``FLASK_COMMANDS_OTEL=true``); otherwise, or without the packages (``pip install -e
'.[dev]'``: opentelemetry-sdk, -exporter-prometheus, -instrumentation-flask and -celery), the demo
runs unchanged. When on:

- :func:`flask_commands.otel.instrument` turns the package's signals into spans and metrics;
- opentelemetry-instrumentation-flask and -celery, where installed, add the HTTP server spans and
  the Celery job spans that ours nest in (the worker runs ``create_app()`` too);
- ``GET /metrics`` serves the metrics as Prometheus text (restrict it in production: it says how
  busy the app is; here it is left open for the demo).
"""

from __future__ import annotations

import importlib.util
import os
import threading

from flask import Flask
from flask import Response

_lock = threading.Lock()
_providers: tuple[object, object] | None = None  # one per process, however many apps


def init_app(app: Flask) -> None:
    """Turn on OpenTelemetry for ``app`` when the environment or config asks and the SDK is installed."""
    wanted = bool(os.environ.get("OTEL_TRACES_EXPORTER")) or bool(app.config.get("COMMANDS_OTEL"))
    needed = ("opentelemetry.sdk", "opentelemetry.exporter.prometheus", "prometheus_client")
    if not wanted or any(importlib.util.find_spec(name) is None for name in needed):
        return
    from flask_commands import otel

    tracer_provider, meter_provider = _global_providers()
    otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)  # type: ignore[arg-type]
    if importlib.util.find_spec("opentelemetry.instrumentation.flask") is not None:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        # The instrumentation packages ship no type hints.
        FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
            app, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    if importlib.util.find_spec("opentelemetry.instrumentation.celery") is not None:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    app.add_url_rule("/metrics", "metrics", _metrics)


def _global_providers() -> tuple[object, object]:
    """The SDK's tracer and meter providers, made and set as global once per process."""
    global _providers
    with _lock:
        if _providers is None:
            from opentelemetry import metrics
            from opentelemetry import trace
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win over this default.
            resource = Resource.create(
                {"service.name": os.environ.get("OTEL_SERVICE_NAME", "flask-commands-demo")}
            )
            tracer_provider = TracerProvider(resource=resource)
            if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
                tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            meter_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
            trace.set_tracer_provider(tracer_provider)
            metrics.set_meter_provider(meter_provider)
            _providers = (tracer_provider, meter_provider)
        return _providers


def _metrics() -> Response:
    """The Prometheus text exposition of every metric of this process."""
    from prometheus_client import CONTENT_TYPE_LATEST
    from prometheus_client import generate_latest

    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
