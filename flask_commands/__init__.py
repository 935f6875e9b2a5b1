"""Flask-Commands: every state change a command, at once a WTForms form and a typed dataclass."""

import typing as t

from .command import Command as Command
from .errors import CommandInvalid as CommandInvalid
from .errors import Conflict as Conflict
from .errors import Rejected as Rejected
from .extension import Commands as Commands
from .forms import field as field
from .handler import Handler as Handler
from .handler import handler as handler
from .idempotency.memory import MemoryStore as MemoryStore
from .idempotency.store import Store as Store
from .views import command_view as command_view

if t.TYPE_CHECKING:
    from .idempotency.sql import SQLAlchemyStore as SQLAlchemyStore
else:
    # SQLAlchemyStore imports SQLAlchemy, which an app on the memory store never needs: it loads on
    # first access (PEP 562). Hidden from type checkers, which would otherwise accept any name here.
    def __getattr__(name: str) -> t.Any:
        if name == "SQLAlchemyStore":
            from .idempotency.sql import SQLAlchemyStore

            return SQLAlchemyStore
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*globals(), "SQLAlchemyStore"])
