"""The demo's tables: todos, the activity log, and background jobs."""

from __future__ import annotations

import datetime
import typing as t

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

TITLE_MAX = 200


def utcnow() -> datetime.datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.UTC)


class UTCDateTime(sa.TypeDecorator[datetime.datetime]):
    """Aware UTC datetimes on every database (SQLite returns naive ones from ``DateTime``)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime.datetime | None, dialect: sa.Dialect) -> t.Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} is naive; store timezone-aware datetimes.")
        return value.astimezone(datetime.UTC).replace(tzinfo=None)

    def process_result_value(self, value: t.Any, dialect: sa.Dialect) -> datetime.datetime | None:
        if value is None:
            return None
        return t.cast(datetime.datetime, value).replace(tzinfo=datetime.UTC)


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Todo(db.Model):  # type: ignore[name-defined,misc]
    """A todo. ``version`` grows with every change (optimistic locking: stale edits conflict)."""

    __tablename__ = "todos"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(TITLE_MAX))
    completed: Mapped[bool] = mapped_column(default=False)
    order: Mapped[int | None] = mapped_column("position", default=None)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime, default=None)

    # SQLAlchemy adds "AND version = <read version>" to every UPDATE and bumps it, so two writers
    # that read the same version cannot both win, whatever the isolation level.
    __mapper_args__: t.ClassVar[dict[str, t.Any]] = {"version_id_col": version}

    @hybrid_property
    def live(self) -> bool:
        """Whether the todo is on the board (not deleted): the one "is this todo live" check, also
        usable in queries (``where(Todo.live)``)."""
        return self.deleted_at is None

    @live.inplace.expression
    @classmethod
    def _live_expression(cls) -> sa.ColumnElement[bool]:
        return cls.deleted_at.is_(None)

    def __repr__(self) -> str:
        return f"<Todo {self.id} {self.title!r} v{self.version}>"


def live_todo(todo_id: int) -> Todo | None:
    """The todo ``todo_id`` when it exists and is live (not deleted), else ``None``."""
    todo = db.session.get(Todo, todo_id)
    return todo if todo is not None and todo.live else None


def live_todos() -> list[Todo]:
    """The todos not deleted, in board order: by ``order`` (unset last), then oldest first."""
    query = sa.select(Todo).where(Todo.live)
    query = query.order_by(Todo.order.is_(None), Todo.order, Todo.id)
    return list(db.session.scalars(query))


class Activity(db.Model):  # type: ignore[name-defined,misc]
    """One meaningful change, recorded from the ``handle_finished`` signal."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    todo_id: Mapped[int | None]
    title: Mapped[str] = mapped_column(sa.String(TITLE_MAX), default="")
    detail: Mapped[str] = mapped_column(sa.String(TITLE_MAX * 2 + 20), default="")
    actor: Mapped[str] = mapped_column(sa.String(80))
    at: Mapped[datetime.datetime] = mapped_column(UTCDateTime)
    command_id: Mapped[str] = mapped_column(sa.String(36), index=True)


JobStatus = t.Literal["pending", "done", "failed"]


class Job(db.Model):  # type: ignore[name-defined,misc]
    """A background command the board waits for; its id is the enqueued command's id."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    detail: Mapped[str] = mapped_column(sa.String(200), default="")
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime, default=None)
