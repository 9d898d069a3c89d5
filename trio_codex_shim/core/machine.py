"""The shim's state machine: every rule of its behaviour, and no I/O.

:class:`ShimCore` takes inputs — a Command, a normalised Codex event, a
turn's end, a clock tick, a lost peer — and returns outputs: protocol Events
to send and :mod:`~.actions` for the drivers.  It never sleeps, reads or
spawns, so it is tested exhaustively and fuzzed at thousands of steps a
second.  Time comes from an injected :class:`Clock`.

The promises it keeps (and the tests check):

- every ``SendMessage`` with a ``message_id`` ends in exactly one terminal
  event naming it: ``Completion`` or ``DeliveryFailed``; refusals of
  messages without an id are reported with ``Error``;
- states change only along :data:`LEGAL_EDGES`;
- at most one turn runs at a time, and ``Exit`` is emitted only when none is.
"""

from __future__ import annotations

from typing import Final, Literal, Protocol

import msgspec

from .. import protocol as p
from ..codex import events as cx
from .actions import Exit, StartTurn, SteerTurn, StopTurn
from .queue import DropOldestQueue
from .text import SUMMARY_LINES, format_injected_message, last_lines, mentions_context_pressure

Output = p.Event | StartTurn | StopTurn | SteerTurn | Exit

EXIT_OK: Final = 0
"""Exit code after Shutdown, Kill or the orchestrator closing the stream."""
EXIT_TRANSPORT: Final = 3
"""Exit code when the stream broke: lost sync, a truncated frame, a stuck peer."""

MAX_SHUTDOWN_SECS: Final = 2**64 - 1
"""Longest ``Shutdown.timeout_secs`` honoured (serde's ``u64``); larger ones are cut to it."""

QUOTA_FALLBACK_SECS: Final = 900
"""How long messages are refused after a usage limit whose retry time Codex did not say."""

LEGAL_EDGES: Final[frozenset[tuple[p.ShimState, p.ShimState]]] = frozenset(
    {
        (p.ShimState.IDLE, p.ShimState.WORKING),
        (p.ShimState.WORKING, p.ShimState.IDLE),
        (p.ShimState.WORKING, p.ShimState.CONTEXT_EXHAUSTED),
        (p.ShimState.IDLE, p.ShimState.DEAD),
        (p.ShimState.WORKING, p.ShimState.DEAD),
        (p.ShimState.CONTEXT_EXHAUSTED, p.ShimState.DEAD),
    }
)
"""Every ``StateChanged`` the shim may send, as (from, to)."""

_PONG: Final = p.Pong()
"""Events are frozen, so one ``Pong`` answers every ``Ping``."""


class Clock(Protocol):
    """Where the core reads time: monotonic seconds and the Unix epoch."""

    def monotonic(self) -> float: ...

    def epoch(self) -> float: ...


class CoreConfig(msgspec.Struct, frozen=True):
    """The settings the core's rules depend on."""

    queue_depth: int = 16
    model: str | None = None
    context_limit_tokens: int | None = None
    context_warn_pct: int = 80
    preserve_work: bool = False
    turn_timeout_secs: float | None = None
    stop_grace_secs: float = 2.0
    on_busy: Literal["queue", "steer"] = "queue"
    """``steer``: a message arriving during a turn is added to it (:class:`SteerTurn`)."""


class _Message(msgspec.Struct, frozen=True):
    sender: str
    body: str
    message_id: str | None


class _Turn(msgspec.Struct):
    """The message Codex is working on, and what its turn has said so far."""

    turn_id: int
    message: _Message
    failure: cx.Failure | None = None
    stop_reason: str | None = None
    fresh_thread_retried: bool = False
    steered: list[_Message] = msgspec.field(default_factory=list)
    """Messages Codex took into this turn: each gets the turn's terminal event."""
    thread_switch_warned: bool = False


class _Tokens(msgspec.Struct):
    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def plus(self, other: _Tokens) -> _Tokens:
        return _Tokens(
            self.input + other.input,
            self.cached + other.cached,
            self.output + other.output,
            self.reasoning + other.reasoning,
        )

    def minus(self, other: _Tokens) -> _Tokens:
        return _Tokens(
            self.input - other.input,
            self.cached - other.cached,
            self.output - other.output,
            self.reasoning - other.reasoning,
        )


class ShimCore:
    """The sans-IO shim.  Call :meth:`start` first; feed inputs; act on outputs."""

    def __init__(self, config: CoreConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        now = clock.monotonic()
        self._started_at = now
        self._state = p.ShimState.STARTING
        self._state_since = now
        self._queue: DropOldestQueue[_Message] = DropOldestQueue(config.queue_depth)
        self._turn: _Turn | None = None
        self._next_turn_id = 1
        self._thread_id: str | None = None
        self._response = ""
        self._output_bytes = 0
        self._tokens_before_turn = _Tokens()
        self._tokens = _Tokens()
        self._used_tokens = 0
        self._context_window: int | None = None
        self._context_warned = False
        self._approaching_sent = False
        self._quota: p.QuotaBlocked | None = None
        self._quota_until = 0.0
        self._closing: Exit | None = None
        self._exited = False
        self._steers: dict[int, tuple[int, _Message]] = {}
        """Steers asked for and not yet answered: steer id -> (turn id, message)."""
        self._next_steer_id = 1
        self._riders: list[_Message] = []
        """The ending turn's steered messages, until they get their terminal events."""

    # -- read-only views ----------------------------------------------------

    @property
    def state(self) -> p.ShimState:
        return self._state

    @property
    def thread_id(self) -> str | None:
        return self._thread_id

    @property
    def running_turn(self) -> int | None:
        """The id of the turn in flight, if any."""
        return None if self._turn is None else self._turn.turn_id

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def exited(self) -> bool:
        return self._exited

    # -- inputs ---------------------------------------------------------------

    def start(self) -> list[Output]:
        """The shim is up: it is idle and says ``Ready``."""
        self._state = p.ShimState.IDLE
        self._state_since = self._clock.monotonic()
        return [p.Ready()]

    def command(self, cmd: p.AnyCommand) -> list[Output]:
        """Handle one Command from the orchestrator."""
        if type(cmd) is p.Ping:  # the most frequent command; ``isinstance`` on a Struct is slow
            return [_PONG]
        out: list[Output] = []
        match cmd:
            case p.SendMessage():
                self._send_message(cmd, out)
            case p.GetState():
                since = int(self._clock.monotonic() - self._state_since)
                out.append(p.State(state=self._state, since_secs=since))
            case p.CaptureScreen(last_n_lines=n):
                content = self._response if n is None else last_lines(self._response, n)
                out.append(p.ScreenCapture(content=content, cursor_row=0, cursor_col=0))
            case p.Resize():
                pass  # no terminal to resize
            case p.Shutdown(timeout_secs=timeout):
                # msgspec decodes any integer; one past float's range is still "forever".
                grace = float(min(timeout, MAX_SHUTDOWN_SECS))
                self._stop_everything(out, EXIT_OK, "shim shutting down", grace)
            case p.Kill():
                self._stop_everything(out, EXIT_OK, "shim killed", 0.0)
        return out

    def bad_message(self, error: p.BadMessage) -> list[Output]:
        """A frame that did not decode: say what was wrong and keep serving."""
        return [p.Error(command=error.command, reason=f"bad message: {error.reason}")]

    def peer_lost(self, code: int, grace_secs: float) -> list[Output]:
        """The orchestrator went away (EOF, stuck, a signal): stop like Shutdown."""
        out: list[Output] = []
        self._stop_everything(out, code, "orchestrator gone, shim exiting", grace_secs)
        return out

    def codex_event(self, turn_id: int, event: cx.CodexEvent) -> list[Output]:
        """Something Codex said during turn ``turn_id``."""
        turn = self._turn
        out: list[Output] = []
        if turn is None or turn.turn_id != turn_id:
            return out  # a straggler from a turn already accounted for
        # The bulk of a turn first, by type identity: ``isinstance`` on a Struct is slow.
        if type(event) is cx.OutputProduced:
            self._output_bytes += event.nbytes
            return out
        if type(event) is cx.AgentMessage:
            self._response = event.text
            if not self._approaching_sent and mentions_context_pressure(event.text):
                self._approaching(out, "agent output contains context-pressure signals")
            return out
        match event:
            case cx.ThreadStarted(thread_id=tid):
                if (
                    self._thread_id is not None
                    and tid != self._thread_id
                    and not turn.thread_switch_warned  # once a turn: Codex could flood
                ):
                    # Codex 0.169 starts a new thread, silently, for a resume id
                    # it cannot parse: the earlier context is gone.
                    turn.thread_switch_warned = True
                    out.append(
                        p.Warning(
                            message=f"codex started thread {tid} instead of resuming "
                            f"{self._thread_id}: earlier context was lost"
                        )
                    )
                self._thread_id = tid
            case cx.TokenUsage():
                self._token_usage(event, out)
            case cx.TurnFailed(failure=failure):
                turn.failure = failure
            case cx.Notice(message=message):
                out.append(p.Warning(message=message))
        return out

    def stalled(self, turn_id: int, idle_secs: int) -> list[Output]:
        """Codex has printed nothing for ``idle_secs`` during turn ``turn_id``."""
        if self._turn is None or self._turn.turn_id != turn_id:
            return []
        msg = f"no output from codex for {idle_secs}s (turn still running)"
        return [p.Warning(message=msg, idle_secs=idle_secs)]

    def turn_ended(self, turn_id: int, outcome: cx.TurnOutcome) -> list[Output]:
        """Turn ``turn_id`` is over and its processes are gone."""
        turn = self._turn
        out: list[Output] = []
        if turn is None or turn.turn_id != turn_id:
            return out
        self._turn = None
        self._tokens_before_turn = self._tokens
        failure = turn.failure or _failure_from_outcome(outcome)
        msg = turn.message
        for steer_id, (steer_turn, pending) in list(self._steers.items()):
            if steer_turn == turn_id:  # never answered: it did not reach the turn
                del self._steers[steer_id]
                self._steer_fallback(out, pending, "the turn ended first")
        self._riders = turn.steered

        if outcome.stopped:
            reason = turn.stop_reason or _timeout_reason(self.config.turn_timeout_secs)
            self._fail_message(out, msg, f"turn stopped: {reason}")
        elif failure is None:
            summary = last_lines(self._response, SUMMARY_LINES)
            self._set_state(out, p.ShimState.IDLE, summary)
            out.append(
                p.Completion(message_id=msg.message_id, response=self._response, last_lines=summary)
            )
            for rider in self._take_riders():
                out.append(
                    p.Completion(
                        message_id=rider.message_id, response=self._response, last_lines=summary
                    )
                )
        elif (
            failure.kind is cx.FailureKind.THREAD_NOT_FOUND
            and not turn.fresh_thread_retried
            and self._closing is None
        ):
            lost = self._thread_id
            self._thread_id = None
            out.append(
                p.Warning(
                    message=f"codex no longer has thread {lost}; started a fresh thread and "
                    "re-sent the message: earlier context was lost"
                )
            )
            self._begin_turn(out, msg, fresh_thread_retried=True)
            for rider in self._take_riders():
                self._steer_fallback(out, rider, "the thread was lost")
            return out
        else:
            self._turn_failed(out, msg, failure)

        if self._closing is not None:
            self._finish_closing(out)
        elif self._state is p.ShimState.IDLE:
            self._start_next(out)
        return out

    def steered(self, steer_id: int, error: str | None) -> list[Output]:
        """The driver's answer to :class:`SteerTurn` ``steer_id``: ``None`` when Codex
        took the message into the running turn, else why not (it is queued instead)."""
        out: list[Output] = []
        pending = self._steers.pop(steer_id, None)
        if pending is None:
            return out  # already settled when its turn ended
        turn_id, msg = pending
        turn = self._turn
        if error is None and turn is not None and turn.turn_id == turn_id:
            turn.steered.append(msg)
            if msg.message_id is not None:
                out.append(p.MessageDelivered(id=msg.message_id))
        else:
            self._steer_fallback(out, msg, error or "the turn is over")
        return out

    def tick(self) -> list[Output]:
        """The stats interval elapsed: report ``SessionStats``."""
        if self._exited:
            return []
        return [
            p.SessionStats(
                output_bytes=self._output_bytes,
                uptime_secs=self._uptime(),
                input_tokens=self._tokens.input,
                output_tokens=self._tokens.output,
                context_usage_pct=self._usage_pct(),
            )
        ]

    # -- SendMessage ----------------------------------------------------------

    def _send_message(self, cmd: p.SendMessage, out: list[Output]) -> None:
        msg = _Message(cmd.sender, cmd.body, cmd.message_id)
        if self._closing is not None:
            self._refuse(out, msg, "shim is shutting down, cannot accept message")
            return
        if self._quota is not None:
            if self._clock.epoch() < self._quota_until:
                out.append(self._quota)
                self._refuse(out, msg, f"usage limit reached: {self._quota.message}")
                return
            self._quota = None
        if self._state is p.ShimState.IDLE:
            self._begin_turn(out, msg, summary="")
        elif self._state is p.ShimState.WORKING:
            if self.config.on_busy == "steer" and self._turn is not None:
                self._steer(out, self._turn, msg)
                return
            self._enqueue(out, msg, "message queued while agent working")
        else:
            self._refuse(out, msg, f"agent in {self._state} state, cannot accept message")

    def _enqueue(self, out: list[Output], msg: _Message, note: str) -> None:
        """Queue ``msg`` (the oldest queued message makes room) and say the depth."""
        dropped = self._queue.push(msg)
        if dropped is not None:
            self._refuse(
                out,
                dropped,
                f"message queue full ({self._queue.capacity}), dropped oldest message",
                seed_error=False,
            )
        out.append(p.Warning(message=f"{note} (depth: {self.queued})"))

    def _refuse(
        self, out: list[Output], msg: _Message, reason: str, *, seed_error: bool = True
    ) -> None:
        """Report a message that will never run: ``DeliveryFailed`` when it has an id.

        ``seed_error`` also sends the ``Error`` batty's shim sends for a refusal,
        so an orchestrator written for batty sees what it expects.
        """
        if msg.message_id is None or seed_error:
            suffix = "" if msg.message_id is None else f" (id: {msg.message_id})"
            out.append(p.Error(command="SendMessage", reason=reason + suffix))
        if msg.message_id is not None:
            out.append(p.DeliveryFailed(id=msg.message_id, reason=reason))

    def _fail_message(self, out: list[Output], msg: _Message, reason: str) -> None:
        """The in-flight message's terminal event when its turn did not complete."""
        if msg.message_id is not None:
            out.append(p.DeliveryFailed(id=msg.message_id, reason=reason))
        for rider in self._take_riders():
            if rider.message_id is not None:
                out.append(p.DeliveryFailed(id=rider.message_id, reason=reason))
        if self._state is p.ShimState.WORKING and self._closing is None:
            self._set_state(out, p.ShimState.IDLE, last_lines(self._response, SUMMARY_LINES))

    # -- steering (``on_busy="steer"``) ------------------------------------------

    def _steer(self, out: list[Output], turn: _Turn, msg: _Message) -> None:
        steer_id = self._next_steer_id
        self._next_steer_id += 1
        self._steers[steer_id] = (turn.turn_id, msg)
        prompt = format_injected_message(msg.sender, msg.body)
        out.append(SteerTurn(turn.turn_id, steer_id, prompt, msg.message_id))

    def _steer_fallback(self, out: list[Output], msg: _Message, why: str) -> None:
        """A message that could not join the running turn is queued like any other."""
        if self._closing is not None:
            self._refuse(out, msg, "shim is shutting down, message dropped", seed_error=False)
            return
        self._enqueue(out, msg, f"could not steer the running turn ({why}); message queued")
        if self._turn is None and self._state is p.ShimState.IDLE:
            self._start_next(out)

    def _take_riders(self) -> list[_Message]:
        riders, self._riders = self._riders, []
        return riders

    def _begin_turn(
        self,
        out: list[Output],
        msg: _Message,
        *,
        summary: str | None = None,
        fresh_thread_retried: bool = False,
    ) -> None:
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        self._turn = _Turn(turn_id, msg, fresh_thread_retried=fresh_thread_retried)
        if summary is not None:
            self._response = ""
            self._set_state(out, p.ShimState.WORKING, summary)
            if msg.message_id is not None:
                out.append(p.MessageDelivered(id=msg.message_id))
        out.append(
            StartTurn(
                turn_id=turn_id,
                prompt=format_injected_message(msg.sender, msg.body),
                thread_id=self._thread_id,
            )
        )

    def _start_next(self, out: list[Output]) -> None:
        msg = self._queue.pop()
        if msg is not None:
            remaining = len(self._queue)
            self._begin_turn(out, msg, summary=f"delivering queued message ({remaining} remaining)")

    # -- failures -------------------------------------------------------------

    def _turn_failed(self, out: list[Output], msg: _Message, failure: cx.Failure) -> None:
        kind = failure.kind
        if kind is cx.FailureKind.CONTEXT_WINDOW:
            summary = last_lines(self._response, SUMMARY_LINES)
            self._set_state(out, p.ShimState.CONTEXT_EXHAUSTED, summary)
            out.append(p.ContextExhausted(message=failure.message, last_lines=summary))
            self._fail_message(out, msg, f"context window exhausted: {failure.message}")
            self._drain_queue(out, "agent context exhausted, queued message dropped")
            return
        if kind is cx.FailureKind.USAGE_LIMIT:
            self._quota = p.QuotaBlocked(
                message=failure.message,
                retry_at_epoch_secs=failure.retry_at_epoch_secs,
                retry_at_label=failure.retry_at_label,
            )
            self._quota_until = float(
                failure.retry_at_epoch_secs or self._clock.epoch() + QUOTA_FALLBACK_SECS
            )
            out.append(self._quota)
            self._fail_message(out, msg, f"usage limit reached: {failure.message}")
            self._drain_queue(out, "usage limit reached, queued message dropped")
            return
        if kind is cx.FailureKind.AUTH:
            out.append(p.AuthRequired(message=failure.message))
            self._fail_message(out, msg, f"authentication required: {failure.message}")
            self._drain_queue(out, "authentication required, queued message dropped")
            return
        out.append(p.Error(command="SendMessage", reason=f"codex turn failed: {failure.message}"))
        self._fail_message(out, msg, f"codex turn failed ({kind}): {failure.message}")

    def _drain_queue(self, out: list[Output], reason: str) -> None:
        for queued in self._queue.drain():
            self._refuse(out, queued, reason, seed_error=False)

    # -- stopping -------------------------------------------------------------

    def _stop_everything(self, out: list[Output], code: int, reason: str, grace: float) -> None:
        if self._closing is not None:
            # Already stopping: a Kill (grace 0) may still hurry a shutdown along.
            if self._turn is not None and grace < self.config.stop_grace_secs:
                out.append(StopTurn(turn_id=self._turn.turn_id, grace_secs=grace))
            return
        self._closing = Exit(code=code, preserve_work=self.config.preserve_work)
        self._drain_queue(out, f"{reason}, queued message dropped")
        if self._turn is None:
            self._finish_closing(out)
            return
        if self._turn.stop_reason is None:
            self._turn.stop_reason = reason
        out.append(StopTurn(turn_id=self._turn.turn_id, grace_secs=grace))

    def _finish_closing(self, out: list[Output]) -> None:
        assert self._closing is not None
        self._set_state(out, p.ShimState.DEAD, "shim exiting")
        self._exited = True
        out.append(self._closing)

    # -- tokens and context ---------------------------------------------------

    def _token_usage(self, usage: cx.TokenUsage, out: list[Output]) -> None:
        reported = _Tokens(
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.reasoning_output_tokens,
        )
        before = self._tokens
        if usage.scope == "turn":
            self._tokens = self._tokens_before_turn.plus(reported)
            share = reported
        else:
            self._tokens = reported
            # A running total that went down belongs to a new thread.
            share = reported if reported.input < before.input else reported.minus(before)
        if usage.last_input_tokens is not None and usage.last_output_tokens is not None:
            self._used_tokens = usage.last_input_tokens + usage.last_output_tokens
        else:
            self._used_tokens = share.input + share.output
        if usage.context_window:
            self._context_window = usage.context_window
        pct = self._usage_pct()
        if pct is None or pct < self.config.context_warn_pct:
            return
        if not self._context_warned:
            self._context_warned = True
            out.append(self._context_warning(pct))
        if not self._approaching_sent:
            self._approaching(out, f"context window {pct}% full")

    def _context_limit(self) -> int | None:
        return self.config.context_limit_tokens or self._context_window

    def _usage_pct(self) -> int | None:
        limit = self._context_limit()
        if not limit:
            return None
        return min(255, self._used_tokens * 100 // limit)

    def _context_warning(self, pct: int) -> p.ContextWarning:
        return p.ContextWarning(
            model=self.config.model,
            output_bytes=self._output_bytes,
            uptime_secs=self._uptime(),
            input_tokens=self._tokens.input,
            cached_input_tokens=self._tokens.cached,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=self._tokens.cached,
            output_tokens=self._tokens.output,
            reasoning_output_tokens=self._tokens.reasoning,
            used_tokens=self._used_tokens,
            context_limit_tokens=self._context_limit() or 0,
            usage_pct=pct,
        )

    def _approaching(self, out: list[Output], message: str) -> None:
        self._approaching_sent = True
        out.append(
            p.ContextApproaching(
                message=message,
                input_tokens=self._tokens.input,
                output_tokens=self._tokens.output,
            )
        )

    # -- helpers --------------------------------------------------------------

    def _set_state(self, out: list[Output], to: p.ShimState, summary: str) -> None:
        if to is self._state:
            return
        out.append(p.StateChanged(from_state=self._state, to=to, summary=summary))
        self._state = to
        self._state_since = self._clock.monotonic()

    def _uptime(self) -> int:
        return int(self._clock.monotonic() - self._started_at)


def _timeout_reason(timeout: float | None) -> str:
    return f"turn timed out after {timeout:g}s" if timeout else "turn timed out"


def _failure_from_outcome(outcome: cx.TurnOutcome) -> cx.Failure | None:
    """A failure the process itself shows: no start, or a bad exit without JSONL."""
    if outcome.spawn_error is not None:
        return cx.Failure(
            cx.FailureKind.OTHER, f"codex could not be started: {outcome.spawn_error}"
        )
    if outcome.completed or outcome.exit_code in (0, None):
        return None
    tail = outcome.stderr_tail.strip() or "(no output on stderr)"
    return cx.Failure(cx.FailureKind.OTHER, f"codex exited with status {outcome.exit_code}: {tail}")
