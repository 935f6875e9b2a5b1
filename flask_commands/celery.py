"""Background commands on Celery: ``init_celery(app)`` and the task that runs command envelopes.

A job is one message for the task ``flask_commands.run_command`` whose single argument is the
envelope ``{"type": "module:Command", "handler": "module:handler", "command": {...}}``, made by
:meth:`Handler.enqueue <flask_commands.Handler.enqueue>`. The worker resolves only handlers
registered with ``@handler``, never an import path, and runs the handler under the app's
idempotency store keyed by the command's ``id``, so a redelivered job runs it once.

The task ``flask_commands.relay_outbox`` publishes what the outbox still holds
(:mod:`flask_commands.outbox`); a Celery beat entry runs it periodically.

This is the only module of the package that imports Celery.
"""

from __future__ import annotations

import json
import logging
import os
import random
import typing as t

import celery
from celery.exceptions import Reject
from flask import Flask

from .command import Command
from .command import _registry as _commands
from .errors import Conflict
from .errors import KeyInProgress
from .errors import KeyReused
from .errors import Rejected
from .handler import _JOB_TASK
from .handler import Handler
from .handler import _registry as _handlers

_log = logging.getLogger("flask_commands")

#: The longest wait between two runs of a job, in seconds.
_MAX_DELAY = 600.0
# A job that found its key held waits for the lease to end, plus this margin, before it retries.
_LEASE_MARGIN = 0.1
_ENVELOPE_KEYS = ("type", "handler", "command")
_RELAY_TASK = "flask_commands.relay_outbox"
# Engines of the database URLs the relay task was given, made once per worker process.
_relay_engines: dict[str, t.Any] = {}


def init_celery(app: Flask) -> celery.Celery:
    """Make the Celery app of ``app``, following Flask's Celery guide, and register the job task.

    Reads ``app.config["CELERY"]``, a dict of Celery's lowercase settings (``broker_url``,
    ``task_default_queue``, ``broker_transport_options``, ...). Tasks run inside an app context
    of ``app``. The Celery app is stored as ``app.extensions["celery"]`` and made Celery's
    default, so :meth:`Handler.enqueue <flask_commands.Handler.enqueue>` finds it outside an app
    context too.

    Defaults: the queue ``"default"``, and without ``broker_url`` an embedded broker that needs
    no server: kombu's filesystem transport, one file per message in ``celery-broker/`` in the
    app's instance folder. It is for development on one machine only: workers poll it about once
    a second, and it is not crash-safe (a worker takes a message's file before running the job,
    so a worker killed mid-job loses it). Use Redis or RabbitMQ in production; with Redis, the
    ``visibility_timeout`` transport option must exceed the longest job plus its retry delay.

    :returns: the Celery app; a worker module exposes it (``celery -A module:celery_app worker``).
    """
    flask_app = app

    class FlaskTask(celery.Task):  # type: ignore[misc]
        def __call__(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
            with flask_app.app_context():
                return self.run(*args, **kwargs)

    settings = dict(app.config.setdefault("CELERY", {}))
    if not settings.get("broker_url"):
        # A hostname stops kombu from warning that none was given; the transport ignores it.
        settings["broker_url"] = "filesystem://localhost//"
        settings["broker_transport_options"] = {
            **_embedded_broker(app.instance_path),
            **settings.get("broker_transport_options", {}),
        }
    settings.setdefault("task_default_queue", "default")
    # Celery 5.3+ warns at worker start unless this is set; True is its current behaviour.
    settings.setdefault("broker_connection_retry_on_startup", True)

    celery_app = celery.Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(settings)
    celery_app.task(
        name=_JOB_TASK,
        bind=True,
        # Acknowledge only once the job ran, so a worker killed mid-job loses nothing.
        acks_late=True,
        reject_on_worker_lost=True,
        # Attempts are counted in the ``attempt`` keyword, so waiting for a held key costs none.
        max_retries=None,
        # A handler's result is an application object: never serialised into a result backend.
        ignore_result=True,
        serializer="json",
    )(_run_command)
    # The outbox sweep; a beat entry runs it periodically (docs/background.md).
    celery_app.task(name=_RELAY_TASK, ignore_result=True)(_relay_outbox)
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    trace_log = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, _OneLineRejects) for f in trace_log.filters):
        trace_log.addFilter(_OneLineRejects())
    return celery_app


class _OneLineRejects(logging.Filter):
    """Drop Celery's record of a rejected job, a traceback: ``_run_command`` logs one line with the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        return not (
            isinstance(data, dict) and data.get("name") == _JOB_TASK and data.get("description") == "rejected"
        )


def _embedded_broker(instance_path: str) -> dict[str, str]:
    """Transport options of kombu's filesystem broker in ``instance_path``, its folders made."""
    root = os.path.join(instance_path, "celery-broker")
    folders = {"data_folder_in": "queue", "data_folder_out": "queue", "control_folder": "control"}
    options = {key: os.path.join(root, name) for key, name in folders.items()}
    for folder in options.values():
        os.makedirs(folder, exist_ok=True)
    return options


class _Poison(Exception):
    """The envelope cannot name a job: reject it without requeue."""


def _run_command(task: celery.Task, envelope: t.Any, attempt: int = 1) -> None:
    """Run the command of ``envelope`` under its handler's idempotency; retry faults with backoff."""
    try:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise _Poison(f"the attempt number {attempt!r} is not a positive integer.")
        handler, cmd = _decode(envelope)
    except _Poison as e:
        reason = str(e)
        _log.error("Rejected job %s without requeue: %s", task.request.id, reason)
        raise Reject(reason, requeue=False) from None
    try:
        handler.handle(cmd)
    except KeyInProgress as e:
        # Another run holds the key (or held it and died): come back when its lease ends,
        # without counting this as an attempt.
        countdown = min(max(e.retry_after, 0.0) + _LEASE_MARGIN, _MAX_DELAY)
        raise task.retry(args=[envelope], kwargs={"attempt": attempt}, countdown=countdown) from None
    except KeyReused as e:
        _log.warning("Job %s for %s refused: %s", cmd.id, handler.name, e.message)
    except (Conflict, Rejected) as e:
        _log.info("Job %s for %s ended in %s %r.", cmd.id, handler.name, type(e).__name__, e.code)
    except Exception as e:
        if attempt >= handler.max_attempts:
            _log.error("Job %s for %s failed after %d attempts: %r", cmd.id, handler.name, attempt, e)
            raise
        # Full jitter: run n+1 waits a random time in [0, min(cap, base * 2**(n-1))].
        delay = random.uniform(0.0, min(_MAX_DELAY, handler.backoff * 2 ** (attempt - 1)))
        raise task.retry(args=[envelope], kwargs={"attempt": attempt + 1}, countdown=delay, exc=e) from e


def _decode(envelope: t.Any) -> tuple[Handler[t.Any, t.Any], Command]:
    """Return the registered handler and the command an envelope names, or raise ``_Poison``."""
    if isinstance(envelope, str | bytes):
        try:
            envelope = json.loads(envelope)
        except ValueError as e:
            raise _Poison(f"the envelope does not decode as JSON ({e}).") from None
    if not isinstance(envelope, dict):
        raise _Poison(f"the envelope is a {type(envelope).__name__}, not a JSON object.")
    missing = [key for key in _ENVELOPE_KEYS if key not in envelope]
    if missing:
        raise _Poison(f"the envelope has no {missing[0]!r}.")
    name, kind, data = envelope["handler"], envelope["type"], envelope["command"]
    handler = _handlers.get(name) if isinstance(name, str) else None
    if handler is None:
        raise _Poison(f"no handler is registered as {name!r}.")
    cls = _commands.get(kind) if isinstance(kind, str) else None
    if cls is None or not issubclass(cls, handler.command):
        raise _Poison(f"handler {name!r} does not take the command type {kind!r}.")
    if not isinstance(data, dict):
        raise _Poison(f"the command is a {type(data).__name__}, not a JSON object.")
    try:
        return handler, cls.from_dict(data)
    except Exception as e:
        # from_dict restores trusted data; whatever it raises, the message will never run.
        raise _Poison(f"the {kind} command does not restore: {e}") from None


def _relay_outbox(databases: list[str] | None = None, grace: float | None = None) -> int:
    """Publish the jobs left in the outbox of ``databases`` (URLs), else the app's Flask-SQLAlchemy ones.

    ``grace``: leave rows younger than this many seconds to the process that committed them
    (``flask_commands.outbox.GRACE`` by default).
    """
    import sqlalchemy as sa
    from flask import current_app

    from .outbox import GRACE
    from .outbox import app_engines
    from .outbox import relay

    if databases:
        engines = [
            _relay_engines.get(url) or _relay_engines.setdefault(url, sa.create_engine(url))
            for url in databases
        ]
    else:
        engines = app_engines(current_app._get_current_object())  # type: ignore[attr-defined]
    celery_app = current_app.extensions["celery"]
    published = 0
    for engine in engines:
        try:
            published += relay(engine, celery_app, grace=GRACE if grace is None else grace)
        except RuntimeError as e:
            # The broker refused a row: the next sweep tries again.
            published += getattr(e, "published", 0)
    if published:
        _log.info("Published %d job(s) from the outbox.", published)
    return published
