"""The Trio service in-process: timing rules on Trio's virtual clock.

The shim's own service (``serve``) runs over in-memory streams with a scripted
in-process backend, so the stats ticker, stall warnings, the turn timeout and
the send timeout are checked with ``autojump_clock`` — no real waiting, and
every wait is on Trio-internal events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing

from trio_codex_shim import protocol as p
from trio_codex_shim.codex.events import AgentMessage, EventSink, OutputProduced, TurnOutcome
from trio_codex_shim.core.actions import StartTurn
from trio_codex_shim.framing import FrameReader, frame
from trio_codex_shim.options import ShimOptions
from trio_codex_shim.service import serve

Script = Callable[[StartTurn, EventSink], Awaitable[None]]


class ScriptedBackend:
    """A backend whose turns run ``script`` in-process; stopping one cancels it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.turns: list[StartTurn] = []

    async def run(self) -> None:
        """Nothing lives between turns."""

    async def run_turn(
        self, turn: StartTurn, sink: EventSink, stop: trio.CancelScope
    ) -> TurnOutcome:
        self.turns.append(turn)
        with stop:
            await self.script(turn, sink)
            return TurnOutcome(exit_code=0, completed=True)
        return TurnOutcome(stopped=True)


async def answer(turn: StartTurn, sink: EventSink) -> None:
    await trio.sleep(1)
    sink(OutputProduced(10))
    sink(AgentMessage(f"answer {turn.turn_id}"))


async def silent(turn: StartTurn, sink: EventSink) -> None:
    await trio.sleep_forever()


class Orchestrator:
    """The test's end of the stream: send commands, read events."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = FrameReader(stream)

    async def send(self, cmd: p.AnyCommand) -> None:
        await self.stream.send_all(frame(p.encode(cmd)))

    async def next(self) -> p.AnyEvent | None:
        payload = await self.reader.receive()
        return None if payload is None else p.decode_event(payload)

    async def until(self, kind: type[p.Event]) -> list[p.AnyEvent]:
        """Events up to and including the first of ``kind``."""
        got: list[p.AnyEvent] = []
        while True:
            event = await self.next()
            assert event is not None, f"stream ended before {kind.__name__}: {got}"
            got.append(event)
            if isinstance(event, kind):
                return got


async def run_service(
    options: ShimOptions, backend: ScriptedBackend, body: Callable[[Orchestrator], Awaitable[None]]
) -> int:
    ours, theirs = trio.testing.memory_stream_pair()
    code = -1

    async def shim() -> None:
        nonlocal code
        async with theirs:  # closed on exit, as the real transport does
            code = await serve(theirs, options, backend)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shim)
        orchestrator = Orchestrator(ours)
        assert await orchestrator.next() == p.Ready()
        await body(orchestrator)
    return code


async def test_stats_every_fractional_interval(autojump_clock: trio.abc.Clock) -> None:
    backend = ScriptedBackend(answer)
    options = ShimOptions(stats_interval_secs=0.25)
    ticks: list[float] = []

    async def body(o: Orchestrator) -> None:
        start = trio.current_time()
        for _ in range(4):
            await o.until(p.SessionStats)
            ticks.append(round(trio.current_time() - start, 6))
        await o.send(p.Kill())

    assert await run_service(options, backend, body) == 0
    assert ticks == [0.25, 0.5, 0.75, 1.0]


async def test_stall_warnings_then_turn_timeout(autojump_clock: trio.abc.Clock) -> None:
    backend = ScriptedBackend(silent)
    options = ShimOptions(stall_warn_secs=30, turn_timeout_secs=100, stats_interval_secs=1000)
    got: list[p.AnyEvent] = []

    async def body(o: Orchestrator) -> None:
        await o.send(p.SendMessage(sender="m", body="hi", message_id="m1"))
        start = trio.current_time()
        got.extend(await o.until(p.DeliveryFailed))
        assert trio.current_time() - start == 100
        await o.send(p.Ping())
        got.extend(await o.until(p.Pong))  # still serving
        await o.send(p.Kill())

    assert await run_service(options, backend, body) == 0
    stalls = [e for e in got if isinstance(e, p.Warning) and e.idle_secs is not None]
    assert [w.idle_secs for w in stalls] == [30, 60, 90]
    (failed,) = [e for e in got if isinstance(e, p.DeliveryFailed)]
    assert failed.id == "m1" and "timed out after 100s" in failed.reason


async def test_shutdown_waits_for_the_turn_up_to_its_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    backend = ScriptedBackend(silent)
    options = ShimOptions(stats_interval_secs=1000)
    got: list[p.AnyEvent] = []

    async def body(o: Orchestrator) -> None:
        await o.send(p.SendMessage(sender="m", body="hi", message_id="m1"))
        await o.until(p.MessageDelivered)
        start = trio.current_time()
        await o.send(p.Shutdown(timeout_secs=7))
        while (event := await o.next()) is not None:
            got.append(event)
        assert trio.current_time() - start == 7

    assert await run_service(options, backend, body) == 0
    assert [type(e) for e in got] == [p.DeliveryFailed, p.StateChanged]


async def test_a_peer_that_never_reads_is_treated_as_gone(
    autojump_clock: trio.abc.Clock,
) -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()  # a write waits for a read
    backend = ScriptedBackend(silent)
    options = ShimOptions(send_timeout_secs=5, stats_interval_secs=1000)
    with trio.fail_after(60):
        code = await serve(theirs, options, backend)  # Ready is never read
    assert code == 3
    assert trio.current_time() == 5  # the send timeout, from the first send
    assert backend.turns == []
    await ours.aclose()


async def test_a_slow_reader_is_not_a_stuck_one(autojump_clock: trio.abc.Clock) -> None:
    """The send timeout bounds each batch, not the stream's whole life."""
    ours, theirs = trio.testing.lockstep_stream_pair()  # a write waits for a read
    options = ShimOptions(send_timeout_secs=5, stats_interval_secs=1000)
    got: list[p.AnyEvent] = []

    async def slow_orchestrator() -> None:
        reader = FrameReader(ours)
        for _ in range(4):
            await trio.sleep(4)  # under the timeout each time, 16 s in all
            payload = await reader.receive()
            assert payload is not None
            got.append(p.decode_event(payload))
            if len(got) == 1:
                await ours.send_all(frame(p.encode(p.Ping())) * 3)
        await ours.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_orchestrator)
            code = await serve(theirs, options, ScriptedBackend(silent))
    assert code == 0
    assert got == [p.Ready(), p.Pong(), p.Pong(), p.Pong()]
    assert trio.current_time() >= 16


async def test_queued_messages_run_in_order_on_one_executor(
    autojump_clock: trio.abc.Clock,
) -> None:
    backend = ScriptedBackend(answer)
    options = ShimOptions(stats_interval_secs=1000)
    completions: list[p.Completion] = []

    async def body(o: Orchestrator) -> None:
        for i in range(3):
            await o.send(p.SendMessage(sender="m", body=f"task {i}", message_id=f"m{i}"))
        for _ in range(3):
            event = (await o.until(p.Completion))[-1]
            assert isinstance(event, p.Completion)
            completions.append(event)
        await o.send(p.Kill())

    assert await run_service(options, backend, body) == 0
    assert [c.message_id for c in completions] == ["m0", "m1", "m2"]
    assert [c.response for c in completions] == ["answer 1", "answer 2", "answer 3"]
    assert [t.prompt.rsplit("\n", 1)[-1] for t in backend.turns] == ["task 0", "task 1", "task 2"]
