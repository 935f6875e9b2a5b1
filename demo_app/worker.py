"""The Celery worker of the demo: ``celery -A demo_app.worker worker``.

The Flask app is named ``flask_app`` because ``celery -A module`` looks for an attribute named
``app`` (or ``celery``) first; ``celery_app`` is the Celery app ``init_celery`` made.
"""

from __future__ import annotations

import celery

from . import create_app

flask_app = create_app()
celery_app: celery.Celery = flask_app.extensions["celery"]
