"""The Celery worker of the demo: ``celery -A demo_app.worker worker``.

The Flask app is named ``flask_app`` because ``celery -A module`` looks for an attribute named
``app`` (or ``celery``) first; ``celery_app`` is the Celery app ``init_celery`` made.

Jobs enqueued inside a handler leave through the outbox right after the handler commits. The
beat entry below sweeps what a down broker or a crash left there every 10 seconds; run it with
``celery -A demo_app.worker worker -B`` (or a separate ``celery -A demo_app.worker beat``).
"""

from __future__ import annotations

import celery

from . import create_app

flask_app = create_app()
celery_app: celery.Celery = flask_app.extensions["celery"]
celery_app.conf.beat_schedule = {
    **(celery_app.conf.beat_schedule or {}),
    "commands-relay-outbox": {"task": "flask_commands.relay_outbox", "schedule": 10.0},
}
