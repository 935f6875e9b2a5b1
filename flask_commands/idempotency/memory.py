"""An idempotency store in a dictionary, for one process: development and tests."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import threading
import time
import typing as t

from .store import Acquired
from .store import Claim
from .store import LeaseLost
from .store import OutcomeKind
from .store import Record
from .store import StoredResponse
from .store import _check_claim
from .store import _check_complete
from .store import _check_key
from .store import _datetime
from .store import _decide
from .store import _timestamp

if t.TYPE_CHECKING:
    import sqlalchemy


@dataclasses.dataclass(slots=True)
class _Entry:
    fingerprint: str
    token: str
    outcome: OutcomeKind | None
    response: StoredResponse | None
    expires_at: float

    def record(self, key: str) -> Record:
        return Record(key, self.fingerprint, self.outcome, self.response, _datetime(self.expires_at))


class MemoryStore:
    """An idempotency store held in this process's memory, guarded by one lock.

    Records are lost on restart and not shared between worker processes; configure a
    :class:`~flask_commands.idempotency.sql.SQLAlchemyStore` in production.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        # Tests replace the clock to expire leases without sleeping.
        self._clock: t.Callable[[], float] = time.time
        # Tokens tell this store's claims apart: unique within the one process that holds them.
        self._tokens = itertools.count(1)

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self._entries)} records>"

    def claim(
        self, key: str, fingerprint: str, *, lease: float, connection: sqlalchemy.Connection | None = None
    ) -> Claim:
        """Claim ``key`` for ``lease`` seconds, or say why not.

        :raises ValueError: ``connection`` was given; memory cannot join a database transaction.
        """
        _check_claim(key, fingerprint, lease)
        if connection is not None:
            raise ValueError(
                f"MemoryStore cannot claim inside the transaction of {connection!r}; claim without"
                " connection=, or use an SQLAlchemyStore."
            )
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None:
                decision = _decide(entry.record(key), entry.expires_at, fingerprint, now)
                if decision is not None:
                    return decision
            token = f"{next(self._tokens):032x}"
            self._entries[key] = _Entry(fingerprint, token, None, None, now + lease)
            return Acquired(token)

    def complete(
        self,
        key: str,
        token: str,
        *,
        outcome: OutcomeKind,
        ttl: float,
        response: StoredResponse | None = None,
        connection: sqlalchemy.Connection | None = None,
    ) -> None:
        """Mark ``token``'s claim done with ``outcome`` for ``ttl`` seconds.

        :raises LeaseLost: the claim is no longer ``token``'s.
        :raises ValueError: ``connection`` was given; memory cannot join a database transaction.
        """
        _check_complete(outcome, ttl)
        if connection is not None:
            raise ValueError(
                f"MemoryStore cannot write inside the transaction of {connection!r}; call complete()"
                " without connection= after the handler commits, or use an SQLAlchemyStore."
            )
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.token != token or entry.outcome is not None:
                entry = self._running(key, token)  # raises LeaseLost
            entry.outcome = outcome
            entry.response = response
            entry.expires_at = self._clock() + ttl

    def attach_response(self, key: str, token: str, response: StoredResponse) -> None:
        """Store ``response`` on the done record of ``token``'s claim.

        :raises LeaseLost: there is no done record of ``token``'s claim.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.token != token or entry.outcome is None:
                raise LeaseLost(f"idempotency key {key!r} has no done record of token {token!r}.")
            entry.response = response

    def release(self, key: str, token: str) -> None:
        """Forget ``token``'s running claim on ``key``; do nothing when it is not running."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.token == token and entry.outcome is None:
                del self._entries[key]

    def get(self, key: str) -> Record | None:
        """Return the record of ``key``, or ``None`` when it is absent or expired."""
        _check_key(key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.expires_at <= self._clock():
                return None
            return entry.record(key)

    def purge(self, now: datetime.datetime | None = None) -> int:
        """Delete records expired at ``now`` (default: the current time); return how many."""
        with self._lock:
            cutoff = _timestamp(now, self._clock())
            expired = [key for key, entry in self._entries.items() if entry.expires_at <= cutoff]
            for key in expired:
                del self._entries[key]
            return len(expired)

    def same_database(self, bind: sqlalchemy.Engine | sqlalchemy.Connection) -> bool:
        """Return ``False``: memory is never the handler's database."""
        return False

    def _running(self, key: str, token: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None or entry.token != token or entry.outcome is not None:
            raise LeaseLost(
                f"the claim on idempotency key {key!r} is no longer token {token!r}'s: its lease ended"
                " and another claimant took the key over."
            )
        return entry
