"""``--on-busy steer``: the core's rules (sans-IO) and the service's plumbing.

A message arriving during a turn becomes a :class:`SteerTurn`; when the
backend reports Codex took it, it rides on the running turn and gets that
turn's terminal event; when not, it is queued like any other message.
"""

from __future__ import annotations

import trio
import trio.lowlevel
import trio.testing

from trio_codex_shim import protocol as p
from trio_codex_shim.codex import events as cx
from trio_codex_shim.core.actions import StartTurn, SteerTurn, StopTurn
from trio_codex_shim.core.machine import CoreConfig, Output, ShimCore
from trio_codex_shim.core.text import format_injected_message
from trio_codex_shim.framing import FrameReader, frame
from trio_codex_shim.options import OnBusy, ShimOptions
from trio_codex_shim.service import serve

IDLE = p.ShimState.IDLE
WORKING = p.ShimState.WORKING


class Clock:
    def monotonic(self) -> float:
        return 100.0

    def epoch(self) -> float:
        return 1_776_000_000.0


def steering_core() -> ShimCore:
    core = ShimCore(CoreConfig(on_busy="steer"), Clock())
    core.start()
    return core


def send(core: ShimCore, body: str, mid: str | None) -> list[Output]:
    return core.command(p.SendMessage(sender="lead", body=body, message_id=mid))


def completion(mid: str | None, text: str) -> p.Completion:
    return p.Completion(message_id=mid, response=text, last_lines=text)


def test_an_accepted_steer_gets_the_turns_completion() -> None:
    core = steering_core()
    assert isinstance(send(core, "first", "m1")[-1], StartTurn)
    out = send(core, "second", "m2")
    assert out == [SteerTurn(1, 1, format_injected_message("lead", "second"), "m2")]
    assert core.steered(1, None) == [p.MessageDelivered(id="m2")]
    core.codex_event(1, cx.AgentMessage("did both"))
    out = core.turn_ended(1, cx.TurnOutcome(completed=True))
    assert out == [
        p.StateChanged(from_state=WORKING, to=IDLE, summary="did both"),
        completion("m1", "did both"),
        completion("m2", "did both"),
    ]
    assert core.running_turn is None
    assert core.queued == 0


def test_a_steer_without_an_id_still_gets_a_completion() -> None:
    core = steering_core()
    send(core, "first", "m1")
    send(core, "second", None)
    assert core.steered(1, None) == []
    out = core.turn_ended(1, cx.TurnOutcome(completed=True))
    assert out[1:] == [completion("m1", ""), completion(None, "")]


def test_a_refused_steer_falls_back_to_the_queue() -> None:
    core = steering_core()
    send(core, "first", "m1")
    send(core, "second", "m2")
    out = core.steered(1, "no active turn to steer")
    assert out == [
        p.Warning(
            message="could not steer the running turn (no active turn to steer); "
            "message queued (depth: 1)"
        )
    ]
    out = core.turn_ended(1, cx.TurnOutcome(completed=True))
    assert out[1] == completion("m1", "")
    assert out[-2:] == [
        p.MessageDelivered(id="m2"),
        StartTurn(2, format_injected_message("lead", "second"), None),
    ]


def test_a_steer_unanswered_when_the_turn_ends_is_queued_and_its_late_answer_ignored() -> None:
    core = steering_core()
    send(core, "first", "m1")
    send(core, "second", "m2")
    out = core.turn_ended(1, cx.TurnOutcome(completed=True))
    assert out[0] == p.Warning(
        message="could not steer the running turn (the turn ended first); message queued (depth: 1)"
    )
    assert isinstance(out[-1], StartTurn)
    assert out[-1].turn_id == 2
    assert core.steered(1, None) == []  # settled already: no second MessageDelivered
    out = core.turn_ended(2, cx.TurnOutcome(completed=True))
    assert completion("m2", "") in out


def test_riders_share_a_failed_turns_delivery_failure() -> None:
    core = steering_core()
    send(core, "first", "m1")
    send(core, "second", "m2")
    core.steered(1, None)
    failure = cx.Failure(cx.FailureKind.CONTEXT_WINDOW, "out of room")
    core.codex_event(1, cx.TurnFailed(failure))
    out = core.turn_ended(1, cx.TurnOutcome())
    failed = [e for e in out if isinstance(e, p.DeliveryFailed)]
    assert [f.id for f in failed] == ["m1", "m2"]
    assert failed[0].reason == failed[1].reason
    assert sum(isinstance(e, p.ContextExhausted) for e in out) == 1


def test_kill_fails_riders_and_refuses_a_steer_answered_while_closing() -> None:
    core = steering_core()
    send(core, "first", "m1")
    send(core, "second", "m2")
    core.steered(1, None)
    send(core, "third", "m3")
    out = core.command(p.Kill())
    assert out == [StopTurn(turn_id=1, grace_secs=0.0)]
    out = core.steered(2, "turn interrupted")
    assert out == [p.DeliveryFailed(id="m3", reason="shim is shutting down, message dropped")]
    out = core.turn_ended(1, cx.TurnOutcome(stopped=True))
    failed = [e.id for e in out if isinstance(e, p.DeliveryFailed)]
    assert failed == ["m1", "m2"]
    assert core.exited


def test_queue_mode_never_steers() -> None:
    core = ShimCore(CoreConfig(), Clock())
    core.start()
    send(core, "first", "m1")
    out = send(core, "second", "m2")
    assert out == [p.Warning(message="message queued while agent working (depth: 1)")]


# -- the service's plumbing, with an in-process backend ----------------------------


class SteerableFake:
    """A backend whose turns last until released; steers answered from a script."""

    def __init__(self, answers: list[str | None]) -> None:
        self.answers = answers
        self.steered: list[tuple[int, str]] = []
        self.release = trio.Event()
        self.turns = 0

    async def run(self) -> None:
        pass

    async def run_turn(
        self, turn: StartTurn, sink: cx.EventSink, stop: trio.CancelScope
    ) -> cx.TurnOutcome:
        self.turns += 1
        with stop:
            sink(cx.AgentMessage(f"answer {turn.turn_id}"))
            if turn.turn_id == 1:
                await self.release.wait()
        if stop.cancelled_caught:
            return cx.TurnOutcome(stopped=True)
        return cx.TurnOutcome(completed=True)

    async def steer_turn(self, turn_id: int, prompt: str) -> str | None:
        self.steered.append((turn_id, prompt))
        await trio.lowlevel.checkpoint()
        return self.answers.pop(0)


async def _events_until(
    reader: FrameReader, done: set[str], events: list[p.AnyEvent]
) -> list[p.AnyEvent]:
    """Read events until every id in ``done`` has a terminal event."""
    while done:
        payload = await reader.receive()
        assert payload is not None
        event = p.decode_event(payload)
        events.append(event)
        if isinstance(event, p.Completion) and event.message_id in done:
            done.discard(event.message_id)
        if isinstance(event, p.DeliveryFailed):
            done.discard(event.id)
    return events


async def test_service_steers_then_falls_back_to_the_queue() -> None:
    client, shim_side = trio.testing.memory_stream_pair()
    backend = SteerableFake([None, "turn/steer: no active turn (code -32600)"])
    options = ShimOptions(on_busy=OnBusy.STEER, stats_interval_secs=3600)
    events: list[p.AnyEvent] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, shim_side, options, backend)
            reader = FrameReader(client)

            async def say(cmd: p.AnyCommand) -> None:
                await client.send_all(frame(p.encode(cmd)))

            # Two frames in one write: m2's steer may reach the service before turn 1
            # reaches the executor (the pending-steer path); either way it rides turn 1.
            await client.send_all(
                frame(p.encode(p.SendMessage(sender="a", body="one", message_id="m1")))
                + frame(p.encode(p.SendMessage(sender="a", body="two", message_id="m2")))
            )
            while p.MessageDelivered(id="m2") not in events:
                payload = await reader.receive()
                assert payload is not None
                events.append(p.decode_event(payload))
            await say(p.SendMessage(sender="a", body="three", message_id="m3"))
            while not any(isinstance(e, p.Warning) for e in events):
                payload = await reader.receive()
                assert payload is not None
                events.append(p.decode_event(payload))
            backend.release.set()
            await _events_until(reader, {"m1", "m2", "m3"}, events)
            await say(p.Kill())
    assert [turn for turn, _ in backend.steered] == [1, 1]
    assert backend.turns == 2
    completions = [(e.message_id, e.response) for e in events if isinstance(e, p.Completion)]
    assert completions == [("m1", "answer 1"), ("m2", "answer 1"), ("m3", "answer 2")]
    assert not [e for e in events if isinstance(e, p.DeliveryFailed)]
