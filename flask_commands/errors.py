"""The exceptions a command's life can end in.

``CommandInvalid`` is raised by :meth:`Command.build` when input does not validate; ``Conflict``
and ``Rejected`` are raised by handlers when the world, or a business rule, refuses a valid
command. Everything else a handler raises is a fault.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import wtforms


class CommandInvalid(Exception):
    """Input did not validate, so no command was built.

    :param errors: ``{field_name: [message, ...]}``, WTForms' own messages.
    :param form: the bound form, ready to re-render with its errors.
    """

    def __init__(self, errors: dict[str, list[str]], form: wtforms.Form | None = None) -> None:
        super().__init__(errors)
        self.errors = errors
        self.form = form

    def __str__(self) -> str:
        parts = [f"{name}: {' '.join(messages)}" for name, messages in self.errors.items()]
        return "invalid command: " + "; ".join(parts)


class _Refusal(Exception):
    """A valid command that the handler refused; the base of :class:`Conflict` and :class:`Rejected`."""

    #: The default ``code`` when none is given.
    default_code: t.ClassVar[str]
    #: The outcome's name as the idempotency store records it: ``"conflict"`` or ``"rejected"``.
    outcome: t.ClassVar[t.Literal["conflict", "rejected"]]
    #: The HTTP status of the refusal: 409 or 422.
    status: t.ClassVar[int]

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class Conflict(_Refusal):
    """The command was fine, but the current state of the world refuses it (HTTP 409).

    :param message: shown to the user (flashed over HTML, ``detail`` in problem+json).
    :param code: a stable snake_case code for programs, ``"conflict"`` by default.
    :param current: the current state, ``{field_name: value}``: the re-rendered form keeps what
        the user typed and shows what changed, its hidden fields (a ``version``) take these values
        so that submitting again saves over it; JSON callers get it as the problem's ``current``.
    """

    default_code = "conflict"
    outcome = "conflict"
    status = 409

    def __init__(
        self, message: str, *, code: str | None = None, current: t.Mapping[str, t.Any] | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.current = dict(current) if current is not None else None


class Rejected(_Refusal):
    """A business rule refuses the command (HTTP 422, shown as a form-level error).

    :param message: shown to the user.
    :param code: a stable snake_case code for programs, ``"rejected"`` by default.
    """

    default_code = "rejected"
    outcome = "rejected"
    status = 422


class KeyInProgress(Conflict):
    """Another run holds the command's idempotency key; try again in ``retry_after`` seconds."""

    default_code = "in_progress"

    def __init__(self, retry_after: float) -> None:
        super().__init__("This command is already being handled; try again shortly.")
        self.retry_after = retry_after


class KeyReused(Rejected):
    """The idempotency key was used before with another payload."""

    default_code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("This idempotency key was already used with another payload.")
