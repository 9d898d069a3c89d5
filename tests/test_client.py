"""The Trio client: against real shim processes (fake Codex), and over memory streams."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_codex_shim import protocol as p
from trio_codex_shim.client import (
    ClientOptions,
    ShimClient,
    ShimGone,
    ShimStartError,
    connect_shim,
    open_shim,
    open_shim_unix_listener,
    stdio_stream,
)
from trio_codex_shim.framing import FrameReader, frame
from trio_codex_shim.testing.fake_codex import (
    Emit,
    Hang,
    Sleep,
    Spawn,
    Turn,
    answer_turn,
    fail_turn,
    steps_turn,
)
from trio_codex_shim.testing.harness import (
    fake_shim_options,
    scenario_path,
    started_pids,
    survivors,
)

LIMIT = 30.0
"""Bound on every test's real-process work."""

# A hanging turn that first starts an escaped grandchild and then says so (a
# thread id that is not one becomes a Warning), so a test knows it exists.
SPAWN_THEN_HANG = steps_turn(
    Spawn.of(["sleep", "300"]),
    Emit({"type": "thread.started", "thread_id": "spawned!"}),
    Hang(),
)


def options(tmp_path: Path, *turns: Turn, **kwargs: Any) -> ClientOptions:
    return fake_shim_options(tmp_path, list(turns or [answer_turn("hello")]), **kwargs)


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------
# Real shim processes
# ---------------------------------------------------------------------------


async def test_typed_calls_round_trip(tmp_path: Path) -> None:
    seen: list[p.AnyEvent] = []
    with trio.fail_after(LIMIT):
        async with open_shim(
            options(tmp_path, answer_turn("one\ntwo\nthree")), on_event=seen.append
        ) as shim:
            assert shim.ready
            assert seen == [p.Ready()]
            with shim.events() as events:
                assert await shim.ping() >= 0
                outcome = await shim.send("do it", sender="manager", message_id="m-1")
                result = await outcome.wait(LIMIT)
                assert result == p.Completion(
                    message_id="m-1", response="one\ntwo\nthree", last_lines="one\ntwo\nthree"
                )
                assert outcome.delivered
                assert outcome.done
                assert shim.pending == []
                state = await shim.get_state()
                assert state.state is p.ShimState.IDLE
                capture = await shim.capture(2)
                assert capture.content == "two\nthree"
                await shim.resize(50, 220)
                assert await shim.ping() >= 0
                got = events.drain()
            assert [type(e).__name__ for e in got] == [
                "Pong",
                "StateChanged",
                "MessageDelivered",
                "StateChanged",
                "Completion",
                "State",
                "ScreenCapture",
                "Pong",
            ]
            process = shim.process
        # A normal exit shuts the shim down: it says so, and exits 0.
        assert process is not None
        assert process.returncode == 0
        assert isinstance(seen[-1], p.StateChanged)
        assert seen[-1].to is p.ShimState.DEAD
        assert shim.closed


async def test_a_failed_turn_ends_in_delivery_failed(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_shim(options(tmp_path, fail_turn("something broke"))) as shim:
            outcome = await shim.send("try")
            result = await outcome.wait(LIMIT)
    assert isinstance(result, p.DeliveryFailed)
    assert result.id == outcome.message_id
    assert "something broke" in result.reason


async def test_wait_is_bounded_and_kill_stops_the_turn_and_its_children(tmp_path: Path) -> None:
    scenario = scenario_path(tmp_path)
    with trio.fail_after(LIMIT):
        async with open_shim(options(tmp_path, SPAWN_THEN_HANG)) as shim:
            with shim.events() as events:
                outcome = await shim.send("hang")
                while not isinstance(await events.receive(LIMIT), p.Warning):
                    pass
            assert survivors(scenario)  # the fake and its grandchild run
            with pytest.raises(trio.TooSlowError):
                await outcome.wait(0.05)
            assert not outcome.done
            await shim.kill()
            result = outcome.result
            assert shim.process is not None
            assert shim.process.returncode == 0
    assert isinstance(result, p.DeliveryFailed)
    assert survivors(scenario) == []


async def test_cancellation_stops_the_shim_and_everything_it_started(tmp_path: Path) -> None:
    scenario = scenario_path(tmp_path)
    process: trio.Process | None = None
    with trio.fail_after(LIMIT), trio.CancelScope() as scope:
        async with open_shim(options(tmp_path, SPAWN_THEN_HANG)) as shim:
            process = shim.process
            with shim.events() as events:
                await shim.send("hang")
                while not isinstance(await events.receive(LIMIT), p.Warning):
                    pass
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert process is not None
    assert process.returncode is not None
    assert len(started_pids(scenario)) == 2
    assert survivors(scenario) == []


async def test_an_error_in_the_block_comes_out_unwrapped(tmp_path: Path) -> None:
    process: trio.Process | None = None

    async def fail_inside() -> None:
        nonlocal process
        async with open_shim(options(tmp_path)) as shim:
            process = shim.process
            raise KeyError("boom")

    with trio.fail_after(LIMIT), pytest.raises(KeyError):
        await fail_inside()
    assert process is not None
    assert process.returncode == 0  # Kill, not a signal


PID_THEN_IGNORE_TERM = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[-1], 'w').write(str(os.getpid()))\n"
    "time.sleep(60)\n"
)


async def test_no_ready_in_time_is_a_start_error_and_the_process_is_reaped(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    opts = ClientOptions(
        argv=(sys.executable, "-c", PID_THEN_IGNORE_TERM),
        args=(str(pid_file),),
        ready_timeout_secs=1.0,
        kill_timeout_secs=0.1,
        terminate_grace_secs=0.1,
    )
    with trio.fail_after(LIMIT), pytest.raises(ShimStartError, match="no Ready within"):
        async with open_shim(opts):
            pytest.fail("no Ready was sent")
    pid = int(pid_file.read_text())
    assert not await trio.Path(f"/proc/{pid}").exists()  # killed and reaped, not a zombie


async def test_a_shim_that_exits_before_ready_says_how() -> None:
    opts = ClientOptions(argv=(sys.executable, "-c", "raise SystemExit(5)"))
    with trio.fail_after(LIMIT), pytest.raises(ShimStartError, match="code 5"):
        async with open_shim(opts):
            pytest.fail("no Ready was sent")


async def test_a_shim_killed_from_outside_fails_pending_calls(tmp_path: Path) -> None:
    scenario = scenario_path(tmp_path)
    try:
        with trio.fail_after(LIMIT):
            async with open_shim(options(tmp_path, SPAWN_THEN_HANG)) as shim:
                outcome = await shim.send("hang")
                assert shim.pid is not None
                os.kill(shim.pid, signal.SIGKILL)
                with pytest.raises(ShimGone):
                    await outcome.wait(LIMIT)
                await shim.wait_closed(LIMIT)
                with pytest.raises(ShimGone):
                    await shim.ping()
                with pytest.raises(ShimGone):
                    await shim.send("anyone?")
            assert shim.process is not None
            assert shim.process.returncode == -signal.SIGKILL
    finally:
        # A SIGKILLed shim cannot stop its children: they are orphans now.
        kill_all(started_pids(scenario))


async def test_a_slow_subscriber_loses_the_oldest_events_only(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_shim(options(tmp_path)) as shim:
            with shim.events(buffer=2) as slow, shim.events() as fast:
                for _ in range(5):
                    await shim.ping()
                state = await shim.get_state()
                assert slow.dropped == 4
                assert fast.dropped == 0
                assert [await slow.receive(1) for _ in range(2)] == [p.Pong(), state]
                assert [type(await fast.receive(1)) for _ in range(6)] == [p.Pong] * 5 + [p.State]


async def test_a_pending_id_cannot_be_reused(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_shim(options(tmp_path, answer_turn("a", steps=[Sleep(0.2)]))) as shim:
            first = await shim.send("one", message_id="same")
            with pytest.raises(ValueError, match="still pending"):
                await shim.send("two", message_id="same")
            assert isinstance(await first.wait(LIMIT), p.Completion)
            again = await shim.send("three", message_id="same")  # finished ids may return
            assert isinstance(await again.wait(LIMIT), p.Completion)


async def test_send_eof_lets_the_running_turn_finish(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_shim(options(tmp_path, answer_turn("late", steps=[Sleep(0.2)]))) as shim:
            outcome = await shim.send("work")
            await shim.send_eof()
            with pytest.raises(ShimGone, match="end of stream sent"):
                await shim.ping()
            result = await outcome.wait(LIMIT)
            await shim.wait_closed(LIMIT)
            assert shim.process is not None
            assert await shim.process.wait() == 0
    assert isinstance(result, p.Completion)


async def test_a_stdio_shim_started_elsewhere(tmp_path: Path) -> None:
    opts = options(tmp_path)
    argv = [*opts.argv, "--stdio", *opts.args]
    with trio.fail_after(LIMIT):
        with (tmp_path / "stdio.log").open("ab") as log:
            proc = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        try:
            async with connect_shim(stdio_stream(proc), shutdown_timeout_secs=5) as shim:
                assert shim.process is None
                await shim.ping()
                result = await (await shim.send("hi")).wait(LIMIT)
                assert isinstance(result, p.Completion)
            assert await proc.wait() == 0
        finally:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


async def test_a_shim_connecting_to_a_unix_socket(tmp_path: Path) -> None:
    opts = options(tmp_path)
    path = tmp_path / "shim.sock"
    with trio.fail_after(LIMIT):
        async with open_shim_unix_listener(path) as listener:
            argv = [*opts.argv, "--socket", str(path), *opts.args]
            proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL)
            try:
                async with listener.accept(LIMIT) as shim:
                    await shim.ping()
                    state = await shim.get_state()
                    assert state.state is p.ShimState.IDLE
                assert await proc.wait() == 0
            finally:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        assert not path.exists()


def test_options_keep_the_socket_on_a_single_digit_fd() -> None:
    with pytest.raises(ValueError, match=r"3\.\.9"):
        ClientOptions(fd=12)
    assert ClientOptions(args=("--x",)).command_line()[-3:] == ["--fd", "3", "--x"]


# ---------------------------------------------------------------------------
# Over memory streams, against a scripted peer (no processes, virtual time)
# ---------------------------------------------------------------------------

Answer = Callable[[p.AnyCommand], list[bytes]]


async def scripted_peer(stream: trio.abc.Stream, answer: Answer, *, ready: bool = True) -> None:
    """A pretend shim: Ready, then each command's scripted frames, until EOF."""
    if ready:
        await stream.send_all(frame(p.encode(p.Ready())))
    reader = FrameReader(stream)
    while (payload := await reader.receive()) is not None:
        command = p.decode_command(payload)
        for data in answer(command):
            if data == b"":
                await stream.aclose()
                return
            await stream.send_all(data)


def event(e: p.Event) -> bytes:
    return frame(p.encode(e))


async def test_answers_without_ids_are_matched_first_in_first_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_end, peer_end = trio.testing.memory_stream_pair()
    held: list[bytes] = []
    count = 0

    def answer(cmd: p.AnyCommand) -> list[bytes]:
        nonlocal count
        if isinstance(cmd, p.GetState):
            count += 1
            reply = event(p.State(state=p.ShimState.IDLE, since_secs=count))
            if count == 1:  # hold the first answer back until the second GetState
                held.append(reply)
                return []
            return [*held, reply]
        return []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scripted_peer, peer_end, answer)
        async with connect_shim(client_end, shutdown_timeout_secs=None) as shim:
            with pytest.raises(trio.TooSlowError):
                await shim.get_state(1.0)  # gives up; its answer still comes first
            second = await shim.get_state(1.0)
            assert second.since_secs == 2  # not the late answer to the first call
        nursery.cancel_scope.cancel()


async def test_concurrent_calls_each_get_their_own_answer() -> None:
    client_end, peer_end = trio.testing.memory_stream_pair()

    def answer(cmd: p.AnyCommand) -> list[bytes]:
        if isinstance(cmd, p.CaptureScreen):
            content = str(cmd.last_n_lines)
            return [event(p.ScreenCapture(content=content, cursor_row=0, cursor_col=0))]
        return []

    results: dict[int, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scripted_peer, peer_end, answer)
        async with connect_shim(client_end, shutdown_timeout_secs=None) as shim:

            async def capture(n: int) -> None:
                results[n] = (await shim.capture(n, 5)).content

            async with trio.open_nursery() as calls:
                for n in range(20):
                    calls.start_soon(capture, n)
        nursery.cancel_scope.cancel()
    assert results == {n: str(n) for n in range(20)}


async def test_bad_frames_from_the_shim_are_skipped_and_counted() -> None:
    client_end, peer_end = trio.testing.memory_stream_pair()

    def answer(cmd: p.AnyCommand) -> list[bytes]:
        return [frame(b"not json"), frame(b'{"event":"Nope"}'), event(p.Pong())]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scripted_peer, peer_end, answer)
        async with connect_shim(client_end, shutdown_timeout_secs=None) as shim:
            await shim.ping(5)
            assert shim.bad_frames == 2
        nursery.cancel_scope.cancel()


async def test_a_broken_stream_from_the_shim_fails_everything_pending() -> None:
    client_end, peer_end = trio.testing.memory_stream_pair()

    def answer(cmd: p.AnyCommand) -> list[bytes]:
        return [(p.MAX_FRAME_BYTES + 1).to_bytes(4, "big")] if isinstance(cmd, p.Ping) else []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scripted_peer, peer_end, answer)
        async with connect_shim(client_end, shutdown_timeout_secs=None) as shim:
            outcome = await shim.send("x")
            with pytest.raises(ShimGone, match="broken stream"):
                await shim.ping(5)
            with pytest.raises(ShimGone):
                await outcome.wait(5)
            assert shim.close_reason is not None
            with shim.events() as late:
                assert [e async for e in late] == []  # ends at once: closed
        nursery.cancel_scope.cancel()


async def test_a_peer_that_stops_reading_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_end, peer_end = trio.testing.lockstep_stream_pair()
    await_ready = trio.Event()

    async def peer() -> None:
        await peer_end.send_all(event(p.Ready()))
        await_ready.set()
        await trio.sleep_forever()  # never reads a command

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        async with connect_shim(
            client_end, send_timeout_secs=3.0, shutdown_timeout_secs=None
        ) as shim:
            with pytest.raises(ShimGone, match="read nothing for 3s"):
                await shim.ping(60)
            assert shim.closed
        nursery.cancel_scope.cancel()


async def test_a_normal_exit_asks_a_connected_shim_to_shut_down() -> None:
    client_end, peer_end = trio.testing.memory_stream_pair()
    received: list[p.AnyCommand] = []

    def answer(cmd: p.AnyCommand) -> list[bytes]:
        received.append(cmd)
        return [b""] if isinstance(cmd, p.Shutdown) else []  # b"": close the stream

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scripted_peer, peer_end, answer)
        with trio.fail_after(5):
            async with connect_shim(client_end, shutdown_timeout_secs=7) as shim:
                assert isinstance(shim, ShimClient)
    assert received == [p.Shutdown(timeout_secs=7)]
    assert shim.stop_requested
    assert shim.closed


async def test_a_raw_command_can_claim_its_answer() -> None:
    client_end, peer_end = trio.testing.memory_stream_pair()
    count = 0

    def answer(cmd: p.AnyCommand) -> list[bytes]:
        nonlocal count
        count += 1
        return [event(p.State(state=p.ShimState.IDLE, since_secs=count))]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(scripted_peer, peer_end, answer)
        async with connect_shim(client_end, shutdown_timeout_secs=None) as shim:
            await shim.send_raw(frame(p.encode(p.GetState())), answered_by=p.State)
            assert (await shim.get_state(5)).since_secs == 2
        nursery.cancel_scope.cancel()
