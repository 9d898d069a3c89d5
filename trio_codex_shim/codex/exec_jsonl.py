"""Translate ``codex exec --json`` output into normalised Codex events.

Sans-IO: feed it the lines of one run, then :meth:`ExecTranslator.finish`
with how the process ended.  Only the fields the shim uses are decoded, with
one reused msgspec decoder; unknown event and item types are skipped, and a
line that is not JSON is counted and skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

import msgspec

from .classify import classify_text
from .events import (
    AgentMessage,
    CodexEvent,
    Failure,
    FailureKind,
    Notice,
    ThreadStarted,
    TokenUsage,
    TurnFailed,
)
from .thread_id import is_valid_thread_id

log = logging.getLogger(__name__)


class _Item(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0


class _Error(msgspec.Struct):
    message: str = ""


class _Line(msgspec.Struct):
    type: str = ""
    thread_id: str | None = None
    item: _Item | None = None
    usage: _Usage | None = None
    error: _Error | None = None
    message: str | None = None


_decoder: Final = msgspec.json.Decoder(_Line)


class ExecTranslator:
    """One ``codex exec`` run's JSONL, turned into :data:`CodexEvent` values."""

    def __init__(self, *, resuming: str | None, now: dt.datetime | None = None) -> None:
        self._resuming = resuming
        self._now = now
        self.completed = False
        self.failed = False
        self.json_lines = 0
        self.bad_lines = 0
        self._last_error: str | None = None

    def feed(self, line: bytes) -> list[CodexEvent]:
        """Events for one stdout line (possibly none)."""
        if not line.strip():
            return []
        try:
            ev = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            self.bad_lines += 1
            log.warning("skipping a codex stdout line that is not JSONL (%s): %.200r", exc, line)
            return []
        self.json_lines += 1
        kind = ev.type
        if kind == "item.completed":
            item = ev.item
            if item is not None and item.type == "agent_message" and item.text:
                return [AgentMessage(item.text)]
        elif kind == "turn.completed":
            self.completed = True
            if ev.usage is not None:
                u = ev.usage
                return [
                    # Codex 0.169 reports the thread's running total here (checked
                    # across resumed turns: 100, then 200), not this turn's share.
                    TokenUsage(
                        scope="thread",
                        input_tokens=u.input_tokens,
                        cached_input_tokens=u.cached_input_tokens,
                        output_tokens=u.output_tokens,
                        reasoning_output_tokens=u.reasoning_output_tokens,
                    )
                ]
        elif kind == "thread.started":
            tid = ev.thread_id or ""
            if is_valid_thread_id(tid):
                return [ThreadStarted(tid)]
            return [Notice(f"ignored a thread id that does not look like one: {tid[:80]!r}")]
        elif kind == "turn.failed":
            self.failed = True
            message = ev.error.message if ev.error else self._last_error or "turn failed"
            return [TurnFailed(self._classify(message))]
        elif kind == "error":
            self._last_error = ev.message or (ev.error.message if ev.error else None)
        return []

    def finish(self, exit_code: int | None, stderr_tail: str) -> list[CodexEvent]:
        """Events the end of the run implies (a failure nobody printed as JSONL)."""
        if self.completed or self.failed:
            return []
        if self._last_error is not None:
            return [TurnFailed(self._classify(self._last_error))]
        if exit_code in (0, None):
            return []
        tail = stderr_tail.strip()
        failure = self._classify(tail) if tail else None
        if failure is None or failure.kind is FailureKind.OTHER:
            return []  # the core reports the exit status and stderr tail itself
        if failure.kind is FailureKind.THREAD_NOT_FOUND and (
            self._resuming is None or self.json_lines
        ):
            return []  # only a resume that printed nothing means the thread is gone
        return [TurnFailed(failure)]

    def _classify(self, message: str) -> Failure:
        return classify_text(message, now=self._now)
