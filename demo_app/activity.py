"""The activity log: every change a handler made, recorded from the ``handle_finished`` signal."""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import current_app

from flask_commands import signals

from .handlers import Changes
from .models import Activity
from .models import db
from .models import utcnow

_EXTENSION_KEY = "demo_activity"


def init_app(app: Flask) -> None:
    """Record the activity of ``app``'s handlers in its database."""
    app.extensions[_EXTENSION_KEY] = True
    # One module-level receiver for every app (connecting it again is a no-op); it records only
    # for apps that asked for it, in the current app's database.
    signals.handle_finished.connect(record)


def record(sender: t.Any, *, command: t.Any, result: t.Any = None, **kwargs: t.Any) -> None:
    """Write one :class:`Activity` row per change of a handler's :class:`Changes` result.

    The handler has committed by now, so this is a transaction of its own: a failure here is
    logged by Flask-Commands and never undoes the change.
    """
    if not isinstance(result, Changes) or not result.changes:
        return
    if not current_app or _EXTENSION_KEY not in current_app.extensions:
        return
    actor = str(getattr(command, "actor", "system"))
    now = utcnow()
    try:
        for change in result.changes:
            db.session.add(
                Activity(
                    kind=change.kind,
                    todo_id=change.todo_id,
                    title=change.title,
                    detail=change.detail,
                    actor=actor,
                    at=now,
                    command_id=str(command.id),
                )
            )
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
