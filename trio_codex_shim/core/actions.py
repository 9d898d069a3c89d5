"""What the core asks the Trio drivers to do, beside sending Events."""

from __future__ import annotations

import msgspec


class StartTurn(msgspec.Struct, frozen=True):
    """Run one Codex turn with ``prompt``, resuming ``thread_id`` when given."""

    turn_id: int
    prompt: str
    thread_id: str | None


class StopTurn(msgspec.Struct, frozen=True):
    """Stop turn ``turn_id`` if it is still running after ``grace_secs``.

    ``grace_secs == 0`` means now.  Stopping means the whole process tree the
    turn started, TERM then KILL, then reaped; the turn then ends with
    ``TurnOutcome(stopped=True)`` unless it finished first.
    """

    turn_id: int
    grace_secs: float


class SteerTurn(msgspec.Struct, frozen=True):
    """Add ``prompt`` to the running turn ``turn_id`` (``--on-busy steer``).

    The driver answers with :meth:`~.machine.ShimCore.steered` naming
    ``steer_id``, before the turn's end is reported; ``message_id`` is for logs.
    """

    turn_id: int
    steer_id: int
    prompt: str
    message_id: str | None


class Exit(msgspec.Struct, frozen=True):
    """No turn is running and none will: flush events and exit with ``code``."""

    code: int
    preserve_work: bool


Action = StartTurn | StopTurn | SteerTurn | Exit
