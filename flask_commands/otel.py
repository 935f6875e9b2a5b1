"""OpenTelemetry traces and metrics from the package's signals: :func:`instrument` and :func:`uninstrument`.

Needs the ``otel`` extra (``opentelemetry-api``); an SDK and exporters are the application's
choice. Nothing here is imported unless the application imports it (or sets ``COMMANDS_OTEL``),
so without it no OpenTelemetry module is loaded and the signals keep no receivers.

It subscribes to the package's blinker signals and to Celery's signals (when Celery is installed);
it never wraps or patches a function. Field values and idempotency keys never become attributes:
field values may be personal data, and a key replays a stored response to whoever presents it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import sys
import threading
import time
import traceback
import typing as t
from contextvars import ContextVar
from contextvars import Token

import click
import flask
from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry import propagate
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import Status
from opentelemetry.trace import StatusCode

from . import cli
from . import signals
from .errors import Conflict

if t.TYPE_CHECKING:
    from blinker import NamedSignal
    from opentelemetry.util.types import AttributeValue

    from .command import Command
    from .handler import Handler

#: What became of a command: the value of ``flask_commands.outcome``.
Outcome: t.TypeAlias = t.Literal["ok", "invalid", "conflict", "rejected", "replayed", "error"]
#: How the command arrived: the value of ``flask_commands.transport``.
Transport: t.TypeAlias = t.Literal["html", "htmx", "json", "cli", "job"]
#: What the idempotency store said: the value of ``flask_commands.idempotency.result``.
IdempotencyResult: t.TypeAlias = t.Literal["miss", "replay", "in_progress", "mismatch"]

CODE_FUNCTION_NAME = "code.function.name"
COMMAND_NAME = "flask_commands.command.name"
COMMAND_ID = "flask_commands.command.id"
OUTCOME = "flask_commands.outcome"
TRANSPORT = "flask_commands.transport"
IDEMPOTENCY_RESULT = "flask_commands.idempotency.result"
ATTEMPT = "flask_commands.attempt"
CODE = "flask_commands.code"
ERROR_TYPE = "error.type"

#: The boundaries of ``flask_commands.command.duration``: those of ``http.server.request.duration``.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# SPEC's name of the Celery task that runs command envelopes (flask_commands.celery registers it).
_JOB_TASK = "flask_commands.run_command"
_SCOPE = "flask_commands"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_ENV_ID_SENT = "flask_commands.otel.id_sent"  # in the WSGI environ: per request
_CELERY_INSTRUMENTATION = "opentelemetry.instrumentation.celery"
# The codes flask_commands gives the refusals it raises itself, never the handler.
_IN_PROGRESS = "in_progress"
_KEY_REUSED = "idempotency_key_reused"
_REJECT = "celery.exceptions.Reject"
# The attributes a handler's span gains when it returns.
_OK: t.Mapping[str, AttributeValue] = {OUTCOME: "ok"}
# The most kinds of duration points kept for reuse (a fault's error.type is open-ended).
_MAX_POINTS = 1024
# What a refusal by the idempotency store (the key_refused signal) says, by its reason.
_REFUSED_IN_PROGRESS: dict[str, AttributeValue] = {
    OUTCOME: "conflict",
    CODE: _IN_PROGRESS,
    IDEMPOTENCY_RESULT: "in_progress",
}
_REFUSED_MISMATCH: dict[str, AttributeValue] = {
    OUTCOME: "rejected",
    CODE: _KEY_REUSED,
    IDEMPOTENCY_RESULT: "mismatch",
}


@dataclasses.dataclass(slots=True)
class _Run:
    """A handler run in progress: its span, the context it started in, and the token that made the
    span current."""

    command: Command
    span: trace.Span
    parent: otel_context.Context
    token: Token[otel_context.Context]
    outermost: bool
    transport: Transport


@dataclasses.dataclass(slots=True)
class _Job:
    """A job the worker is running: its consumer span (ours, or opentelemetry-instrumentation-celery's)."""

    task: t.Any
    task_id: str
    queue: str
    attempt: int
    command_name: str | None
    # The consumer's attributes (messaging.*, transport, attempt), known at task_prerun.
    consumer: dict[str, AttributeValue] = dataclasses.field(default_factory=dict)
    span: trace.Span | None = None  # ours; None when the Celery instrumentation made the span
    token: Token[otel_context.Context] | None = None
    faulted: bool = False  # the fault is already recorded on the job's span


_runs: ContextVar[tuple[_Run, ...]] = ContextVar("_commands_otel_runs", default=())
_job: ContextVar[_Job | None] = ContextVar("_commands_otel_job", default=None)


class _RequestGetter(Getter[t.Any]):
    """Reads the propagation headers of a job from Celery's task request."""

    def get(self, carrier: t.Any, key: str) -> list[str] | None:
        # A worker copies message headers onto the request; an eager apply() nests them.
        value = getattr(carrier, key, None)
        if value is None:
            headers = getattr(carrier, "headers", None)
            value = headers.get(key) if isinstance(headers, dict) else None
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: t.Any) -> list[str]:
        return []


_getter = _RequestGetter()


class _Instrumentation:
    """The tracer, the instruments and the receivers of one :func:`instrument` call."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
    ) -> None:
        version = _version()
        self.tracer = trace.get_tracer(_SCOPE, version, tracer_provider, schema_url=_SCHEMA_URL)
        meter = metrics.get_meter(_SCOPE, version, meter_provider, schema_url=_SCHEMA_URL)
        self.duration = meter.create_histogram(
            "flask_commands.command.duration",
            unit="s",
            description="How long commands took: the handler's run, or the build for invalid input.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.invalid = meter.create_counter(
            "flask_commands.build.invalid",
            unit="{command}",
            description="Inputs that did not build a command.",
        )
        self.replays = meter.create_counter(
            "flask_commands.idempotency.replays",
            unit="{command}",
            description="Stored outcomes replayed instead of running the handler again.",
        )
        self.retries = meter.create_counter(
            "flask_commands.job.retries",
            unit="{retry}",
            description="Jobs sent back to the queue to run again.",
        )
        self.rejected = meter.create_counter(
            "flask_commands.job.rejected",
            unit="{job}",
            description="Jobs rejected without requeue: their message names no runnable command.",
        )
        self._publishing = threading.local()
        self._blinker: list[tuple[NamedSignal, t.Callable[..., None]]] = [
            (signals.build_started, self._build_started),
            (signals.build_finished, self._build_finished),
            (signals.handle_started, self._handle_started),
            (signals.handle_finished, self._handle_finished),
            (signals.handle_failed, self._handle_failed),
            (signals.replayed, self._replayed),
            (signals.key_refused, self._key_refused),
        ]
        self._celery: list[tuple[t.Any, t.Callable[..., None]]] = []
        # The duration histogram's attributes, by (command class, outcome, transport, error.type).
        self._points: dict[tuple[t.Any, ...], dict[str, AttributeValue]] = {}

    def connect(self) -> None:
        for signal, receiver in self._blinker:
            signal.connect(receiver, weak=False)
        # Celery is optional: its signals are connected only where it is installed.
        if "celery" in sys.modules or importlib.util.find_spec("celery") is not None:
            from celery import signals as celery_signals

            self._celery = [
                (celery_signals.before_task_publish, self._before_publish),
                (celery_signals.after_task_publish, self._after_publish),
                (celery_signals.task_prerun, self._prerun),
                (celery_signals.task_retry, self._retry),
                (celery_signals.task_postrun, self._postrun),
                (celery_signals.task_rejected, self._task_rejected),
            ]
            for signal, receiver in self._celery:
                signal.connect(receiver, weak=False)

    def disconnect(self) -> None:
        for signal, receiver in self._blinker:
            signal.disconnect(receiver)
        for signal, receiver in self._celery:
            signal.disconnect(receiver)
        self._celery = []

    # The package's signals.

    def _build_started(self, sender: type[Command], *, data: t.Any = None, **kwargs: t.Any) -> None:
        # The view keys a submission by the command's id when the client sent one: remember it.
        if flask.has_request_context():
            try:
                sent = bool(data.get("id"))
            except Exception:
                sent = False
            flask.request.environ[_ENV_ID_SENT] = sent

    def _build_finished(
        self, sender: type[Command], *, errors: t.Any = None, duration: float = 0.0, **kwargs: t.Any
    ) -> None:
        if errors is None:
            return
        name = sender.__name__
        transport = _transport()
        start = time.time_ns() - int(duration * 1e9)
        attributes: dict[str, AttributeValue] = {COMMAND_NAME: name, OUTCOME: "invalid", TRANSPORT: transport}
        span = self.tracer.start_span(
            _span_name(sender), kind=SpanKind.INTERNAL, attributes=attributes, start_time=start
        )
        span.end()
        self.invalid.add(1, {COMMAND_NAME: name, TRANSPORT: transport})
        self.duration.record(duration, attributes)

    def _handle_started(self, sender: Handler[t.Any, t.Any], *, command: Command, **kwargs: t.Any) -> None:
        # This and _finish run on every command: they make the fewest SDK calls a span and a point
        # need, and look each context up once (the SDK would look the current one up 3 times).
        job = _job.get()
        stack = _runs.get()
        outermost = not stack
        cls = type(command)
        if job is not None:
            transport: Transport = "job"
        elif flask.has_request_context():
            # The request's environ is read once: each read of flask.request costs a context lookup.
            environ = flask.request.environ
            transport = _http(environ)
            keyed = outermost and _keyed_request(environ)
        else:
            transport = "cli"
            keyed = outermost and _keyed_cli_run()
        attributes: dict[str, AttributeValue] = {
            CODE_FUNCTION_NAME: _function_name(sender),
            COMMAND_NAME: cls.__name__,
            COMMAND_ID: str(command.id),
            TRANSPORT: transport,
        }
        if job is not None:
            if outermost:
                attributes[ATTEMPT] = job.attempt
                attributes[IDEMPOTENCY_RESULT] = "miss"  # the worker always runs under the store
                self._annotate_job(job, attributes)
        elif keyed:
            attributes[IDEMPOTENCY_RESULT] = "miss"
        parent = otel_context.get_current()
        span = self.tracer.start_span(_span_name(cls), parent, SpanKind.INTERNAL, attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        _runs.set((*stack, _Run(command, span, parent, token, outermost, transport)))

    def _handle_finished(
        self,
        sender: Handler[t.Any, t.Any],
        *,
        command: Command,
        duration: float = 0.0,
        **kwargs: t.Any,
    ) -> None:
        refusal = kwargs.get("conflict") or kwargs.get("rejected")
        if refusal is None:
            self._finish(command, duration, _OK, None)
            return
        finished: dict[str, AttributeValue] = {
            OUTCOME: "conflict" if isinstance(refusal, Conflict) else "rejected"
        }
        code = getattr(refusal, "code", None)
        if isinstance(code, str):
            finished[CODE] = code
        self._finish(command, duration, finished, None)

    def _handle_failed(
        self,
        sender: Handler[t.Any, t.Any],
        *,
        command: Command,
        exception: BaseException,
        duration: float = 0.0,
        **kwargs: t.Any,
    ) -> None:
        self._finish(command, duration, {OUTCOME: "error", ERROR_TYPE: _error_type(exception)}, exception)

    def _finish(
        self,
        command: Command,
        duration: float,
        finished: t.Mapping[str, AttributeValue],
        exception: BaseException | None,
    ) -> None:
        run = _pop(command)
        if run is None:
            return  # instrument() was called while the handler ran
        span = run.span
        span.set_attributes(finished)
        if exception is not None:
            _record_fault(span, exception)
        otel_context.detach(run.token)
        span.end()
        # One attributes dict per kind of point, reused: the SDK copies it.
        outcome = finished[OUTCOME]
        error_type = finished.get(ERROR_TYPE)
        key = (type(command), outcome, run.transport, error_type)
        point = self._points.get(key)
        if point is None:
            point = {COMMAND_NAME: type(command).__name__, OUTCOME: outcome, TRANSPORT: run.transport}
            if error_type is not None:
                point[ERROR_TYPE] = error_type
            if len(self._points) < _MAX_POINTS:
                self._points[key] = point
        self.duration.record(duration, point, run.parent)  # the current context again
        if run.transport == "job" and run.outermost:
            job = _job.get()
            if job is not None:
                self._annotate_job(job, finished, exception)

    def _replayed(self, sender: Handler[t.Any, t.Any], *, command: Command | None, **kwargs: t.Any) -> None:
        # Never the key (kwargs["key"]): it is a bearer token for the stored response. Over HTTP a
        # replay comes before the command is built (command is None): the handler names its type.
        job = _job.get()
        cls: type[Command] = type(command) if command is not None else sender.command
        name = cls.__name__
        transport = _transport(job)
        attributes: dict[str, AttributeValue] = {
            CODE_FUNCTION_NAME: _function_name(sender),
            COMMAND_NAME: name,
            TRANSPORT: transport,
            OUTCOME: "replayed",
            IDEMPOTENCY_RESULT: "replay",
        }
        if command is not None:
            attributes[COMMAND_ID] = str(command.id)
        if job is not None:
            attributes[ATTEMPT] = job.attempt
            self._annotate_job(job, attributes)
        self.tracer.start_span(_span_name(cls), kind=SpanKind.INTERNAL, attributes=attributes).end()
        self.replays.add(1, {COMMAND_NAME: name, TRANSPORT: transport})

    def _key_refused(
        self, sender: Handler[t.Any, t.Any], *, command: Command | None, reason: str, **kwargs: t.Any
    ) -> None:
        # A span, as for a replay, and no metric point: the refusal is one request's answer from the
        # protocol (the client's retry, or its bug), not a command's outcome; the duration histogram
        # and its conflict rate keep to handlers' runs, and HTTP metrics count the 409s and 422s.
        job = _job.get()
        cls: type[Command] = type(command) if command is not None else sender.command
        transport = _transport(job)
        attributes: dict[str, AttributeValue] = {
            CODE_FUNCTION_NAME: _function_name(sender),
            COMMAND_NAME: cls.__name__,
            TRANSPORT: transport,
            **(_REFUSED_IN_PROGRESS if reason == _IN_PROGRESS else _REFUSED_MISMATCH),
        }
        if command is not None:
            attributes[COMMAND_ID] = str(command.id)
        if job is not None:
            attributes[ATTEMPT] = job.attempt
            self._annotate_job(job, attributes)
        self.tracer.start_span(_span_name(cls), kind=SpanKind.INTERNAL, attributes=attributes).end()

    # Celery's signals: the producer side.

    def _before_publish(
        self,
        sender: t.Any = None,
        body: t.Any = None,
        routing_key: str | None = None,
        headers: t.Any = None,
        **kwargs: t.Any,
    ) -> None:
        if sender != _JOB_TASK or not isinstance(headers, dict):
            return
        task_id = str(headers.get("id", ""))
        queue = routing_key or "default"
        attributes: dict[str, AttributeValue] = {
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "messaging.message.id": task_id,
            TRANSPORT: _transport(),
            **_envelope_attributes(body),
        }
        publishing = self._publishing
        stale = getattr(publishing, "span", None)
        if stale is not None:
            # The last publish in this thread raised between the two signals (a broker down).
            stale.set_status(Status(StatusCode.ERROR, "The message was not published."))
            stale.end()
        publishing.span, publishing.attributes = None, attributes
        if _celery_instrumented():
            # opentelemetry-instrumentation-celery makes the PRODUCER span and injects its context;
            # whichever receiver ran first, one of the two publish signals finds its span open.
            _annotate(_their_span(sender, task_id, publish=True), attributes)
            return
        # A job from the outbox carries the trace context captured when it was enqueued: sent by a
        # relay, long after its request, it still belongs to that trace.
        parent: otel_context.Context | None = propagate.extract(headers)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            parent = None
        span = self.tracer.start_span(f"send {queue}", parent, kind=SpanKind.PRODUCER, attributes=attributes)
        propagate.inject(headers, context=trace.set_span_in_context(span, parent))
        publishing.span = span

    def _after_publish(self, sender: t.Any = None, headers: t.Any = None, **kwargs: t.Any) -> None:
        if sender != _JOB_TASK:
            return
        publishing = self._publishing
        span, attributes = getattr(publishing, "span", None), getattr(publishing, "attributes", None)
        publishing.span = publishing.attributes = None
        if span is not None:
            span.end()
        elif attributes is not None and isinstance(headers, dict):
            _annotate(_their_span(sender, str(headers.get("id", "")), publish=True), attributes)

    # Celery's signals: the consumer side.

    def _prerun(
        self, sender: t.Any = None, task_id: t.Any = None, task: t.Any = None, **kwargs: t.Any
    ) -> None:
        if getattr(task, "name", None) != _JOB_TASK:
            return
        request = task.request
        delivery = getattr(request, "delivery_info", None) or {}
        queue = str(delivery.get("routing_key") or task.app.conf.task_default_queue)
        task_kwargs = kwargs.get("kwargs") or {}
        attempt = task_kwargs.get("attempt", 1) if isinstance(task_kwargs, dict) else 1
        attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 1
        args = kwargs.get("args") or ()
        job = _Job(task, str(task_id), queue, attempt, _envelope_command(args[0] if args else None))
        attributes: dict[str, AttributeValue] = {
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": job.task_id,
            TRANSPORT: "job",
            ATTEMPT: attempt,
        }
        job.consumer = attributes
        if _celery_instrumented():
            # Its span exists only if its task_prerun receiver ran before ours; else the next
            # annotation of the job (its handler's start, or its end) adds these.
            _annotate(_their_span(task, job.task_id, publish=False), attributes)
        else:
            parent: otel_context.Context | None = propagate.extract(request, getter=_getter)
            if not trace.get_current_span(parent).get_span_context().is_valid:
                parent = None  # no context came with the job (an eager run): nest in the current one
            span = self.tracer.start_span(
                f"process {queue}", parent, kind=SpanKind.CONSUMER, attributes=attributes
            )
            job.span = span
            job.token = otel_context.attach(trace.set_span_in_context(span, parent))
        _job.set(job)

    def _retry(self, sender: t.Any = None, reason: t.Any = None, **kwargs: t.Any) -> None:
        job = _job.get()
        if job is None or getattr(sender, "name", None) != _JOB_TASK:
            return
        exc = getattr(reason, "exc", None)
        point: dict[str, AttributeValue] = {COMMAND_NAME: job.command_name or ""}
        if exc is None:
            # Retried without an exception: another run held the key (flask_commands.celery); the
            # key_refused signal has annotated the job's span.
            point[IDEMPOTENCY_RESULT] = "in_progress"
        else:
            point[ERROR_TYPE] = _error_type(exc)
            self._annotate_job(job, {OUTCOME: "error", ERROR_TYPE: point[ERROR_TYPE]}, exc)
        self.retries.add(1, point)

    def _postrun(
        self, sender: t.Any = None, task: t.Any = None, state: t.Any = None, **kwargs: t.Any
    ) -> None:
        job = _job.get()
        if job is None or getattr(task, "name", None) != _JOB_TASK:
            return
        if state == "REJECTED":
            self.rejected.add(1, {"messaging.destination.name": job.queue})
            self._annotate_job(job, {OUTCOME: "invalid", ERROR_TYPE: _REJECT})
            span = self._job_span(job)
            if span is not None and span.is_recording():
                span.set_status(Status(StatusCode.ERROR, "The job was rejected without requeue."))
        if job.span is not None:
            if job.token is not None:
                otel_context.detach(job.token)
            job.span.end()
        _job.set(None)

    def _task_rejected(self, sender: t.Any = None, message: t.Any = None, **kwargs: t.Any) -> None:
        # A message the worker could not even turn into a task run (it does not decode).
        headers = getattr(message, "headers", None)
        if isinstance(headers, dict) and headers.get("task") == _JOB_TASK:
            delivery = getattr(message, "delivery_info", None) or {}
            self.rejected.add(1, {"messaging.destination.name": str(delivery.get("routing_key") or "")})

    def _job_span(self, job: _Job) -> trace.Span | None:
        if job.span is not None:
            return job.span
        return _their_span(job.task, job.task_id, publish=False)

    def _annotate_job(
        self, job: _Job, attributes: t.Mapping[str, AttributeValue], exception: BaseException | None = None
    ) -> None:
        span = self._job_span(job)
        if span is None or not span.is_recording():
            return
        span.set_attributes({**job.consumer, **attributes})
        if exception is not None and not job.faulted:
            job.faulted = True
            _record_fault(span, exception)


_active: _Instrumentation | None = None
_lock = threading.Lock()


def instrument(
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Turn the package's signals (and Celery's, for its jobs) into OpenTelemetry spans and metrics.

    Calling it again while instrumented does nothing; call :func:`uninstrument` first to change
    the providers.

    :param tracer_provider: the global tracer provider by default.
    :param meter_provider: the global meter provider by default.
    """
    global _active
    with _lock:
        if _active is not None:
            return
        instrumentation = _Instrumentation(tracer_provider, meter_provider)
        instrumentation.connect()
        _active = instrumentation


def uninstrument() -> None:
    """Disconnect every receiver :func:`instrument` connected; do nothing when not instrumented."""
    global _active
    with _lock:
        if _active is not None:
            _active.disconnect()
            _active = None


def _version() -> str:
    try:
        return importlib.metadata.version("flask-command-forms")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _transport(job: _Job | None = None) -> Transport:
    """How the current command arrived: a job, an HTTP request (by its body and htmx), else the CLI."""
    if job is not None or _job.get() is not None:
        return "job"
    if not flask.has_request_context():
        return "cli"
    return _http(flask.request.environ)


def _http(environ: dict[str, t.Any]) -> Transport:
    """How a request's command arrived: a form post (htmx or not), else JSON."""
    # The WSGI environ rather than request.mimetype and headers: this runs on every command.
    if _is_form(environ.get("CONTENT_TYPE", "")):
        return "htmx" if environ.get("HTTP_HX_REQUEST") == "true" else "html"
    return "json"


@functools.lru_cache(maxsize=64)
def _is_form(content_type: str) -> bool:
    """Whether a ``Content-Type`` header is a form post's (a client sends the same few)."""
    return content_type.partition(";")[0].strip().lower() in _FORM_TYPES


def _keyed_request(environ: dict[str, t.Any]) -> bool:
    """Whether the view runs this request's handler under a key: the header's, or the sent ``id``."""
    return "HTTP_IDEMPOTENCY_KEY" in environ or bool(environ.get(_ENV_ID_SENT))


def _keyed_cli_run() -> bool:
    """Whether this is ``flask commands run``, which always handles its command under a key."""
    context = click.get_current_context(silent=True)
    return context is not None and context.command is cli.run


@functools.cache
def _function_name(handler: Handler[t.Any, t.Any]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


@functools.cache
def _span_name(cls: type[Command]) -> str:
    return f"handle {cls.__name__}"


def _error_type(exception: BaseException) -> str:
    """The exception's fully qualified class name (a builtin's bare name), per the conventions."""
    cls = type(exception)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _record_fault(span: trace.Span, exception: BaseException) -> None:
    """Mark ``span`` failed, recording the exception's type and frames but never its message.

    A fault's message may quote field values (a database error prints the statement's parameters).
    """
    error_type = _error_type(exception)
    span.set_status(Status(StatusCode.ERROR, error_type))
    frames = "".join(traceback.format_tb(exception.__traceback__))
    span.add_event("exception", {"exception.type": error_type, "exception.stacktrace": frames})


def _pop(command: Command) -> _Run | None:
    """Take the run of ``command`` off the stack, ending runs left open above it (a BaseException)."""
    stack = _runs.get()
    if stack and stack[-1].command is command:  # the run on top: the usual case
        _runs.set(stack[:-1])
        return stack[-1]
    for index in range(len(stack) - 1, -1, -1):
        if stack[index].command is command:
            for orphan in reversed(stack[index + 1 :]):
                otel_context.detach(orphan.token)
                orphan.span.set_status(Status(StatusCode.ERROR, "The handler did not return."))
                orphan.span.end()
            _runs.set(stack[:index])
            return stack[index]
    return None


def _annotate(span: trace.Span | None, attributes: t.Mapping[str, AttributeValue]) -> None:
    if span is not None and span.is_recording():
        span.set_attributes(attributes)


def _celery_instrumented() -> bool:
    """Whether opentelemetry-instrumentation-celery is on (it makes the job's spans, we annotate them)."""
    module = sys.modules.get(_CELERY_INSTRUMENTATION)
    instrumentor = getattr(getattr(module, "CeleryInstrumentor", None), "_instance", None)
    return bool(getattr(instrumentor, "is_instrumented_by_opentelemetry", False))


def _their_span(task: t.Any, task_id: str, *, publish: bool) -> trace.Span | None:
    """The span opentelemetry-instrumentation-celery keeps for the job ``task_id``, if open."""
    utils = sys.modules.get(f"{_CELERY_INSTRUMENTATION}.utils")
    if utils is None:
        return None
    if isinstance(task, str):
        task = utils.retrieve_task_from_sender({"sender": task})
    found = utils.retrieve_context(task, task_id, is_publish=publish)
    return t.cast("trace.Span", found[0]) if found else None


def _envelope_attributes(body: t.Any) -> dict[str, AttributeValue]:
    """The command's name and id, the handler and the attempt, from a job message's body."""
    try:
        args, kwargs = body[0], body[1]
        envelope = args[0]
        attributes: dict[str, AttributeValue] = {}
        name = _envelope_command(envelope)
        if name is not None:
            attributes[COMMAND_NAME] = name
        command_id = envelope["command"].get("id")
        if isinstance(command_id, str):
            attributes[COMMAND_ID] = command_id
        handler_name = envelope.get("handler")
        if isinstance(handler_name, str):
            attributes[CODE_FUNCTION_NAME] = handler_name.replace(":", ".")
        attempt = kwargs.get("attempt", 1) if isinstance(kwargs, dict) else 1
        attributes[ATTEMPT] = attempt if isinstance(attempt, int) else 1
        return attributes
    except Exception:
        return {}


def _envelope_command(envelope: t.Any) -> str | None:
    """The class name of the command an envelope names (``"app.commands:AddTodo"`` gives ``AddTodo``)."""
    kind = envelope.get("type") if isinstance(envelope, dict) else None
    if not isinstance(kind, str) or ":" not in kind:
        return None
    return kind.rpartition(":")[2].rpartition(".")[2] or None
