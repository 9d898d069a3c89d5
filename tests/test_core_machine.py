"""The sans-IO shim core: every rule, example by example, then fuzzed statefully."""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from typing import Literal, TypeVar

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from trio_codex_shim import protocol as p
from trio_codex_shim.codex import events as cx
from trio_codex_shim.core.actions import Exit, StartTurn, StopTurn
from trio_codex_shim.core.machine import (
    EXIT_OK,
    LEGAL_EDGES,
    CoreConfig,
    Output,
    ShimCore,
)
from trio_codex_shim.core.text import format_injected_message

IDLE = p.ShimState.IDLE
WORKING = p.ShimState.WORKING
DEAD = p.ShimState.DEAD
EXHAUSTED = p.ShimState.CONTEXT_EXHAUSTED

T = TypeVar("T")


class FakeClock:
    """A clock the test moves by hand: monotonic seconds and the Unix epoch together."""

    def __init__(self, monotonic: float = 5_000.0, epoch: float = 1_776_000_000.0) -> None:
        self.mono = monotonic
        self.wall = epoch

    def monotonic(self) -> float:
        return self.mono

    def epoch(self) -> float:
        return self.wall

    def advance(self, secs: float) -> None:
        self.mono += secs
        self.wall += secs


def make_core(config: CoreConfig | None = None) -> tuple[ShimCore, FakeClock]:
    clock = FakeClock()
    core = ShimCore(config or CoreConfig(), clock)
    assert core.start() == [p.Ready()]
    return core, clock


def of(outs: Sequence[Output], kind: type[T]) -> list[T]:
    return [o for o in outs if isinstance(o, kind)]


def send(
    core: ShimCore, body: str, mid: str | None = None, sender: str = "manager"
) -> list[Output]:
    return core.command(p.SendMessage(sender=sender, body=body, message_id=mid))


def start_turn(outs: Sequence[Output]) -> StartTurn:
    turns = of(outs, StartTurn)
    assert len(turns) == 1, outs
    return turns[0]


def completed(exit_code: int = 0) -> cx.TurnOutcome:
    return cx.TurnOutcome(exit_code=exit_code, completed=True)


def failed_turn(
    core: ShimCore,
    turn_id: int,
    kind: cx.FailureKind,
    message: str,
    *,
    retry_at_epoch_secs: int | None = None,
    retry_at_label: str | None = None,
) -> list[Output]:
    """Codex reports ``turn.failed`` of ``kind``, then its process exits 1."""
    failure = cx.Failure(kind, message, retry_at_epoch_secs, retry_at_label)
    assert core.codex_event(turn_id, cx.TurnFailed(failure)) == []
    return core.turn_ended(turn_id, cx.TurnOutcome(exit_code=1))


def prompt(body: str, sender: str = "manager") -> str:
    return format_injected_message(sender, body)


def terminal_ids(outs: Sequence[Output]) -> list[str]:
    ids: list[str] = []
    for o in outs:
        if isinstance(o, p.Completion) and o.message_id is not None:
            ids.append(o.message_id)
        elif isinstance(o, p.DeliveryFailed):
            ids.append(o.id)
    return ids


# ---------------------------------------------------------------------------
# Start, simple commands
# ---------------------------------------------------------------------------


def test_ready_first_and_idle() -> None:
    clock = FakeClock()
    core = ShimCore(CoreConfig(), clock)
    assert core.state is p.ShimState.STARTING
    assert core.start() == [p.Ready()]
    assert core.state is IDLE
    assert core.running_turn is None
    assert not core.exited


def test_ping_get_state_resize_capture() -> None:
    core, clock = make_core()
    assert core.command(p.Ping()) == [p.Pong()]
    assert core.command(p.Resize(rows=10, cols=20)) == []
    clock.advance(7.9)
    assert core.command(p.GetState()) == [p.State(state=IDLE, since_secs=7)]
    assert core.command(p.CaptureScreen()) == [
        p.ScreenCapture(content="", cursor_row=0, cursor_col=0)
    ]
    turn = start_turn(send(core, "hi", "m1"))
    clock.advance(3)
    assert core.command(p.GetState()) == [p.State(state=WORKING, since_secs=3)]
    core.codex_event(turn.turn_id, cx.AgentMessage("a\nb\nc\nd"))
    assert core.command(p.CaptureScreen()) == [
        p.ScreenCapture(content="a\nb\nc\nd", cursor_row=0, cursor_col=0)
    ]
    assert core.command(p.CaptureScreen(last_n_lines=2)) == [
        p.ScreenCapture(content="c\nd", cursor_row=0, cursor_col=0)
    ]
    assert core.command(p.CaptureScreen(last_n_lines=0)) == [
        p.ScreenCapture(content="", cursor_row=0, cursor_col=0)
    ]
    assert core.command(p.Ping()) == [p.Pong()]


def test_bad_message_is_an_error_and_nothing_else() -> None:
    core, _ = make_core()
    outs = core.bad_message(p.BadMessage("Resize", "Expected `int` <= 65535 - at `$.rows`"))
    assert outs == [
        p.Error(command="Resize", reason="bad message: Expected `int` <= 65535 - at `$.rows`")
    ]
    assert core.state is IDLE


# ---------------------------------------------------------------------------
# SendMessage, turns, completion, queue
# ---------------------------------------------------------------------------


def test_send_while_idle_starts_a_turn() -> None:
    core, _ = make_core()
    outs = send(core, "Fix the bug", "msg-1")
    assert outs == [
        p.StateChanged(from_state=IDLE, to=WORKING, summary=""),
        p.MessageDelivered(id="msg-1"),
        StartTurn(turn_id=1, prompt=prompt("Fix the bug"), thread_id=None),
    ]
    assert isinstance(outs[2], StartTurn)
    assert outs[2].prompt == (
        "--- Message from manager ---\n"
        "Reply-To: manager\n"
        'If you need to reply, use: batty send manager "<your reply>"\n'
        "\n"
        "Fix the bug"
    )
    assert core.state is WORKING
    assert core.running_turn == 1


def test_send_without_id_has_no_delivery_event() -> None:
    core, _ = make_core()
    outs = send(core, "hello", None, sender="architect")
    assert outs == [
        p.StateChanged(from_state=IDLE, to=WORKING, summary=""),
        StartTurn(turn_id=1, prompt=prompt("hello", "architect"), thread_id=None),
    ]


def test_completion_reports_response_and_last_five_lines() -> None:
    core, _ = make_core()
    turn = start_turn(send(core, "go", "m1"))
    response = "\n".join(f"line {i}" for i in range(1, 8))
    assert core.codex_event(turn.turn_id, cx.AgentMessage("draft")) == []
    assert core.codex_event(turn.turn_id, cx.AgentMessage(response)) == []
    outs = core.turn_ended(turn.turn_id, completed())
    summary = "line 3\nline 4\nline 5\nline 6\nline 7"
    assert outs == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary=summary),
        p.Completion(message_id="m1", response=response, last_lines=summary),
    ]
    assert core.state is IDLE
    assert core.running_turn is None


def test_completion_without_id_and_without_text() -> None:
    core, _ = make_core()
    turn = start_turn(send(core, "go"))
    outs = core.turn_ended(turn.turn_id, cx.TurnOutcome(exit_code=0))
    assert outs == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary=""),
        p.Completion(message_id=None, response="", last_lines=""),
    ]


def test_thread_id_is_kept_and_resumed() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "one", "m1"))
    assert t1.thread_id is None
    core.codex_event(t1.turn_id, cx.ThreadStarted("01a20fa3-570f-7d70-9d62-4eaf31dd5da1"))
    assert core.thread_id == "01a20fa3-570f-7d70-9d62-4eaf31dd5da1"
    core.turn_ended(t1.turn_id, completed())
    t2 = start_turn(send(core, "two", "m2"))
    assert t2 == StartTurn(
        turn_id=2, prompt=prompt("two"), thread_id="01a20fa3-570f-7d70-9d62-4eaf31dd5da1"
    )
    # The response of a new turn starts empty.
    assert core.command(p.CaptureScreen()) == [
        p.ScreenCapture(content="", cursor_row=0, cursor_col=0)
    ]


def test_messages_queue_while_working_with_depth_warning() -> None:
    core, _ = make_core()
    start_turn(send(core, "first", "m1"))
    assert send(core, "second", "m2") == [
        p.Warning(message="message queued while agent working (depth: 1)", idle_secs=None)
    ]
    assert send(core, "third") == [
        p.Warning(message="message queued while agent working (depth: 2)")
    ]
    assert core.queued == 2
    assert core.running_turn == 1


def test_next_queued_message_starts_after_completion() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "first", "m1"))
    core.codex_event(t1.turn_id, cx.ThreadStarted("thread-1"))
    send(core, "second", "m2")
    send(core, "third", "m3")
    core.codex_event(t1.turn_id, cx.AgentMessage("done 1"))
    outs = core.turn_ended(t1.turn_id, completed())
    assert outs == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary="done 1"),
        p.Completion(message_id="m1", response="done 1", last_lines="done 1"),
        p.StateChanged(
            from_state=IDLE, to=WORKING, summary="delivering queued message (1 remaining)"
        ),
        p.MessageDelivered(id="m2"),
        StartTurn(turn_id=2, prompt=prompt("second"), thread_id="thread-1"),
    ]
    assert core.queued == 1
    # The second turn's response replaces the first's.
    assert core.command(p.CaptureScreen()) == [
        p.ScreenCapture(content="", cursor_row=0, cursor_col=0)
    ]
    outs = core.turn_ended(2, completed())
    assert [o for o in outs if not isinstance(o, p.StateChanged)] == [
        p.Completion(message_id="m2", response="", last_lines=""),
        p.MessageDelivered(id="m3"),
        StartTurn(turn_id=3, prompt=prompt("third"), thread_id="thread-1"),
    ]
    outs = core.turn_ended(3, completed())
    assert outs == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary=""),
        p.Completion(message_id="m3", response="", last_lines=""),
    ]
    assert core.state is IDLE


def test_queue_overflow_drops_the_oldest() -> None:
    core, _ = make_core(CoreConfig(queue_depth=2))
    t1 = start_turn(send(core, "running", "m1"))
    send(core, "q2", "m2")
    send(core, "q3", "m3")
    outs = send(core, "q4", "m4")
    failed = of(outs, p.DeliveryFailed)
    assert [f.id for f in failed] == ["m2"]
    assert "queue full" in failed[0].reason
    assert "dropped oldest" in failed[0].reason
    assert outs[-1] == p.Warning(message="message queued while agent working (depth: 2)")
    assert of(outs, StartTurn) == []
    assert core.queued == 2
    # Then m3 and m4 run, in order.
    assert start_turn(core.turn_ended(t1.turn_id, completed())).prompt == prompt("q3")
    assert start_turn(core.turn_ended(2, completed())).prompt == prompt("q4")


def test_queue_overflow_of_a_message_without_id_is_an_error() -> None:
    core, _ = make_core(CoreConfig(queue_depth=1))
    start_turn(send(core, "running", "m1"))
    send(core, "anonymous")
    outs = send(core, "newer", "m3")
    errors = of(outs, p.Error)
    assert len(errors) == 1
    assert errors[0].command == "SendMessage"
    assert "queue full" in errors[0].reason
    assert of(outs, p.DeliveryFailed) == []
    assert start_turn(core.turn_ended(1, completed())).prompt == prompt("newer")


# ---------------------------------------------------------------------------
# Kill and Shutdown
# ---------------------------------------------------------------------------


def test_kill_while_idle_exits_at_once() -> None:
    core, _ = make_core()
    outs = core.command(p.Kill())
    assert outs == [
        p.StateChanged(from_state=IDLE, to=DEAD, summary="shim exiting"),
        Exit(code=EXIT_OK, preserve_work=False),
    ]
    assert core.exited
    assert core.state is DEAD
    # Anything later is refused, and nothing exits twice.
    assert core.command(p.Kill()) == []
    assert core.command(p.Shutdown(timeout_secs=1)) == []
    assert core.command(p.Ping()) == [p.Pong()]
    assert core.tick() == []


def test_kill_with_a_running_turn() -> None:
    core, _ = make_core(CoreConfig(preserve_work=True))
    t1 = start_turn(send(core, "running", "m1"))
    send(core, "queued", "m2")
    send(core, "queued, no id")
    outs = core.command(p.Kill())
    assert StopTurn(turn_id=t1.turn_id, grace_secs=0.0) in outs
    assert terminal_ids(outs) == ["m2"]
    assert [e.command for e in of(outs, p.Error)] == ["SendMessage"]
    assert of(outs, Exit) == []
    assert of(outs, p.StateChanged) == []
    assert not core.exited
    assert core.running_turn == t1.turn_id
    # A message arriving while stopping is refused at once.
    late = send(core, "late", "m4")
    assert terminal_ids(late) == ["m4"]
    assert of(late, StartTurn) == []

    outs = core.turn_ended(t1.turn_id, cx.TurnOutcome(stopped=True, exit_code=-15))
    assert terminal_ids(outs) == ["m1"]
    assert "stopped" in of(outs, p.DeliveryFailed)[0].reason
    assert "killed" in of(outs, p.DeliveryFailed)[0].reason
    assert of(outs, p.Completion) == []
    assert of(outs, StartTurn) == []
    changes = of(outs, p.StateChanged)
    assert changes[-1].to is DEAD
    assert outs[-1] == Exit(code=EXIT_OK, preserve_work=True)
    assert core.exited
    assert core.state is DEAD


def test_kill_goes_from_working_straight_to_dead() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "running", "m1"))
    core.command(p.Kill())
    outs = core.turn_ended(t1.turn_id, cx.TurnOutcome(stopped=True))
    assert of(outs, p.StateChanged) == [
        p.StateChanged(from_state=WORKING, to=DEAD, summary="shim exiting")
    ]


def test_shutdown_with_grace_lets_the_turn_complete() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "running", "m1"))
    send(core, "queued", "m2")
    outs = core.command(p.Shutdown(timeout_secs=30, reason=p.ShutdownReason.RESTART_HANDOFF))
    assert StopTurn(turn_id=t1.turn_id, grace_secs=30.0) in outs
    assert terminal_ids(outs) == ["m2"]
    assert of(outs, Exit) == []
    core.codex_event(t1.turn_id, cx.AgentMessage("all done"))
    outs = core.turn_ended(t1.turn_id, completed())
    assert outs == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary="all done"),
        p.Completion(message_id="m1", response="all done", last_lines="all done"),
        p.StateChanged(from_state=IDLE, to=DEAD, summary="shim exiting"),
        Exit(code=EXIT_OK, preserve_work=False),
    ]
    assert core.exited


def test_kill_after_shutdown_hurries_the_stop() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "running", "m1"))
    core.command(p.Shutdown(timeout_secs=30))
    assert core.command(p.Kill()) == [StopTurn(turn_id=t1.turn_id, grace_secs=0.0)]
    outs = core.turn_ended(t1.turn_id, cx.TurnOutcome(stopped=True))
    assert terminal_ids(outs) == ["m1"]
    assert len(of(outs, Exit)) == 1


def test_shutdown_in_context_exhausted_state() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "running", "m1"))
    failed_turn(core, t1.turn_id, cx.FailureKind.CONTEXT_WINDOW, "context window exceeded")
    outs = core.command(p.Shutdown(timeout_secs=0))
    assert outs == [
        p.StateChanged(from_state=EXHAUSTED, to=DEAD, summary="shim exiting"),
        Exit(code=EXIT_OK, preserve_work=False),
    ]


def test_peer_lost_stops_like_shutdown_with_its_code() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "running", "m1"))
    outs = core.peer_lost(3, 5.0)
    assert outs == [StopTurn(turn_id=t1.turn_id, grace_secs=5.0)]
    outs = core.turn_ended(t1.turn_id, cx.TurnOutcome(stopped=True))
    assert terminal_ids(outs) == ["m1"]
    assert outs[-1] == Exit(code=3, preserve_work=False)


def test_turn_timeout_fails_the_message_and_moves_on() -> None:
    core, _ = make_core(CoreConfig(turn_timeout_secs=600))
    t1 = start_turn(send(core, "slow", "m1"))
    send(core, "next", "m2")
    outs = core.turn_ended(t1.turn_id, cx.TurnOutcome(stopped=True))
    failed = of(outs, p.DeliveryFailed)
    assert [f.id for f in failed] == ["m1"]
    assert "timed out after 600s" in failed[0].reason
    assert start_turn(outs).prompt == prompt("next")
    assert core.state is WORKING
    assert [(c.from_state, c.to) for c in of(outs, p.StateChanged)] == [
        (WORKING, IDLE),
        (IDLE, WORKING),
    ]


# ---------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------


def test_context_window_failure_exhausts_the_agent() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "big", "m1"))
    send(core, "queued", "m2")
    send(core, "queued, no id")
    core.codex_event(t1.turn_id, cx.AgentMessage("partial\nanswer"))
    msg = "Codex ran out of room in the model's context window."
    outs = failed_turn(core, t1.turn_id, cx.FailureKind.CONTEXT_WINDOW, msg)
    assert outs[:2] == [
        p.StateChanged(from_state=WORKING, to=EXHAUSTED, summary="partial\nanswer"),
        p.ContextExhausted(message=msg, last_lines="partial\nanswer"),
    ]
    assert terminal_ids(outs) == ["m1", "m2"]
    assert of(outs, StartTurn) == []
    assert core.state is EXHAUSTED
    assert core.queued == 0
    # Refused from now on.
    outs = send(core, "more", "m4")
    assert of(outs, StartTurn) == []
    assert terminal_ids(outs) == ["m4"]
    errors = of(outs, p.Error)
    assert len(errors) == 1
    assert errors[0].command == "SendMessage"
    assert "context_exhausted" in errors[0].reason
    outs = send(core, "more, no id")
    assert [type(o) for o in outs] == [p.Error]


def test_usage_limit_blocks_until_the_retry_time() -> None:
    core, clock = make_core()
    retry_at = int(clock.epoch()) + 100
    t1 = start_turn(send(core, "work", "m1"))
    send(core, "queued", "m2")
    msg = "You've hit your usage limit. Try again at 4:29 AM."
    outs = failed_turn(
        core,
        t1.turn_id,
        cx.FailureKind.USAGE_LIMIT,
        msg,
        retry_at_epoch_secs=retry_at,
        retry_at_label="2026-04-16 04:29",
    )
    quota = p.QuotaBlocked(
        message=msg, retry_at_epoch_secs=retry_at, retry_at_label="2026-04-16 04:29"
    )
    assert outs[0] == quota
    assert terminal_ids(outs) == ["m1", "m2"]
    assert of(outs, StartTurn) == []
    assert core.state is IDLE

    clock.advance(99)
    outs = send(core, "too early", "m3")
    assert outs[0] == quota
    assert terminal_ids(outs) == ["m3"]
    assert of(outs, StartTurn) == []
    assert of(outs, p.StateChanged) == []
    assert core.state is IDLE
    outs = send(core, "too early, no id")
    assert outs[0] == quota
    assert of(outs, StartTurn) == []
    assert len(of(outs, p.Error)) == 1

    clock.advance(1)
    outs = send(core, "now", "m4")
    assert start_turn(outs).prompt == prompt("now")
    assert of(outs, p.QuotaBlocked) == []
    assert of(outs, p.DeliveryFailed) == []


def test_usage_limit_without_retry_time_keeps_blocking() -> None:
    core, clock = make_core()
    t1 = start_turn(send(core, "work", "m1"))
    outs = failed_turn(core, t1.turn_id, cx.FailureKind.USAGE_LIMIT, "quota exceeded")
    assert outs[0] == p.QuotaBlocked(message="quota exceeded")
    clock.advance(60)
    outs = send(core, "later", "m2")
    assert outs[0] == p.QuotaBlocked(message="quota exceeded")
    assert of(outs, StartTurn) == []


def test_auth_failure_asks_for_login_and_stays_usable() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "work", "m1"))
    send(core, "queued", "m2")
    outs = failed_turn(core, t1.turn_id, cx.FailureKind.AUTH, "401 Unauthorized")
    assert outs[0] == p.AuthRequired(message="401 Unauthorized")
    assert terminal_ids(outs) == ["m1", "m2"]
    assert of(outs, StartTurn) == []
    assert core.state is IDLE
    assert start_turn(send(core, "again", "m3")).prompt == prompt("again")


@pytest.mark.parametrize(
    "kind", [cx.FailureKind.OTHER, cx.FailureKind.RATE_LIMIT, cx.FailureKind.OVERLOADED]
)
def test_other_failures_are_an_error_and_the_queue_goes_on(kind: cx.FailureKind) -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "work", "m1"))
    send(core, "queued", "m2")
    outs = failed_turn(core, t1.turn_id, kind, "stream disconnected")
    errors = of(outs, p.Error)
    assert len(errors) == 1
    assert errors[0].command == "SendMessage"
    assert "stream disconnected" in errors[0].reason
    assert terminal_ids(outs) == ["m1"]
    assert kind.value in of(outs, p.DeliveryFailed)[0].reason
    assert start_turn(outs).prompt == prompt("queued")
    assert core.state is WORKING


def test_thread_not_found_retries_once_on_a_fresh_thread() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "one", "m1"))
    core.codex_event(t1.turn_id, cx.ThreadStarted("old-thread"))
    core.turn_ended(t1.turn_id, completed())
    t2 = start_turn(send(core, "two", "m2"))
    assert t2.thread_id == "old-thread"
    outs = core.turn_ended(
        t2.turn_id,
        cx.TurnOutcome(exit_code=1, stderr_tail="Error: thread not found"),
    )
    # Without a classified failure this is a plain error, not a retry.
    assert terminal_ids(outs) == ["m2"]

    t3 = start_turn(send(core, "three", "m3"))
    outs = failed_turn(core, t3.turn_id, cx.FailureKind.THREAD_NOT_FOUND, "no rollout found")
    warnings = of(outs, p.Warning)
    assert len(warnings) == 1
    assert "old-thread" in warnings[0].message
    assert outs[-1] == StartTurn(turn_id=t3.turn_id + 1, prompt=prompt("three"), thread_id=None)
    assert terminal_ids(outs) == []
    assert of(outs, p.StateChanged) == []
    assert of(outs, p.MessageDelivered) == []
    assert core.thread_id is None
    assert core.state is WORKING

    # A second thread-not-found on the retry is not retried again.
    outs = failed_turn(core, t3.turn_id + 1, cx.FailureKind.THREAD_NOT_FOUND, "no rollout found")
    assert of(outs, StartTurn) == []
    assert terminal_ids(outs) == ["m3"]
    assert len(of(outs, p.Error)) == 1
    assert core.state is IDLE


def test_thread_not_found_retry_can_complete() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "one", "m1"))
    core.codex_event(t1.turn_id, cx.ThreadStarted("old"))
    outs = failed_turn(core, t1.turn_id, cx.FailureKind.THREAD_NOT_FOUND, "thread not found")
    retry = start_turn(outs)
    core.codex_event(retry.turn_id, cx.ThreadStarted("new"))
    core.codex_event(retry.turn_id, cx.AgentMessage("ok"))
    outs = core.turn_ended(retry.turn_id, completed())
    assert outs == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary="ok"),
        p.Completion(message_id="m1", response="ok", last_lines="ok"),
    ]
    assert core.thread_id == "new"


def test_thread_not_found_is_not_retried_while_shutting_down() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "one", "m1"))
    core.command(p.Shutdown(timeout_secs=10))
    outs = failed_turn(core, t1.turn_id, cx.FailureKind.THREAD_NOT_FOUND, "thread not found")
    assert of(outs, StartTurn) == []
    assert terminal_ids(outs) == ["m1"]
    assert outs[-1] == Exit(code=EXIT_OK, preserve_work=False)


def test_nonzero_exit_without_jsonl_carries_the_stderr_tail() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "x", "m1"))
    outs = core.turn_ended(
        t1.turn_id, cx.TurnOutcome(exit_code=2, stderr_tail="warning\nfatal: boom\n")
    )
    errors = of(outs, p.Error)
    assert len(errors) == 1
    assert "exited with status 2" in errors[0].reason
    assert "fatal: boom" in errors[0].reason
    failed = of(outs, p.DeliveryFailed)
    assert [f.id for f in failed] == ["m1"]
    assert "fatal: boom" in failed[0].reason
    assert core.state is IDLE

    t2 = start_turn(send(core, "y", "m2"))
    outs = core.turn_ended(t2.turn_id, cx.TurnOutcome(exit_code=1, stderr_tail="  \n"))
    assert "(no output on stderr)" in of(outs, p.Error)[0].reason


def test_spawn_error() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "x", "m1"))
    send(core, "queued", "m2")
    outs = core.turn_ended(
        t1.turn_id, cx.TurnOutcome(spawn_error="codex: No such file or directory")
    )
    errors = of(outs, p.Error)
    assert len(errors) == 1
    assert "could not be started" in errors[0].reason
    assert "No such file or directory" in errors[0].reason
    assert terminal_ids(outs) == ["m1"]
    assert start_turn(outs).prompt == prompt("queued")


def test_exit_zero_without_turn_completed_counts_as_completion() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "x", "m1"))
    outs = core.turn_ended(t1.turn_id, cx.TurnOutcome(exit_code=0))
    assert terminal_ids(outs) == ["m1"]
    assert len(of(outs, p.Completion)) == 1


# ---------------------------------------------------------------------------
# Tokens, context, stats
# ---------------------------------------------------------------------------


def usage(
    scope: Literal["turn", "thread"],
    inp: int,
    out: int,
    *,
    last_in: int = 0,
    last_out: int = 0,
    window: int | None = None,
    cached: int = 0,
    reasoning: int = 0,
) -> cx.TokenUsage:
    return cx.TokenUsage(
        scope=scope,
        input_tokens=inp,
        cached_input_tokens=cached,
        output_tokens=out,
        reasoning_output_tokens=reasoning,
        last_input_tokens=last_in,
        last_output_tokens=last_out,
        context_window=window,
    )


def stats(core: ShimCore) -> p.SessionStats:
    (s,) = core.tick()
    assert isinstance(s, p.SessionStats)
    return s


def test_turn_scoped_tokens_accumulate_across_turns() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "1"))
    core.codex_event(t1.turn_id, usage("turn", 50, 5))
    core.codex_event(t1.turn_id, usage("turn", 100, 10))  # a later figure for the same turn
    assert (stats(core).input_tokens, stats(core).output_tokens) == (100, 10)
    core.turn_ended(t1.turn_id, completed())
    t2 = start_turn(send(core, "2"))
    core.codex_event(t2.turn_id, usage("turn", 200, 20))
    assert (stats(core).input_tokens, stats(core).output_tokens) == (300, 30)
    core.turn_ended(t2.turn_id, completed())
    assert (stats(core).input_tokens, stats(core).output_tokens) == (300, 30)


def test_thread_scoped_tokens_replace() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "1"))
    core.codex_event(t1.turn_id, usage("thread", 100, 10))
    core.turn_ended(t1.turn_id, completed())
    t2 = start_turn(send(core, "2"))
    core.codex_event(t2.turn_id, usage("thread", 300, 30))
    core.turn_ended(t2.turn_id, completed())
    assert (stats(core).input_tokens, stats(core).output_tokens) == (300, 30)


def test_context_warning_once_at_the_warn_pct() -> None:
    core, clock = make_core(
        CoreConfig(model="gpt-5.5", context_limit_tokens=1000, context_warn_pct=80)
    )
    t1 = start_turn(send(core, "1"))
    core.codex_event(t1.turn_id, cx.OutputProduced(123))
    clock.advance(42)
    assert core.codex_event(t1.turn_id, usage("turn", 700, 50, last_in=740, last_out=59)) == []
    outs = core.codex_event(
        t1.turn_id,
        usage("turn", 790, 20, last_in=790, last_out=10, cached=300, reasoning=4),
    )
    assert outs == [
        p.ContextWarning(
            model="gpt-5.5",
            output_bytes=123,
            uptime_secs=42,
            input_tokens=790,
            cached_input_tokens=300,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=300,
            output_tokens=20,
            reasoning_output_tokens=4,
            used_tokens=800,
            context_limit_tokens=1000,
            usage_pct=80,
        ),
        p.ContextApproaching(message="context window 80% full", input_tokens=790, output_tokens=20),
    ]
    assert core.codex_event(t1.turn_id, usage("turn", 950, 20, last_in=950, last_out=20)) == []
    assert stats(core).context_usage_pct == 97


def test_context_window_from_codex_when_not_configured() -> None:
    core, _ = make_core(CoreConfig(context_warn_pct=50))
    t1 = start_turn(send(core, "1"))
    assert stats(core).context_usage_pct is msgspec.UNSET
    outs = core.codex_event(
        t1.turn_id, usage("thread", 10, 1, last_in=600, last_out=0, window=1000)
    )
    warnings = of(outs, p.ContextWarning)
    assert len(warnings) == 1
    assert warnings[0].context_limit_tokens == 1000
    assert warnings[0].usage_pct == 60
    assert warnings[0].model is None
    assert stats(core).context_usage_pct == 60


def test_context_approaching_from_agent_text_once() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "1"))
    core.codex_event(t1.turn_id, usage("turn", 11, 3))
    assert core.codex_event(t1.turn_id, cx.AgentMessage("all fine")) == []
    outs = core.codex_event(t1.turn_id, cx.AgentMessage("Note: the Context Window is approaching"))
    assert outs == [
        p.ContextApproaching(
            message="agent output contains context-pressure signals",
            input_tokens=11,
            output_tokens=3,
        )
    ]
    assert core.codex_event(t1.turn_id, cx.AgentMessage("running low on context")) == []


def test_stats_tick() -> None:
    core, clock = make_core()
    assert core.tick() == [p.SessionStats(output_bytes=0, uptime_secs=0)]
    t1 = start_turn(send(core, "1"))
    core.codex_event(t1.turn_id, cx.OutputProduced(100))
    core.codex_event(t1.turn_id, cx.OutputProduced(20))
    core.codex_event(t1.turn_id, usage("turn", 7, 2))
    clock.advance(10.5)
    assert core.tick() == [
        p.SessionStats(output_bytes=120, uptime_secs=10, input_tokens=7, output_tokens=2)
    ]
    core.command(p.Kill())
    core.turn_ended(t1.turn_id, cx.TurnOutcome(stopped=True))
    assert core.tick() == []


def test_notice_and_stall_warnings() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "1"))
    assert core.codex_event(t1.turn_id, cx.Notice("odd thread id")) == [
        p.Warning(message="odd thread id", idle_secs=None)
    ]
    (stall,) = core.stalled(t1.turn_id, 30)
    assert isinstance(stall, p.Warning)
    assert stall.idle_secs == 30
    assert "30s" in stall.message


def test_stragglers_from_an_old_turn_are_ignored() -> None:
    core, _ = make_core()
    t1 = start_turn(send(core, "1", "m1"))
    core.codex_event(t1.turn_id, cx.ThreadStarted("thread-a"))
    core.turn_ended(t1.turn_id, completed())
    t2 = start_turn(send(core, "2", "m2"))
    old = t1.turn_id
    assert core.codex_event(old, cx.AgentMessage("late text")) == []
    assert core.codex_event(old, cx.ThreadStarted("thread-b")) == []
    assert core.codex_event(old, cx.OutputProduced(999)) == []
    assert core.codex_event(old, usage("turn", 10**6, 10**6, last_in=10**6)) == []
    assert core.codex_event(old, cx.TurnFailed(cx.Failure(cx.FailureKind.AUTH, "x"))) == []
    assert core.codex_event(old, cx.Notice("late")) == []
    assert core.stalled(old, 10) == []
    assert core.turn_ended(old, completed()) == []
    assert core.turn_ended(t2.turn_id + 5, completed()) == []
    assert core.thread_id == "thread-a"
    assert core.running_turn == t2.turn_id
    assert core.tick() == [p.SessionStats(output_bytes=0, uptime_secs=0)]
    assert core.command(p.CaptureScreen()) == [
        p.ScreenCapture(content="", cursor_row=0, cursor_col=0)
    ]
    # The running turn's own end still works.
    assert terminal_ids(core.turn_ended(t2.turn_id, completed())) == ["m2"]
    assert core.turn_ended(t2.turn_id, completed()) == []


def test_refused_while_dead() -> None:
    core, _ = make_core()
    core.command(p.Kill())
    outs = send(core, "anyone?", "m1")
    assert terminal_ids(outs) == ["m1"]
    assert [e.command for e in of(outs, p.Error)] == ["SendMessage"]
    assert of(outs, StartTurn) == []
    assert core.state is DEAD


# ---------------------------------------------------------------------------
# Stateful fuzzing of the core alone
# ---------------------------------------------------------------------------

_SEQ = re.compile(r"#(\d+)$")
FAILURE_KINDS = list(cx.FailureKind)
CODEX_EVENTS: st.SearchStrategy[cx.CodexEvent] = st.one_of(
    st.builds(cx.ThreadStarted, st.sampled_from(["t-1", "t-2", "0199-abc"])),
    st.builds(
        cx.AgentMessage,
        st.sampled_from(["ok", "a\nb\nc\nd\ne\nf", "running low on context", ""]),
    ),
    st.builds(cx.OutputProduced, st.integers(0, 5000)),
    st.builds(
        cx.TokenUsage,
        scope=st.sampled_from(["turn", "thread"]),
        input_tokens=st.integers(0, 10_000),
        cached_input_tokens=st.integers(0, 1000),
        output_tokens=st.integers(0, 1000),
        reasoning_output_tokens=st.integers(0, 100),
        last_input_tokens=st.none() | st.integers(0, 10_000),
        last_output_tokens=st.none() | st.integers(0, 1000),
        context_window=st.none() | st.integers(1, 12_000),
    ),
    st.builds(cx.Notice, st.just("notice")),
)


OUTCOMES: st.SearchStrategy[str | cx.FailureKind] = st.sampled_from(
    ["completed", "completed", "exit-0", "stopped", "spawn-error", "crashed"]
) | st.sampled_from([*FAILURE_KINDS, cx.FailureKind.THREAD_NOT_FOUND])


class CoreMachine(RuleBasedStateMachine):
    """Drives a :class:`ShimCore` and checks the protocol's promises after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.core = ShimCore(CoreConfig(queue_depth=3, context_limit_tokens=None), self.clock)
        self.seq = 0
        self.sent_ids: list[str] = []
        self.terminal: collections.Counter[str] = collections.Counter()
        self.delivered: collections.Counter[str] = collections.Counter()
        self.pings = 0
        self.pongs = 0
        self.state = p.ShimState.STARTING
        self.turn: int | None = None  # the StartTurn not yet ended
        self.last_turn_id = 0
        self.last_seq = 0
        self.starts_per_seq: collections.Counter[int] = collections.Counter()
        self.expected_thread: str | None = None
        self.exits = 0

    # -- bookkeeping -----------------------------------------------------------

    def feed(self, outs: list[Output]) -> None:
        for i, out in enumerate(outs):
            assert self.exits == 0 or isinstance(
                out, (p.Pong, p.State, p.ScreenCapture, p.Error, p.DeliveryFailed, p.QuotaBlocked)
            ), out
            if isinstance(out, p.StateChanged):
                assert out.from_state is self.state, (out, self.state)
                assert (out.from_state, out.to) in LEGAL_EDGES, out
                self.state = out.to
            elif isinstance(out, p.Ready):
                assert self.state is p.ShimState.STARTING
                self.state = IDLE
            elif isinstance(out, StartTurn):
                assert self.turn is None, "a second turn started while one runs"
                assert out.turn_id > self.last_turn_id
                self.turn = self.last_turn_id = out.turn_id
                m = _SEQ.search(out.prompt)
                assert m is not None
                seq = int(m[1])
                self.starts_per_seq[seq] += 1
                assert self.starts_per_seq[seq] <= 2, "thread-not-found retried more than once"
                if seq == self.last_seq:
                    # the thread-not-found retry: right after a Warning, on a fresh thread
                    assert i > 0
                    assert isinstance(outs[i - 1], p.Warning)
                    assert out.thread_id is None
                    self.expected_thread = None
                else:
                    assert seq > self.last_seq, "messages started out of order"
                    assert out.thread_id == self.expected_thread
                self.last_seq = seq
            elif isinstance(out, StopTurn):
                assert out.turn_id == self.turn
            elif isinstance(out, Exit):
                assert self.turn is None, "Exit while a turn runs"
                assert self.core.running_turn is None
                self.exits += 1
            elif isinstance(out, p.Pong):
                self.pongs += 1
            elif isinstance(out, p.MessageDelivered):
                assert out.id in self.sent_ids
                assert self.terminal[out.id] == 0
                self.delivered[out.id] += 1
                assert self.delivered[out.id] == 1
            elif isinstance(out, p.Completion) and out.message_id is not None:
                assert self.delivered[out.message_id] == 1
                self.terminal[out.message_id] += 1
            elif isinstance(out, p.DeliveryFailed):
                assert out.id in self.sent_ids
                self.terminal[out.id] += 1

    # -- rules -----------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.feed(self.core.start())

    def _send(self, mid: str | None) -> None:
        waiting = [i for i in self.sent_ids if not self.terminal[i] and not self.delivered[i]]
        if mid is not None:
            self.sent_ids.append(mid)
        outs = send(self.core, f"body #{self.seq}", mid)
        for out in outs:
            if isinstance(out, p.DeliveryFailed) and "queue full" in out.reason:
                # the queue makes room by dropping its oldest message, never the new one
                assert waiting, out
                assert out.id == waiting[0], (out, waiting)
        self.feed(outs)

    @rule()
    def send_with_id(self) -> None:
        self.seq += 1
        self._send(f"m{self.seq}")

    @rule()
    def send_without_id(self) -> None:
        self.seq += 1
        self._send(None)

    @rule(query=st.sampled_from(["ping", "state", "capture", "capture-2", "resize"]))
    def query(self, query: str) -> None:
        if query == "ping":
            self.pings += 1
            outs = self.core.command(p.Ping())
            assert outs == [p.Pong()]
        elif query == "state":
            outs = self.core.command(p.GetState())
            assert len(outs) == 1
            assert isinstance(outs[0], p.State)
            assert outs[0].state is self.state
        elif query == "resize":
            outs = self.core.command(p.Resize(rows=24, cols=80))
            assert outs == []
        else:
            n = 2 if query == "capture-2" else None
            outs = self.core.command(p.CaptureScreen(last_n_lines=n))
            assert len(outs) == 1
            assert isinstance(outs[0], p.ScreenCapture)
        self.feed(outs)

    @precondition(lambda self: self.turn is not None)
    @rule(events=st.lists(CODEX_EVENTS, min_size=1, max_size=4))
    def codex_events(self, events: list[cx.CodexEvent]) -> None:
        for event in events:
            assert self.turn is not None
            if isinstance(event, cx.ThreadStarted):
                self.expected_thread = event.thread_id
            self.feed(self.core.codex_event(self.turn, event))

    @precondition(lambda self: self.last_turn_id > 0)
    @rule(event=CODEX_EVENTS)
    def straggler(self, event: cx.CodexEvent) -> None:
        old = self.last_turn_id - 1 if self.turn == self.last_turn_id else self.last_turn_id
        assert self.core.codex_event(old, event) == []
        assert self.core.stalled(old, 5) == []
        assert self.core.turn_ended(old, completed()) == []

    @precondition(lambda self: self.turn is not None)
    @rule(outcome=OUTCOMES, retry_in=st.sampled_from([None, -5, 0, 5, 20, 60]))
    def end_turn(self, outcome: str | cx.FailureKind, retry_in: int | None) -> None:
        turn = self.turn
        assert turn is not None
        if isinstance(outcome, cx.FailureKind):
            retry_at = None if retry_in is None else int(self.clock.epoch()) + retry_in
            failure = cx.Failure(outcome, f"{outcome} happened", retry_at)
            self.feed(self.core.codex_event(turn, cx.TurnFailed(failure)))
            result = cx.TurnOutcome(exit_code=1, stderr_tail="err")
        elif outcome == "completed":
            result = cx.TurnOutcome(exit_code=0, completed=True)
        elif outcome == "exit-0":
            result = cx.TurnOutcome(exit_code=0)
        elif outcome == "stopped":
            result = cx.TurnOutcome(stopped=True, exit_code=-15)
        elif outcome == "spawn-error":
            result = cx.TurnOutcome(spawn_error="ENOENT")
        else:
            result = cx.TurnOutcome(exit_code=101, stderr_tail="panic")
        self.turn = None
        self.feed(self.core.turn_ended(turn, result))

    @precondition(lambda self: self.turn is not None)
    @rule()
    def lose_thread(self) -> None:
        """Codex no longer knows the thread (weighted: it is the one retry path)."""
        self.end_turn(cx.FailureKind.THREAD_NOT_FOUND, None)

    @precondition(lambda self: self.turn is not None)
    @rule(idle=st.integers(1, 100))
    def stall(self, idle: int) -> None:
        assert self.turn is not None
        outs = self.core.stalled(self.turn, idle)
        assert len(outs) == 1
        assert isinstance(outs[0], p.Warning)
        assert outs[0].idle_secs == idle
        self.feed(outs)

    @rule(secs=st.sampled_from([0.0, 1.0, 10.0, 61.0]))
    def tick(self, secs: float) -> None:
        self.clock.advance(secs)
        outs = self.core.tick()
        assert len(outs) == (0 if self.core.exited else 1)
        self.feed(outs)

    @rule(
        how=st.sampled_from(["kill", "shutdown-0", "shutdown-30", "peer-lost"]),
        now=st.integers(0, 3),
    )
    def stop(self, how: str, now: int) -> None:
        if now:
            return  # most draws keep the shim alive, so runs get long enough to matter
        if how == "kill":
            outs = self.core.command(p.Kill())
        elif how == "shutdown-0":
            outs = self.core.command(p.Shutdown(timeout_secs=0))
        elif how == "shutdown-30":
            outs = self.core.command(
                p.Shutdown(timeout_secs=30, reason=p.ShutdownReason.RESTART_HANDOFF)
            )
        else:
            outs = self.core.peer_lost(3, 1.0)
        self.feed(outs)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def pings_answered(self) -> None:
        assert self.pongs == self.pings

    @invariant()
    def at_most_one_outcome(self) -> None:
        assert all(n <= 1 for n in self.terminal.values()), self.terminal

    @invariant()
    def exactly_one_outcome_once_exited(self) -> None:
        if self.core.exited:
            assert self.exits == 1
            missing = [i for i in self.sent_ids if self.terminal[i] != 1]
            assert not missing, missing
            assert self.state is DEAD

    @invariant()
    def dead_only_when_exited(self) -> None:
        assert (self.state is DEAD) == self.core.exited

    @invariant()
    def views_agree(self) -> None:
        assert self.core.state is self.state
        assert self.core.running_turn == self.turn
        if self.turn is None:
            assert self.core.queued == 0 or self.state is not IDLE

    def teardown(self) -> None:
        # Finish the run: Kill, end whatever turn runs, and every id is settled.
        self.feed(self.core.command(p.Kill()))
        if self.turn is not None:
            turn, self.turn = self.turn, None
            self.feed(self.core.turn_ended(turn, cx.TurnOutcome(stopped=True)))
        assert self.core.exited
        assert self.exits == 1
        assert all(self.terminal[i] == 1 for i in self.sent_ids), self.terminal


CoreMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoreMachine = CoreMachine.TestCase
