"""The seam between the shim and Codex: a backend runs turns.

The core speaks of turns and normalised events, never of processes; a
backend is whatever turns a :class:`~..core.actions.StartTurn` into those
events.  ``exec`` starts ``codex exec --json`` per turn; ``app-server``
keeps one ``codex app-server`` alive.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import trio

from ..core.actions import StartTurn
from .events import EventSink, TurnOutcome


class Backend(Protocol):
    """Runs one turn at a time on behalf of the shim's executor task."""

    async def run(self) -> None:
        """Background work for the shim's whole life, in the service's nursery.

        A persistent backend starts its server here (``Ready`` never waits on
        it) and keeps it until cancelled; a per-turn backend returns at once.
        """
        ...

    async def run_turn(
        self, turn: StartTurn, sink: EventSink, stop: trio.CancelScope
    ) -> TurnOutcome:
        """Run ``turn``, feeding ``sink`` as Codex speaks; return how it ended.

        ``stop`` is the turn's own cancel scope: when it is cancelled (Kill,
        a shutdown deadline, the turn timeout) the backend stops every
        process the turn started and returns ``TurnOutcome(stopped=True)``.
        This never returns while a process of the turn is still unaccounted for.
        """
        ...


@runtime_checkable
class SteerableBackend(Protocol):
    """A backend that can add a message to the turn it is running (``--on-busy steer``)."""

    async def steer_turn(self, turn_id: int, prompt: str) -> str | None:
        """Add ``prompt`` to running turn ``turn_id``: ``None`` when Codex took it,
        else why not.  Bounded in time; never raises for a refusal."""
        ...
