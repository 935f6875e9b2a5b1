"""OpenTelemetry from the signals: the spans, attributes and metric points of every outcome and transport.

The ``telemetry`` fixture instruments with an SDK tracer provider (in-memory span exporter) and
meter provider (in-memory metric reader), and uninstruments afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import typing as t
import uuid

import flask
import jinja2
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode
from wtforms import validators as v

from flask_commands import Command
from flask_commands import Commands
from flask_commands import Conflict
from flask_commands import Rejected
from flask_commands import command_view
from flask_commands import field
from flask_commands import handler
from flask_commands import otel
from flask_commands import signals


class OtelNote(Command):
    """The command of every test here."""

    title: str = field(validators=[v.InputRequired(), v.Length(max=20)])


@handler(OtelNote)
def add_note(cmd: OtelNote) -> str:
    if cmd.title == "taken":
        raise Conflict("A note with that title exists.", code="duplicate_title")
    if cmd.title == "forbidden":
        raise Rejected("Forbidden is not a title.", code="forbidden_title")
    if cmd.title == "boom":
        raise RuntimeError(f"the database is on fire at {cmd.title}")
    if cmd.title == "nested":
        inner(OtelInner(title="inner"))
    return cmd.title


class OtelInner(Command):
    """The command of a handler that another handler calls."""

    title: str


@handler(OtelInner)
def inner(cmd: OtelInner) -> str:
    return cmd.title


FORM = '{% from "commands/macros.html" import render_form %}{{ render_form(form) }}'


@dataclasses.dataclass
class Telemetry:
    """What the SDK recorded: finished spans and metric points."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def points(self, metric: str) -> list[t.Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def point(self, metric: str, **attributes: t.Any) -> t.Any:
        matching = [p for p in self.points(metric) if dict(p.attributes) == attributes]
        assert len(matching) == 1, [dict(p.attributes) for p in self.points(metric)]
        return matching[0]


@pytest.fixture
def telemetry() -> t.Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    otel.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    yield Telemetry(exporter, reader, tracer_provider, meter_provider)
    otel.uninstrument()
    meter_provider.shutdown()
    tracer_provider.shutdown()


def make_app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.config["TESTING"] = True
    app.secret_key = "test"
    app.jinja_loader = jinja2.DictLoader({"form.html": FORM})
    Commands(app)

    @app.route("/notes", methods=["GET", "POST"])
    @command_view(OtelNote, add_note, template="form.html")
    def new_note(result: str, cmd: OtelNote) -> flask.typing.ResponseReturnValue:
        return result, 201

    return app


@pytest.fixture
def client() -> flask.testing.FlaskClient:
    return make_app().test_client()


def _post(client: flask.testing.FlaskClient, title: str, **kw: t.Any) -> flask.testing.TestResponse:
    return client.post("/notes", data={"title": title}, **kw)


# Outcomes.


def test_otel_ok_span(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    assert _post(client, "milk").status_code == 201
    span = telemetry.span("handle OtelNote")
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    command_id = attributes.pop(otel.COMMAND_ID)
    assert uuid.UUID(str(command_id))
    assert attributes == {
        "code.function.name": "test_otel.add_note",
        "flask_commands.command.name": "OtelNote",
        "flask_commands.transport": "html",
        "flask_commands.outcome": "ok",
    }


def test_otel_ok_duration_point(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    _post(client, "milk")
    point = telemetry.point(
        "flask_commands.command.duration",
        **{
            "flask_commands.command.name": "OtelNote",
            "flask_commands.outcome": "ok",
            "flask_commands.transport": "html",
        },
    )
    assert point.count == 1
    assert tuple(point.explicit_bounds) == otel.DURATION_BUCKETS


def test_otel_conflict(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    assert _post(client, "taken").status_code == 409
    span = telemetry.span("handle OtelNote")
    assert span.attributes is not None
    assert span.attributes["flask_commands.outcome"] == "conflict"
    assert span.attributes["flask_commands.code"] == "duplicate_title"
    assert span.status.status_code is StatusCode.UNSET  # a refusal is no fault
    point = telemetry.points("flask_commands.command.duration")[0]
    assert point.attributes["flask_commands.outcome"] == "conflict"


def test_otel_rejected(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    assert _post(client, "forbidden").status_code == 422
    span = telemetry.span("handle OtelNote")
    assert span.attributes is not None
    assert span.attributes["flask_commands.outcome"] == "rejected"
    assert span.attributes["flask_commands.code"] == "forbidden_title"
    assert span.status.status_code is StatusCode.UNSET


def test_otel_error(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    with pytest.raises(RuntimeError):
        _post(client, "boom")
    span = telemetry.span("handle OtelNote")
    assert span.attributes is not None
    assert span.attributes["flask_commands.outcome"] == "error"
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert "add_note" in str(event.attributes["exception.stacktrace"])
    point = telemetry.points("flask_commands.command.duration")[0]
    assert point.attributes["error.type"] == "RuntimeError"
    assert point.attributes["flask_commands.outcome"] == "error"


def test_otel_error_message_not_recorded(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    # The message quotes a field value (as a database error quotes its parameters).
    with pytest.raises(RuntimeError):
        _post(client, "boom")
    assert "fire at boom" not in json.dumps([json.loads(s.to_json()) for s in telemetry.spans()])


def test_otel_invalid(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    assert _post(client, "x" * 30).status_code == 422
    span = telemetry.span("handle OtelNote")
    assert dict(span.attributes or {}) == {
        "flask_commands.command.name": "OtelNote",
        "flask_commands.outcome": "invalid",
        "flask_commands.transport": "html",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert (
        telemetry.point(
            "flask_commands.build.invalid",
            **{"flask_commands.command.name": "OtelNote", "flask_commands.transport": "html"},
        ).value
        == 1
    )
    point = telemetry.points("flask_commands.command.duration")[0]
    assert point.attributes["flask_commands.outcome"] == "invalid"


def test_otel_keyed_run_is_a_miss(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    _post(client, "milk", headers={"Idempotency-Key": "k1"})
    assert telemetry.span("handle OtelNote").attributes["flask_commands.idempotency.result"] == "miss"  # type: ignore[index]


def test_otel_form_id_run_is_a_miss(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    client.post("/notes", data={"title": "milk", "id": str(uuid.uuid4())})
    assert telemetry.span("handle OtelNote").attributes["flask_commands.idempotency.result"] == "miss"  # type: ignore[index]


def test_otel_unkeyed_run_has_no_idempotency_result(
    telemetry: Telemetry, client: flask.testing.FlaskClient
) -> None:
    _post(client, "milk")
    assert "flask_commands.idempotency.result" not in telemetry.span("handle OtelNote").attributes  # type: ignore[operator]


def test_otel_replayed(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    command_id = str(uuid.uuid4())
    client.post("/notes", data={"title": "milk", "id": command_id})
    replay = client.post("/notes", data={"title": "milk", "id": command_id})
    assert replay.headers["Idempotent-Replayed"] == "true"
    _first, second = telemetry.spans("handle OtelNote")
    assert second.attributes is not None
    assert dict(second.attributes) == {
        "code.function.name": "test_otel.add_note",
        "flask_commands.command.name": "OtelNote",  # no command.id: an HTTP replay builds no command
        "flask_commands.transport": "html",
        "flask_commands.outcome": "replayed",
        "flask_commands.idempotency.result": "replay",
    }
    replays = telemetry.point(
        "flask_commands.idempotency.replays",
        **{"flask_commands.command.name": "OtelNote", "flask_commands.transport": "html"},
    )
    assert replays.value == 1


def test_otel_mismatch(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    client.post("/notes", json={"title": "milk"}, headers={"Idempotency-Key": "k3"})
    assert client.post("/notes", json={"title": "tea"}, headers={"Idempotency-Key": "k3"}).status_code == 422
    _first, second = telemetry.spans("handle OtelNote")
    assert dict(second.attributes or {}) == {
        "code.function.name": "test_otel.add_note",
        "flask_commands.command.name": "OtelNote",  # no command.id: the refusal comes before the build
        "flask_commands.transport": "json",
        "flask_commands.outcome": "rejected",
        "flask_commands.code": "idempotency_key_reused",
        "flask_commands.idempotency.result": "mismatch",
    }
    assert second.status.status_code is StatusCode.UNSET


def test_otel_mismatch_no_duration_point(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    client.post("/notes", json={"title": "milk"}, headers={"Idempotency-Key": "k3"})
    client.post("/notes", json={"title": "tea"}, headers={"Idempotency-Key": "k3"})
    # Only the first request ran the handler; the refusal is not a command's outcome.
    assert [p.count for p in telemetry.points("flask_commands.command.duration")] == [1]


class OtelRace(Command):
    """The command of a handler that sends its own request again while it holds the key."""

    title: str


@handler(OtelRace)
def race(cmd: OtelRace) -> str:
    again = flask.current_app.test_client().post(
        "/race", json={"title": cmd.title}, headers={"Idempotency-Key": "held"}
    )
    return str(again.status_code)


def test_otel_in_progress(telemetry: Telemetry) -> None:
    app = make_app()

    @app.route("/race", methods=["POST"])
    @command_view(OtelRace, race)
    def race_view(result: str, cmd: OtelRace) -> flask.typing.ResponseReturnValue:
        return result, 201

    response = app.test_client().post("/race", json={"title": "milk"}, headers={"Idempotency-Key": "held"})
    assert response.get_data(as_text=True) == "409"  # the inner request: in progress
    refused, first = telemetry.spans("handle OtelRace")  # the refusal ends first, inside the run
    assert dict(refused.attributes or {}) == {
        "code.function.name": "test_otel.race",
        "flask_commands.command.name": "OtelRace",
        "flask_commands.transport": "json",
        "flask_commands.outcome": "conflict",
        "flask_commands.code": "in_progress",
        "flask_commands.idempotency.result": "in_progress",
    }
    assert refused.status.status_code is StatusCode.UNSET
    assert first.attributes["flask_commands.idempotency.result"] == "miss"  # type: ignore[index]
    assert _parent(refused) == first.context.span_id


def test_otel_never_key_nor_values(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    for _ in range(2):
        _post(client, "secret-title", headers={"Idempotency-Key": "secret-key"})
    _post(client, "secret-title-" + "x" * 30)
    recorded = json.dumps([json.loads(s.to_json()) for s in telemetry.spans()])
    recorded += repr(telemetry.reader.get_metrics_data())
    assert "secret" not in recorded


def test_otel_nested_handler_is_a_child(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    _post(client, "nested", headers={"Idempotency-Key": "k2"})
    inner_span = telemetry.span("handle OtelInner")
    outer_span = telemetry.span("handle OtelNote")
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer_span.context.span_id
    assert inner_span.attributes["code.function.name"] == "test_otel.inner"  # type: ignore[index]
    # Only the outermost run is the one the key was claimed for.
    assert "flask_commands.idempotency.result" not in inner_span.attributes  # type: ignore[operator]
    assert outer_span.attributes["flask_commands.idempotency.result"] == "miss"  # type: ignore[index]


# Transports.


def test_otel_transport_htmx(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    _post(client, "milk", headers={"HX-Request": "true"})
    assert telemetry.span("handle OtelNote").attributes["flask_commands.transport"] == "htmx"  # type: ignore[index]


def test_otel_transport_json(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    client.post("/notes", json={"title": "milk"})
    assert telemetry.span("handle OtelNote").attributes["flask_commands.transport"] == "json"  # type: ignore[index]


def test_otel_transport_json_invalid(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    client.post("/notes", json={"title": ""})
    assert telemetry.span("handle OtelNote").attributes["flask_commands.transport"] == "json"  # type: ignore[index]


def test_otel_transport_cli(telemetry: Telemetry) -> None:
    app = make_app()
    result = app.test_cli_runner().invoke(
        args=["commands", "run", "OtelInner", "--data", '{"title": "milk"}']
    )
    assert result.exit_code == 0, result.output
    span = telemetry.span("handle OtelInner")
    assert span.attributes["flask_commands.transport"] == "cli"  # type: ignore[index]
    assert span.attributes["flask_commands.outcome"] == "ok"  # type: ignore[index]


def test_otel_transport_plain_call(telemetry: Telemetry) -> None:
    assert add_note(OtelNote(title="milk")) == "milk"
    assert telemetry.span("handle OtelNote").attributes["flask_commands.transport"] == "cli"  # type: ignore[index]


def test_otel_cli_run_is_a_miss(telemetry: Telemetry) -> None:
    result = (
        make_app()
        .test_cli_runner()
        .invoke(args=["commands", "run", "OtelInner", "--data", '{"title": "milk"}'])
    )
    assert result.exit_code == 0, result.output
    assert telemetry.span("handle OtelInner").attributes["flask_commands.idempotency.result"] == "miss"  # type: ignore[index]


def test_otel_plain_call_has_no_idempotency_result(telemetry: Telemetry) -> None:
    add_note(OtelNote(title="milk"))  # no key: nothing claimed, though no request either
    assert "flask_commands.idempotency.result" not in telemetry.span("handle OtelNote").attributes  # type: ignore[operator]


def test_otel_cli_mismatch(telemetry: Telemetry) -> None:
    runner = make_app().test_cli_runner()
    command_id = str(uuid.uuid4())
    for title in ("milk", "tea"):
        data = json.dumps({"title": title, "id": command_id})
        result = runner.invoke(args=["commands", "run", "OtelInner", "--data", data])
    assert result.exit_code == 2, result.output
    _first, second = telemetry.spans("handle OtelInner")
    assert dict(second.attributes or {}) == {
        "code.function.name": "test_otel.inner",
        "flask_commands.command.name": "OtelInner",
        "flask_commands.command.id": command_id,
        "flask_commands.transport": "cli",
        "flask_commands.outcome": "rejected",
        "flask_commands.code": "idempotency_key_reused",
        "flask_commands.idempotency.result": "mismatch",
    }


# Switching on and off.


def test_otel_uninstrument_leaves_no_receiver() -> None:
    import celery.signals

    celery_signals = [
        celery.signals.before_task_publish,
        celery.signals.after_task_publish,
        celery.signals.task_prerun,
        celery.signals.task_retry,
        celery.signals.task_postrun,
        celery.signals.task_rejected,
    ]
    # Other receivers may be connected (the demo's activity log connects one when imported).
    before = [len(s.receivers) for s in celery_signals]
    ours_before = [len(s.receivers) for s in signals._ALL]
    otel.instrument(tracer_provider=TracerProvider())
    assert [len(s.receivers) for s in signals._ALL] == [n + 1 for n in ours_before]
    assert [len(s.receivers) for s in celery_signals] == [n + 1 for n in before]
    otel.uninstrument()
    assert [len(s.receivers) for s in signals._ALL] == ours_before
    assert [len(s.receivers) for s in celery_signals] == before


def test_otel_instrument_twice_connects_once(telemetry: Telemetry, client: flask.testing.FlaskClient) -> None:
    otel.instrument()
    _post(client, "milk")
    assert len(telemetry.spans("handle OtelNote")) == 1


def test_otel_config_instruments() -> None:
    app = flask.Flask(__name__)
    app.config["COMMANDS_OTEL"] = True
    before = len(signals.handle_started.receivers)
    try:
        Commands(app)
        assert len(signals.handle_started.receivers) == before + 1
    finally:
        otel.uninstrument()
    assert len(signals.handle_started.receivers) == before


def test_otel_not_imported_without_it(fresh_python: t.Callable[..., str]) -> None:
    # A fresh interpreter: the suite itself has imported OpenTelemetry.
    output = fresh_python(
        """
        import sys
        import flask
        from flask_commands import Command, Commands, command_view, handler, signals

        class OtelNote(Command):
            title: str

        @handler(OtelNote)
        def add_note(cmd):
            return cmd.title

        app = flask.Flask(__name__)
        Commands(app)

        @app.route("/notes", methods=["POST"])
        @command_view(OtelNote, add_note)
        def new_note(result, cmd):
            return result, 201

        response = app.test_client().post("/notes", json={"title": "milk"})
        assert response.status_code == 201, response.data
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        receivers = [s.name for s in signals._ALL if s.receivers]
        print(repr((loaded, receivers)))
        """
    )
    assert output.strip() == "([], [])"


# Jobs, run by a Celery worker in a thread of this process on Celery's in-memory broker.


class OtelJob(Command):
    """The command of the jobs here."""

    title: str
    #: ``job_note`` fails this many runs before it succeeds.
    failures: int = 0


JOB_RUNS: dict[str, int] = {}


@handler(OtelJob, max_attempts=3, backoff=0.01)
def job_note(cmd: OtelJob) -> None:
    runs = JOB_RUNS[str(cmd.id)] = JOB_RUNS.get(str(cmd.id), 0) + 1
    if runs <= cmd.failures:
        raise RuntimeError(f"failure {runs}")
    if cmd.title == "taken":
        raise Conflict("A job with that title exists.", code="duplicate_title")


@handler(OtelNote)
def enqueue_note(cmd: OtelNote) -> str:
    job_note.enqueue(OtelJob(title=cmd.title))
    return cmd.title


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _wait_for(telemetry: Telemetry, name: str, count: int = 1) -> list[ReadableSpan]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = telemetry.spans(name)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {count} {name!r} spans within 20 s: {[s.name for s in telemetry.spans()]}")


def web_app(worker_app: flask.Flask) -> flask.Flask:
    """A new app whose ``/enqueue`` view enqueues a job for ``worker_app``'s worker."""
    app = make_app()

    @app.route("/enqueue", methods=["POST"])
    @command_view(OtelNote, enqueue_note)
    def enqueue(result: str, cmd: OtelNote) -> flask.typing.ResponseReturnValue:
        return result, 202

    app.extensions["celery"] = worker_app.extensions["celery"]
    return app


@pytest.fixture(scope="module")
def worker_app() -> t.Iterator[flask.Flask]:
    from celery.contrib.testing.worker import start_worker

    from flask_commands.celery import init_celery

    app = make_app()
    app.config["CELERY"] = {
        "broker_url": "memory://",
        "broker_transport_options": {"polling_interval": 0.02},
        "task_default_queue": "otel",
    }
    celery_app = init_celery(app)
    with start_worker(celery_app, perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20):
        yield app
    celery_app.set_default()


def test_otel_job_spans(telemetry: Telemetry, worker_app: flask.Flask) -> None:
    assert web_app(worker_app).test_client().post("/enqueue", json={"title": "milk"}).status_code == 202
    (handle_job,) = _wait_for(telemetry, "handle OtelJob")
    (process,) = _wait_for(telemetry, "process otel")
    send = telemetry.span("send otel")
    request_handle = telemetry.span("handle OtelNote")
    assert len({s.context.trace_id for s in (request_handle, send, process, handle_job)}) == 1
    assert send.kind is SpanKind.PRODUCER
    assert _parent(send) == request_handle.context.span_id
    assert process.kind is SpanKind.CONSUMER
    assert _parent(process) == send.context.span_id
    assert _parent(handle_job) == process.context.span_id
    command_id = handle_job.attributes["flask_commands.command.id"]  # type: ignore[index]
    assert dict(send.attributes or {}) == {
        "messaging.operation.type": "send",
        "messaging.destination.name": "otel",
        "messaging.message.id": command_id,
        "flask_commands.transport": "json",
        "flask_commands.command.name": "OtelJob",
        "flask_commands.command.id": command_id,
        "code.function.name": "test_otel.job_note",
        "flask_commands.attempt": 1,
    }
    assert dict(handle_job.attributes or {}) == {
        "code.function.name": "test_otel.job_note",
        "flask_commands.command.name": "OtelJob",
        "flask_commands.command.id": command_id,
        "flask_commands.transport": "job",
        "flask_commands.attempt": 1,
        "flask_commands.idempotency.result": "miss",
        "flask_commands.outcome": "ok",
    }
    assert dict(process.attributes or {}) == {
        "messaging.operation.type": "process",
        "messaging.destination.name": "otel",
        "messaging.message.id": command_id,
        **dict(handle_job.attributes or {}),
    }
    point = telemetry.point(
        "flask_commands.command.duration",
        **{
            "flask_commands.command.name": "OtelJob",
            "flask_commands.outcome": "ok",
            "flask_commands.transport": "job",
        },
    )
    assert point.count == 1


def test_otel_job_retried(telemetry: Telemetry, worker_app: flask.Flask) -> None:
    with worker_app.app_context():
        job_note.enqueue(OtelJob(title="milk", failures=1))
    first, second = _wait_for(telemetry, "process otel", 2)
    assert first.attributes["flask_commands.attempt"] == 1  # type: ignore[index]
    assert first.attributes["flask_commands.outcome"] == "error"  # type: ignore[index]
    assert first.attributes["error.type"] == "RuntimeError"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]  # once, though both the run and the retry saw it
    assert second.attributes["flask_commands.attempt"] == 2  # type: ignore[index]
    assert second.attributes["flask_commands.outcome"] == "ok"  # type: ignore[index]
    assert second.context.trace_id == first.context.trace_id
    retries = telemetry.point(
        "flask_commands.job.retries",
        **{"flask_commands.command.name": "OtelJob", "error.type": "RuntimeError"},
    )
    assert retries.value == 1


def test_otel_job_conflict(telemetry: Telemetry, worker_app: flask.Flask) -> None:
    with worker_app.app_context():
        job_note.enqueue(OtelJob(title="taken"))
    (process,) = _wait_for(telemetry, "process otel")
    assert process.attributes["flask_commands.outcome"] == "conflict"  # type: ignore[index]
    assert process.attributes["flask_commands.code"] == "duplicate_title"  # type: ignore[index]
    assert process.status.status_code is StatusCode.UNSET


def test_otel_job_replayed(telemetry: Telemetry, worker_app: flask.Flask) -> None:
    cmd = OtelJob(title="milk")
    with worker_app.app_context():
        job_note.enqueue(cmd)
        _wait_for(telemetry, "process otel")
        job_note.enqueue(cmd)
    _first, second = _wait_for(telemetry, "process otel", 2)
    assert second.attributes["flask_commands.outcome"] == "replayed"  # type: ignore[index]
    assert second.attributes["flask_commands.idempotency.result"] == "replay"  # type: ignore[index]
    replays = telemetry.point(
        "flask_commands.idempotency.replays",
        **{"flask_commands.command.name": "OtelJob", "flask_commands.transport": "job"},
    )
    assert replays.value == 1


def test_otel_job_mismatch(telemetry: Telemetry, worker_app: flask.Flask) -> None:
    cmd = OtelJob(title="milk")
    with worker_app.app_context():
        job_note.enqueue(cmd)
        _wait_for(telemetry, "process otel")
        job_note.enqueue(dataclasses.replace(cmd, title="tea"))
    _first, second = _wait_for(telemetry, "process otel", 2)
    assert second.attributes["flask_commands.outcome"] == "rejected"  # type: ignore[index]
    assert second.attributes["flask_commands.code"] == "idempotency_key_reused"  # type: ignore[index]
    assert second.attributes["flask_commands.idempotency.result"] == "mismatch"  # type: ignore[index]


def test_otel_job_poison(telemetry: Telemetry, worker_app: flask.Flask) -> None:
    celery_app = worker_app.extensions["celery"]
    celery_app.send_task("flask_commands.run_command", args=["not json"], queue="otel")
    (process,) = _wait_for(telemetry, "process otel")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["flask_commands.outcome"] == "invalid"  # type: ignore[index]
    assert process.attributes["error.type"] == "celery.exceptions.Reject"  # type: ignore[index]
    rejected = telemetry.point("flask_commands.job.rejected", **{"messaging.destination.name": "otel"})
    assert rejected.value == 1


def test_otel_job_undecodable_message_counted(telemetry: Telemetry) -> None:
    import types

    from celery.signals import task_rejected

    # What the worker's consumer sends for a message it cannot decode (Celery's on_invalid_task).
    message = types.SimpleNamespace(
        headers={"task": "flask_commands.run_command"}, delivery_info={"routing_key": "otel"}
    )
    task_rejected.send(sender=None, message=message, exc=ValueError("bad"))
    task_rejected.send(sender=None, message=types.SimpleNamespace(headers={"task": "other"}), exc=None)
    rejected = telemetry.point("flask_commands.job.rejected", **{"messaging.destination.name": "otel"})
    assert rejected.value == 1


def test_otel_job_applied_in_process_nests_in_the_current_span(
    telemetry: Telemetry, worker_app: flask.Flask
) -> None:
    cmd = OtelJob(title="milk")
    envelope = {
        "type": f"test_otel:{OtelJob.__qualname__}",
        "handler": "test_otel:job_note",
        "command": cmd.to_dict(),
    }
    task = worker_app.extensions["celery"].tasks["flask_commands.run_command"]
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("outer") as outer:
        task.apply(args=[envelope], task_id=str(cmd.id))
    process = telemetry.span("process otel")
    assert _parent(process) == outer.get_span_context().span_id
    assert _parent(telemetry.span("handle OtelJob")) == process.context.span_id


def test_otel_relayed_job_shares_the_request_trace(
    telemetry: Telemetry, worker_app: flask.Flask, tmp_path: pathlib.Path
) -> None:
    import sqlalchemy as sa
    import sqlalchemy.orm

    from flask_commands import outbox
    from flask_commands.celery import init_celery

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'outbox.sqlite'}")
    outbox.create_table(engine)
    session = sa.orm.scoped_session(sa.orm.sessionmaker(engine))

    @handler(OtelNote, transaction=session)
    def enqueue_in_transaction(cmd: OtelNote) -> str:
        job_note.enqueue(OtelJob(title=cmd.title))
        return cmd.title

    web = make_app()

    @web.route("/enqueue", methods=["POST"])
    @command_view(OtelNote, enqueue_in_transaction)
    def enqueue(result: str, cmd: OtelNote) -> flask.typing.ResponseReturnValue:
        return result, 202

    # The broker is down at commit: the job waits in the outbox for the relay.
    web.config["CELERY"] = {
        "broker_url": "redis://127.0.0.1:1/0",
        "broker_transport_options": {"max_retries": 0},
        "broker_connection_timeout": 1,
        "task_default_queue": "otel",
    }
    init_celery(web)
    try:
        assert web.test_client().post("/enqueue", json={"title": "milk"}).status_code == 202
    finally:
        worker_app.extensions["celery"].set_default()
    assert outbox.relay(engine, worker_app.extensions["celery"], grace=0) == 1
    (process,) = _wait_for(telemetry, "process otel")
    request_handle = telemetry.span("handle OtelNote")
    send = [s for s in telemetry.spans("send otel") if s.status.status_code is not StatusCode.ERROR]
    assert [_parent(s) for s in send] == [request_handle.context.span_id]
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == request_handle.context.trace_id
    assert _parent(process) == send[0].context.span_id
    session.remove()
    engine.dispose()


# With opentelemetry-instrumentation-flask and -celery: our spans nest under theirs, no duplicates.


@pytest.mark.parametrize("celery_first", [False, True], ids=["ours_first", "theirs_first"])
def test_otel_with_flask_and_celery_instrumentation(
    telemetry: Telemetry, worker_app: flask.Flask, celery_first: bool
) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    provider = telemetry.tracer_provider
    if celery_first:
        otel.uninstrument()
        CeleryInstrumentor().instrument(tracer_provider=provider)
        otel.instrument(tracer_provider=provider, meter_provider=telemetry.meter_provider)
    else:
        CeleryInstrumentor().instrument(tracer_provider=provider)
    web = web_app(worker_app)
    FlaskInstrumentor().instrument_app(web, tracer_provider=provider)
    try:
        assert web.test_client().post("/enqueue", json={"title": "milk"}).status_code == 202
        (handle_job,) = _wait_for(telemetry, "handle OtelJob")
        (consumer,) = _wait_for(telemetry, "run/flask_commands.run_command")
    finally:
        FlaskInstrumentor().uninstrument_app(web)
        CeleryInstrumentor().uninstrument()
    server = telemetry.span("POST /enqueue")
    handle_request = telemetry.span("handle OtelNote")
    producer = telemetry.span("apply_async/flask_commands.run_command")
    names = sorted(s.name for s in telemetry.spans())
    assert names == sorted(
        [
            "POST /enqueue",
            "handle OtelNote",
            "apply_async/flask_commands.run_command",
            "run/flask_commands.run_command",
            "handle OtelJob",
        ]
    )
    assert len({s.context.trace_id for s in telemetry.spans()}) == 1
    assert _parent(handle_request) == server.context.span_id
    assert _parent(producer) == handle_request.context.span_id
    assert _parent(consumer) == producer.context.span_id
    assert _parent(handle_job) == consumer.context.span_id
    command_id = handle_job.attributes["flask_commands.command.id"]  # type: ignore[index]
    assert producer.attributes["flask_commands.command.id"] == command_id  # type: ignore[index]
    assert producer.attributes["flask_commands.transport"] == "json"  # type: ignore[index]
    assert consumer.attributes["flask_commands.outcome"] == "ok"  # type: ignore[index]
    assert consumer.attributes["flask_commands.attempt"] == 1  # type: ignore[index]
    assert consumer.attributes["flask_commands.transport"] == "job"  # type: ignore[index]
    # Ours are added whichever task_prerun receiver ran first.
    assert consumer.attributes["messaging.operation.type"] == "process"  # type: ignore[index]
    assert consumer.attributes["messaging.destination.name"] == "otel"  # type: ignore[index]


# A real worker process on Redis: the job's spans join the request's trace.


def _redis_celery(broker: str, queue: str) -> dict[str, t.Any]:
    return {
        "broker_url": broker,
        "task_default_queue": queue,
        "broker_transport_options": {"global_keyprefix": f"{queue}:"},
        "worker_enable_remote_control": False,
    }


def _worker_app(broker: str, queue: str, spans: str) -> t.Any:
    """The worker's side (``celery -A test_otel:celery_app``): it writes each span as a JSON line."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    from flask_commands.celery import init_celery

    provider = TracerProvider()
    out = open(spans, "a", encoding="utf-8")  # noqa: SIM115 (open while the worker lives)
    formatter = lambda span: json.dumps(json.loads(span.to_json())) + "\n"  # noqa: E731
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=formatter)))
    otel.instrument(tracer_provider=provider)
    app = make_app()
    app.config["CELERY"] = _redis_celery(broker, queue)
    return init_celery(app)


if "COMMANDS_OTEL_WORKER_QUEUE" in os.environ:
    celery_app = _worker_app(
        os.environ["COMMANDS_OTEL_WORKER_BROKER"],
        os.environ["COMMANDS_OTEL_WORKER_QUEUE"],
        os.environ["COMMANDS_OTEL_WORKER_SPANS"],
    )


def test_otel_job_on_redis_worker_shares_the_request_trace(
    telemetry: Telemetry, tmp_path: pathlib.Path
) -> None:
    from conftest import require_service

    from flask_commands.celery import init_celery

    broker = require_service("redis")
    queue = f"otel-{uuid.uuid4().hex[:12]}"
    spans = tmp_path / "spans.jsonl"
    spans.touch()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        "COMMANDS_OTEL_WORKER_BROKER": broker,
        "COMMANDS_OTEL_WORKER_QUEUE": queue,
        "COMMANDS_OTEL_WORKER_SPANS": str(spans),
    }
    command = [sys.executable, "-m", "celery", "-A", "test_otel:celery_app", "worker", "--pool=solo"]
    command += [
        "-Q",
        queue,
        "-n",
        f"{queue}@%h",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    ]
    worker = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        web = make_app()

        @web.route("/enqueue", methods=["POST"])
        @command_view(OtelNote, enqueue_note)
        def enqueue(result: str, cmd: OtelNote) -> flask.typing.ResponseReturnValue:
            return result, 202

        web.config["CELERY"] = _redis_celery(broker, queue)
        init_celery(web)
        assert web.test_client().post("/enqueue", json={"title": "milk"}).status_code == 202
        request_trace = f"0x{telemetry.span('handle OtelNote').context.trace_id:032x}"
        deadline = time.monotonic() + 30
        found: dict[str, dict[str, t.Any]] = {}
        while time.monotonic() < deadline and "handle OtelJob" not in found:
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
            found = {s["name"]: s for s in map(json.loads, spans.read_text().splitlines())}
            time.sleep(0.1)
        assert sorted(found) == sorted([f"process {queue}", "handle OtelJob"]), found
        assert {s["context"]["trace_id"] for s in found.values()} == {request_trace}
        send = telemetry.span(f"send {queue}")
        assert found[f"process {queue}"]["parent_id"] == f"0x{send.context.span_id:016x}"
        assert found["handle OtelJob"]["attributes"]["flask_commands.outcome"] == "ok"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=30)


# The demo.


def test_otel_demo_metrics_only_when_asked(
    tmp_path: pathlib.Path, fresh_python: t.Callable[..., str]
) -> None:
    # A fresh interpreter: the demo sets the process's global providers.
    output = fresh_python(
        f"""
        import sys
        from demo_app import create_app

        config = {{
            "TESTING": True,
            "WTF_CSRF_ENABLED": False,
            "SQLALCHEMY_DATABASE_URI": "sqlite:///{tmp_path / "demo.sqlite"}",
            "CELERY": {{"broker_url": "memory://"}},
        }}
        plain = create_app(config).test_client()
        assert plain.post("/todos", json={{"title": "milk"}}).status_code == 201
        assert plain.get("/metrics").status_code == 404
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]

        observed = create_app({{**config, "COMMANDS_OTEL": True}}).test_client()
        assert observed.post("/todos", json={{"title": "tea"}}).status_code == 201
        metrics = observed.get("/metrics")
        assert metrics.status_code == 200
        print(metrics.get_data(as_text=True))
        """,
        timeout=120,
        cwd=pathlib.Path(__file__).parent.parent,
    )
    assert (
        'flask_commands_command_duration_seconds_count{flask_commands_command_name="AddTodo",'
        'flask_commands_outcome="ok",flask_commands_transport="json"'
    ) in output
