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


class Exit(msgspec.Struct, frozen=True):
    """No turn is running and none will: flush events and exit with ``code``."""

    code: int
    preserve_work: bool


Action = StartTurn | StopTurn | Exit
