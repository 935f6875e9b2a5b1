"""Flask-Commands: every state change a command, at once a WTForms form and a typed dataclass."""

from .command import Command as Command
from .errors import CommandInvalid as CommandInvalid
from .errors import Conflict as Conflict
from .errors import Rejected as Rejected
from .extension import Commands as Commands
from .forms import field as field
from .handler import Handler as Handler
from .handler import handler as handler
from .idempotency.memory import MemoryStore as MemoryStore
from .idempotency.sql import SQLAlchemyStore as SQLAlchemyStore
from .idempotency.store import Store as Store
from .views import command_view as command_view
