"""Normalised Codex events: what any backend tells the core about a turn.

Both backends (``codex exec --json`` per message, a persistent
``codex app-server``) translate what Codex prints into these Structs, so the
core, the queue and the accounting never change with the backend.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Literal

import msgspec


class FailureKind(enum.StrEnum):
    """Why a turn failed, as far as the shim acts on it."""

    CONTEXT_WINDOW = "context_window"
    USAGE_LIMIT = "usage_limit"
    AUTH = "auth"
    THREAD_NOT_FOUND = "thread_not_found"
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    OTHER = "other"


class Failure(msgspec.Struct, frozen=True):
    """A classified turn failure with the CLI's own message."""

    kind: FailureKind
    message: str
    retry_at_epoch_secs: int | None = None
    retry_at_label: str | None = None


class ThreadStarted(msgspec.Struct, frozen=True):
    """Codex named the thread this turn runs on (already validated)."""

    thread_id: str


class AgentMessage(msgspec.Struct, frozen=True):
    """A completed agent message (full text, not a delta)."""

    text: str


class OutputProduced(msgspec.Struct, frozen=True):
    """Codex printed ``nbytes`` more bytes (any stream); also a liveness signal."""

    nbytes: int


class TokenUsage(msgspec.Struct, frozen=True):
    """Token figures; ``scope`` says whether they count this turn or the whole thread.

    ``last_input_tokens`` / ``last_output_tokens`` describe the latest model
    exchange, the basis of context occupancy; when a backend does not know
    them the core takes this turn's share of the figures instead.
    ``context_window`` is the model's window when the backend knows it.
    """

    scope: Literal["turn", "thread"]
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_output_tokens: int
    last_input_tokens: int | None = None
    last_output_tokens: int | None = None
    context_window: int | None = None


class TurnFailed(msgspec.Struct, frozen=True):
    """The turn failed; the core decides what the orchestrator hears."""

    failure: Failure


class Notice(msgspec.Struct, frozen=True):
    """Something the orchestrator should be warned about (not a failure)."""

    message: str


CodexEvent = ThreadStarted | AgentMessage | OutputProduced | TokenUsage | TurnFailed | Notice

EventSink = Callable[[CodexEvent], None]
"""How a backend hands normalised events to the driver, which feeds the core."""


class TurnOutcome(msgspec.Struct, frozen=True):
    """How a turn's run ended, as seen by the backend.

    ``stopped`` is true when the shim stopped it (Kill, a shutdown deadline,
    the turn timeout); ``spawn_error`` when Codex could not be started;
    ``exit_code`` and ``stderr_tail`` when a process ended on its own.
    """

    stopped: bool = False
    spawn_error: str | None = None
    exit_code: int | None = None
    stderr_tail: str = ""
    completed: bool = False
