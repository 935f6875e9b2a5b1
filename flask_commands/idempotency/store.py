"""The idempotency store protocol, the results of a claim, and the command fingerprint.

A key moves through three states. *Absent*: the first :meth:`Store.claim` takes it and gets
:class:`Acquired` with a token. *Running*: the claimant holds a lease; duplicates get
:class:`InProgress`, or :class:`Mismatch` when their fingerprint differs. *Done*: the claimant
called :meth:`Store.complete`; duplicates get :class:`Replay` until the record's TTL ends, or
:class:`Mismatch`. A running record whose lease ended (its claimant crashed) and a done record
whose TTL ended count as absent: the next claim takes them over, whatever its fingerprint, as
a fault releases a key (SPEC, "Idempotency").
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import typing as t

from .. import _codec

if t.TYPE_CHECKING:
    import sqlalchemy

OutcomeKind = t.Literal["ok", "conflict", "rejected"]
"""How a handled command ended; faults are never stored."""

_OUTCOMES: tuple[OutcomeKind, ...] = t.get_args(OutcomeKind)

_KEY_MAX_LENGTH = 512  # 255 characters of Idempotency-Key plus its scope (command type, user)

_FINGERPRINT_MAX_LENGTH = 64  # a SHA-256 hex digest, as fingerprint() makes


@dataclasses.dataclass(frozen=True, slots=True)
class StoredResponse:
    """The HTTP response stored with a done record, replayed to duplicates."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """What a store holds for a key.

    ``outcome`` is ``None`` while the claimant runs; ``response`` is ``None`` until it is attached
    (a done record without one means the process died in between). ``expires_at`` (aware, UTC) is
    when the lease ends while running, and when the record expires once done.
    """

    key: str
    fingerprint: str
    outcome: OutcomeKind | None
    response: StoredResponse | None
    expires_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Acquired:
    """The key is yours: run the handler, then :meth:`Store.complete` or :meth:`Store.release`."""

    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    """The key was handled earlier with the same fingerprint: replay ``record``."""

    record: Record


@dataclasses.dataclass(frozen=True, slots=True)
class InProgress:
    """Another claimant holds a live lease on the key; it ends in ``retry_after`` seconds."""

    retry_after: float


@dataclasses.dataclass(frozen=True, slots=True)
class Mismatch:
    """The key is running or done with another fingerprint (another payload under the same key)."""


Claim = Acquired | Replay | InProgress | Mismatch
"""What :meth:`Store.claim` returns."""


class LeaseLost(Exception):
    """The claim is no longer yours: its lease ended and another claimant took the key over."""


class StoreUnavailable(Exception):
    """The database behind the store cannot be reached; try again later."""


@t.runtime_checkable
class Store(t.Protocol):
    """Where idempotency records live; every method is safe to call from many threads at once.

    Implement every method to plug in a store of your own (``COMMANDS_IDEMPOTENCY_STORE``); a
    store that never shares the handlers' database returns ``False`` from :meth:`same_database`
    and is never given a ``connection``.
    """

    def claim(
        self, key: str, fingerprint: str, *, lease: float, connection: sqlalchemy.Connection | None = None
    ) -> Claim:
        """Claim ``key`` atomically for ``lease`` seconds, or say why not.

        :param connection: claim inside this connection's open transaction (a store for which
            :meth:`same_database` is true): the claim commits or rolls back with the handler's
            writes, and a duplicate meanwhile gets :class:`InProgress` at once, never waiting.
        """
        ...

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
        """Mark the claim done with ``outcome``, kept for ``ttl`` seconds.

        :param connection: write the record on this connection, inside its open transaction, so
            it commits or rolls back with the handler's writes (SQL stores on the same database).
        :raises LeaseLost: the claim is no longer ``token``'s.
        """
        ...

    def release(self, key: str, token: str) -> None:
        """Forget ``token``'s running claim after a fault, so a retry runs again; else do nothing."""
        ...

    def get(self, key: str) -> Record | None:
        """Return the record of ``key``, or ``None`` when it is absent or expired."""
        ...

    def purge(self, now: datetime.datetime | None = None) -> int:
        """Delete expired records (done past their TTL, running past their lease); return how many."""
        ...

    def same_database(self, bind: sqlalchemy.Engine | sqlalchemy.Connection) -> bool:
        """Return whether ``bind`` reaches the store's database, so ``complete(connection=...)`` applies."""
        ...


#: The methods of :class:`Store` the package calls; ``init_app`` refuses a store lacking any.
STORE_METHODS = ("claim", "complete", "release", "get", "purge", "same_database")


def fingerprint(kind: str, data: t.Any) -> str:
    """Return the SHA-256 hex digest of the canonical JSON of ``[kind, data]``."""
    return _sha256_hex(_codec.dumps([kind, data]))


def _sha256_hex(text: str) -> str:
    """The SHA-256 hex digest of ``text`` in UTF-8 (a lone surrogate from JSON's ``\\ud800`` kept)."""
    digest = _SHA256.copy()
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


# A SHA-256 object that is never updated, copied for each digest: hashlib.sha256() looks the
# digest up in OpenSSL on every call, which on a request's cold cache costs more than the hashing.
_SHA256 = hashlib.sha256()


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"idempotency key {key!r} is not a non-empty string.")
    if len(key) > _KEY_MAX_LENGTH:
        raise ValueError(
            f"idempotency key {key[:40]!r}... has {len(key)} characters, more than {_KEY_MAX_LENGTH};"
            " shorten it or hash its scope."
        )


def _check_claim(key: str, fingerprint: str, lease: float) -> None:
    # The usual arguments pass in one test; the checks below word what is wrong with the others.
    if (
        type(key) is str
        and 0 < len(key) <= _KEY_MAX_LENGTH
        and type(fingerprint) is str
        and 0 < len(fingerprint) <= _FINGERPRINT_MAX_LENGTH
        and type(lease) is float
        and 0.0 < lease < math.inf
    ):
        return
    _check_key(key)
    if not isinstance(fingerprint, str) or not fingerprint or len(fingerprint) > _FINGERPRINT_MAX_LENGTH:
        raise ValueError(
            f"fingerprint {fingerprint!r} is not a string of 1 to {_FINGERPRINT_MAX_LENGTH} characters;"
            " pass fingerprint(kind, data)."
        )
    if not (isinstance(lease, int | float) and math.isfinite(lease) and lease > 0):
        raise ValueError(f"lease {lease!r} is not a positive number of seconds.")


def _check_complete(outcome: str, ttl: float) -> None:
    if type(ttl) is float and 0.0 < ttl < math.inf and outcome in _OUTCOMES:
        return  # the usual arguments, in one test
    if outcome not in _OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(map(repr, _OUTCOMES))}.")
    if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl {ttl!r} is not a positive number of seconds.")


def _timestamp(now: datetime.datetime | None, default: float) -> float:
    """``now`` as epoch seconds; a naive datetime is refused, as it would be read as local time."""
    if now is None:
        return default
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now {now!r} is naive; pass an aware datetime such as datetime.now(timezone.utc).")
    return now.timestamp()


def _datetime(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _decide(record: Record, expires_at: float, fingerprint: str, now: float) -> Claim | None:
    """Classify a duplicate claim against a live record; ``None`` means the record is claimable."""
    if expires_at <= now:
        return None
    if record.fingerprint != fingerprint:
        return Mismatch()
    if record.outcome is None:
        return InProgress(retry_after=expires_at - now)
    return Replay(record)
