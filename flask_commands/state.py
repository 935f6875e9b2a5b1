"""Each application's Flask-Commands settings and idempotency store, and :func:`app_state` to reach them.

``Commands.init_app`` calls :func:`init_state`; handlers, views, the CLI and jobs call
:func:`app_state`. The state lives here, below every module that needs it, keyed weakly by app,
so that nothing on the ``Commands`` instance belongs to one app.
"""

from __future__ import annotations

import threading
import typing as t
import weakref

from flask import Flask
from flask import current_app

from .idempotency.store import STORE_METHODS
from .idempotency.store import Store

#: The configuration keys ``init_app`` reads, with their defaults.
DEFAULTS: dict[str, t.Any] = {
    "COMMANDS_IDEMPOTENCY_STORE": "memory",
    "COMMANDS_IDEMPOTENCY_SCOPE": None,
    "COMMANDS_IDEMPOTENCY_WAIT": 5.0,
    "COMMANDS_IDEMPOTENCY_LEASE": 60.0,
    "COMMANDS_IDEMPOTENCY_TTL": 24 * 60 * 60.0,
}

NOT_REGISTERED = (
    "Flask-Commands is not registered on this Flask app; call 'Commands(app)' or"
    " 'commands.init_app(app)' first."
)

_states: weakref.WeakKeyDictionary[Flask, AppState] = weakref.WeakKeyDictionary()
# The app app_state() answered last, and its state (weakly, as _states holds them): one app per
# process is the usual case, and this spares the weak dictionary's lookup on every request.
_last: tuple[weakref.ref[Flask], weakref.ref[AppState]] | None = None


class AppState:
    """What one application's wiring holds: its settings and, once used, its store.

    A store instance given in ``COMMANDS_IDEMPOTENCY_STORE`` is checked at once; a URL becomes a
    :class:`~flask_commands.SQLAlchemyStore` on first use (its database may be down at start).

    :raises TypeError: the setting is neither ``"memory"``, a URL nor a store with every method.
    """

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        self.store_setting: t.Any = config["COMMANDS_IDEMPOTENCY_STORE"]
        self.scope_of: t.Callable[[], t.Any] | None = config["COMMANDS_IDEMPOTENCY_SCOPE"]
        self.wait = float(config["COMMANDS_IDEMPOTENCY_WAIT"])
        self.lease = float(config["COMMANDS_IDEMPOTENCY_LEASE"])
        self.ttl = float(config["COMMANDS_IDEMPOTENCY_TTL"])
        self._store: Store | None = None
        self._lock = threading.Lock()
        if not isinstance(self.store_setting, str):
            self._store = make_store(self.store_setting)

    @property
    def store(self) -> Store:
        """The idempotency store, made on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = make_store(self.store_setting)
        return self._store

    def scope(self) -> str:
        """The scope of this request's keys: ``COMMANDS_IDEMPOTENCY_SCOPE()`` as text, else ``""``."""
        scope_of = self.scope_of
        return "" if scope_of is None else str(scope_of())


def make_store(setting: t.Any) -> Store:
    """Make the store that ``COMMANDS_IDEMPOTENCY_STORE`` names: ``"memory"``, a URL, or an instance.

    :raises TypeError: the setting is none of these, or an instance lacks methods of :class:`Store`.
    """
    if setting == "memory":
        from .idempotency.memory import MemoryStore

        return MemoryStore()
    if isinstance(setting, str):
        from .idempotency.sql import SQLAlchemyStore

        return SQLAlchemyStore(setting)
    missing = [name for name in STORE_METHODS if not callable(getattr(setting, name, None))]
    if not missing:
        return t.cast("Store", setting)
    if len(missing) == len(STORE_METHODS):
        raise TypeError(
            f"COMMANDS_IDEMPOTENCY_STORE is {setting!r}; set it to 'memory', a database URL, or a store"
            " instance (MemoryStore, SQLAlchemyStore)."
        )
    raise TypeError(
        f"COMMANDS_IDEMPOTENCY_STORE is {setting!r}, which lacks the store method(s)"
        f" {', '.join(missing)}; implement every method of flask_commands.Store."
    )


def init_state(app: Flask) -> AppState:
    """Read ``app``'s configuration (filling in :data:`DEFAULTS`) and make its state."""
    global _last
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    state = _states[app] = AppState(app.config)
    _last = None
    return state


def app_state(app: Flask | None = None) -> AppState:
    """Return the Flask-Commands state of ``app`` (the current app by default).

    :raises RuntimeError: Flask-Commands is not registered on the app.
    """
    global _last
    if app is None:
        # Typed, not t.cast: a cast is a function call on every request.
        current: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        app = current
    last = _last
    if last is not None and last[0]() is app:
        state = last[1]()
        if state is not None:
            return state
    try:
        state = _states[app]
    except KeyError:
        raise RuntimeError(NOT_REGISTERED) from None
    _last = (weakref.ref(app), weakref.ref(state))
    return state
