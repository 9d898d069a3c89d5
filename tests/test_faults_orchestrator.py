"""The fault matrix, orchestrator side: bad frames, a peer that stops reading or
vanishes, stops at awkward moments, signals, and random interleavings.

Each test drives a real shim process (through the client, or on a raw
socketpair the test owns) with the fake Codex CLI, and checks the
invariants: the shim is serving or has exited with a documented code,
every message id has exactly one terminal event, and nothing it started is
left alive.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Final

import pytest
import trio
from fault_helpers import (
    DOCUMENTED_EXIT_CODES,
    check_accounted,
    left_alive,
    raw_shim,
    read_events_to_end,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shim_helpers import events_so_far, fake_shim, until

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ShimGone, open_shim
from trio_codex_shim.framing import frame
from trio_codex_shim.testing.fake_codex import (
    Emit,
    Hang,
    Sleep,
    Spawn,
    Step,
    Turn,
    answer_turn,
    read_pids,
    steps_turn,
    thread_started_event,
)
from trio_codex_shim.testing.hypothesis_profiles import active_profile
from trio_codex_shim.testing.strategies import CapFrame, cap_frame

THREAD = "019a2000-0000-7000-8000-0000000000fb"
LIMIT = 30.0
SMALL_BUFFER = 4096
"""SO_SNDBUF/SO_RCVBUF for the tests where the orchestrator stops reading."""


def _ping_frames(n: int) -> bytes:
    return frame(p.encode(p.Ping())) * n


def _hanging_turn() -> Turn:
    """Starts an escaped grandchild, says so, then hangs."""
    return steps_turn(Emit(thread_started_event(THREAD)), Spawn.of(["sleep", "300"]), Hang())


# ---------------------------------------------------------------------------
# Bad frames
# ---------------------------------------------------------------------------

_HEADER_CAP = p.MAX_FRAME_BYTES

BAD_FRAMES: Final = {
    "empty": b"",
    "null": b"null",
    "invalid_utf8_raw": b"\xff\xfe\xfd",
    "invalid_utf8_in_a_string": b'{"cmd":"SendMessage","from":"\xc3\x28","body":"x"}',
    "deep_nesting": b'{"cmd":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "deep_nesting_in_an_ignored_field": b'{"cmd":"Ping","x":' + b"[" * 200_000 + b"}",
    "tag_at_the_cap": b'{"cmd":"' + b"A" * (_HEADER_CAP - 10) + b'"}',
    "escapes_at_the_cap": b'{"cmd":"' + b"\\u0000" * ((_HEADER_CAP - 10) // 6) + b'"}',
    "value_at_the_cap": b'{"cmd":"Resize","rows":"' + b"x" * (_HEADER_CAP - 40) + b'","cols":1}',
    "rows_out_of_range": b'{"cmd":"Resize","rows":65536,"cols":1}',
    "negative_timeout": b'{"cmd":"Shutdown","timeout_secs":-1}',
    "float_out_of_range": b'{"cmd":"Shutdown","timeout_secs":1e400}',
    "tag_is_an_object": b'{"cmd":{"cmd":"Ping"}}',
    "garbage_at_the_cap": b"x" * _HEADER_CAP,
}


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda depth, opener, prefix: prefix + opener * depth,
            st.integers(1, 300_000),
            st.sampled_from([b"[", b'{"a":']),
            st.sampled_from([b"", b'{"cmd":', b'{"cmd":"Ping","x":']),
        ),
        st.builds(
            lambda raw: b'{"cmd":"SendMessage","from":"' + raw + b'","body":"x"}',
            st.binary(min_size=1, max_size=8),
        ),
    )
)
def test_decoding_any_bytes_gives_a_command_or_a_bad_message(payload: bytes) -> None:
    """Nothing a peer sends makes the decoder raise anything but BadMessage."""
    error: p.BadMessage | None = None
    try:
        p.decode_command(payload)
    except p.BadMessage as exc:
        error = exc
    if error is not None:
        assert len(error.command) <= p.MAX_TAG_CHARS
        assert len(error.reason) <= p.MAX_REASON_CHARS + 3


_TEXT = st.text(st.characters(codec="utf-8"), max_size=400)


@settings(max_examples=300, deadline=None)
@given(
    event=st.one_of(
        st.builds(p.Completion, message_id=st.text(max_size=20), response=_TEXT, last_lines=_TEXT),
        st.builds(p.DeliveryFailed, id=st.text(max_size=20), reason=_TEXT),
        st.builds(p.Error, command=_TEXT, reason=_TEXT),
        st.builds(p.ScreenCapture, content=_TEXT, cursor_row=st.just(0), cursor_col=st.just(0)),
    ),
    cap=st.integers(150, 1000),
)
def test_every_event_is_cut_to_fit_a_frame_and_keeps_its_id(event: p.Event, cap: int) -> None:
    data = p.encode_event(event, cap)
    assert len(data) <= cap
    back = p.decode_event(data)
    assert type(back) is type(event)
    if len(p.encode(event)) <= cap:
        assert back == event
    for name in ("id", "message_id"):
        assert getattr(back, name, None) == getattr(event, name, None)


async def test_bad_frames_each_get_an_error_and_the_shim_serves_on(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    names = list(BAD_FRAMES)
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            for name in names:
                await shim.send_raw(frame(BAD_FRAMES[name]))
                await shim.ping()
            await shim.send_raw(cap_frame(CapFrame.PING_AT_CAP), answered_by=p.Pong)
            outcome = await shim.send("still there?", message_id="m1")
            assert isinstance(await outcome.wait(LIMIT), p.Completion)
            seen = await events_so_far(shim, events)
            await shim.shutdown(timeout_secs=5)
            assert shim.process is not None
            assert shim.process.returncode == 0
    errors = [e for e in seen if isinstance(e, p.Error)]
    assert len(errors) == len(names), errors
    for name, error in zip(names, errors, strict=True):
        assert error.reason.startswith("bad message"), (name, error)
        assert len(p.encode(error)) < 8192, name  # the bad value is not echoed whole
    assert check_accounted(seen, ["m1"]) == []


async def test_a_shutdown_with_a_timeout_beyond_any_clock_still_shuts_down(
    tmp_path: Path,
) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            await shim.send_raw(frame(b'{"cmd":"Shutdown","timeout_secs":' + b"9" * 400 + b"}"))
            await shim.wait_closed(LIMIT)
            assert shim.process is not None
            assert await shim.process.wait() == 0


@pytest.mark.parametrize(
    "cut",
    [
        b"\x00\x00",  # inside the length
        b"\x00\x00\x00\x64" + b'{"cmd":"Ping"',  # 100 bytes promised, 13 sent
        frame(b'{"cmd":"Ping"}') + b"\x00",  # a good frame, then a broken one
    ],
    ids=["in_header", "in_payload", "after_a_good_frame"],
)
async def test_a_truncated_frame_ends_the_connection_with_code_3(
    tmp_path: Path, cut: bytes
) -> None:
    setup = fake_shim(tmp_path, [_hanging_turn()], "--eof-grace", "0.3")
    async with raw_shim(setup.options.args, log_path=tmp_path / "raw.log") as shim:
        await shim.send(p.SendMessage(sender="o", body="work", message_id="m1"))
        await until(lambda: len(read_pids(setup.scenario)) == 1)
        await shim.stream.send_all(cut)
        await shim.stream.send_eof()
        events = await read_events_to_end(shim)
        assert await shim.wait() == 3
    assert any(isinstance(e, p.Error) and "inside a frame" in e.reason for e in events), events
    assert check_accounted(events, ["m1"]) == []
    assert left_alive(setup.scenario) == []


# ---------------------------------------------------------------------------
# The orchestrator stops reading, or goes away
# ---------------------------------------------------------------------------

SEND_TIMEOUT = 1.5


async def _flood_until_blocked(shim_stream: trio.SocketStream, limit_secs: float) -> int:
    """Write Pings until the shim stops taking them (or is gone); how many were written."""
    batch = _ping_frames(256)
    sent = 0
    with trio.move_on_after(limit_secs), suppress(trio.BrokenResourceError):
        while True:
            await shim_stream.send_all(batch)
            sent += 256
    return sent


@pytest.mark.parametrize("load", ["ping_flood", "chatty_turn"])
async def test_an_orchestrator_that_never_reads_is_treated_as_gone(
    tmp_path: Path, load: str
) -> None:
    setup = fake_shim(
        tmp_path,
        [_hanging_turn()],
        "--send-timeout",
        str(SEND_TIMEOUT),
        *(["--stats-interval", "0.002"] if load == "chatty_turn" else []),
    )
    async with raw_shim(
        setup.options.args, log_path=tmp_path / "raw.log", buffer_bytes=SMALL_BUFFER
    ) as shim:
        start = trio.current_time()
        await shim.send(p.SendMessage(sender="o", body="work", message_id="m1"))
        await until(lambda: len(read_pids(setup.scenario)) == 1)
        if load == "ping_flood":
            sent = await _flood_until_blocked(shim.stream, SEND_TIMEOUT + 5)
            assert sent > 1024  # the shim read on until its outbox filled up
        # Never read: the shim must give up within the send timeout (plus the
        # turn's stop grace and the time the buffers took to fill).
        code = await shim.wait(SEND_TIMEOUT + 10)
        elapsed = trio.current_time() - start
    assert code == 3
    assert elapsed < SEND_TIMEOUT + 8, elapsed
    assert left_alive(setup.scenario) == []
    log = (tmp_path / "raw.log").read_text()
    assert "treating the orchestrator as gone" in log


async def test_a_slow_reader_still_gets_every_event_before_the_shim_exits(
    tmp_path: Path,
) -> None:
    """The final events are flushed whole: never cut off mid-frame at exit."""
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    pings = 3000
    async with raw_shim(
        setup.options.args, log_path=tmp_path / "raw.log", buffer_bytes=SMALL_BUFFER
    ) as shim:

        async def write() -> None:
            await shim.stream.send_all(_ping_frames(pings) + frame(p.encode(p.Kill())))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.sleep(0.5)  # let the shim's outbox fill while nobody reads
            events = await read_events_to_end(shim)
        assert await shim.wait() == 0
    assert sum(isinstance(e, p.Pong) for e in events) == pings
    assert events[-1] == p.StateChanged(
        from_state=p.ShimState.IDLE, to=p.ShimState.DEAD, summary="shim exiting"
    )


async def test_the_orchestrator_vanishing_mid_turn(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [_hanging_turn()], "--eof-grace", "0.5")
    async with raw_shim(setup.options.args, log_path=tmp_path / "raw.log") as shim:
        await shim.send(
            p.SendMessage(sender="o", body="work", message_id="m1"),
            p.SendMessage(sender="o", body="queued", message_id="m2"),
        )
        await until(lambda: len(read_pids(setup.scenario)) == 1)
        await shim.stream.aclose()  # no goodbye: the socket is simply gone
        code = await shim.wait(0.5 + 0.5 + 10)
    assert code in (0, 3)  # EOF read first (0) or a failed write first (3)
    assert left_alive(setup.scenario) == []


# ---------------------------------------------------------------------------
# Stops at awkward moments
# ---------------------------------------------------------------------------


async def test_kill_before_the_turn_is_spawned(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [_hanging_turn()])
    async with raw_shim(setup.options.args, log_path=tmp_path / "raw.log") as shim:
        # One write: the Kill is read before the executor has started Codex.
        await shim.send(
            p.SendMessage(sender="o", body="work", message_id="m1"),
            p.SendMessage(sender="o", body="queued", message_id="m2"),
            p.Kill(),
        )
        events = await read_events_to_end(shim)
        assert await shim.wait() == 0
    assert check_accounted(events, ["m1", "m2"]) == []
    assert left_alive(setup.scenario) == []


async def test_kill_while_codex_is_spawning_processes(tmp_path: Path) -> None:
    spawner: list[Step] = [Emit(thread_started_event(THREAD))]
    for _ in range(40):
        spawner += [Spawn.of(["sleep", "300"]), Sleep(0.01)]
    setup = fake_shim(tmp_path, [steps_turn(*spawner, Hang())])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            outcome = await shim.send("work", message_id="m1")
            await until(lambda: len(read_pids(setup.scenario)) >= 3)
            await shim.kill()
            assert shim.process is not None
            assert shim.process.returncode == 0
            seen = events.drain()
    assert isinstance(outcome.result, p.DeliveryFailed)
    assert check_accounted(seen, ["m1"]) == []
    assert left_alive(setup.scenario) == []


async def test_shutdown_while_the_queue_drains(tmp_path: Path) -> None:
    quick = answer_turn("done", thread_id=THREAD, steps=[Sleep(0.2)])
    setup = fake_shim(tmp_path, [quick])
    ids = [f"m{i}" for i in range(6)]
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            outcomes = [await shim.send("task", message_id=mid) for mid in ids]
            await outcomes[0].wait(LIMIT)  # the queue is now draining, turn by turn
            await shim.shutdown(timeout_secs=10)
            assert shim.process is not None
            assert shim.process.returncode == 0
            seen = events.drain()
    assert check_accounted(seen, ids) == []
    results = [o.result for o in outcomes]
    assert isinstance(results[0], p.Completion)
    assert isinstance(results[1], p.Completion)  # running at the Shutdown: it finished
    for result in results[2:]:
        assert isinstance(result, p.DeliveryFailed | p.Completion)
        if isinstance(result, p.DeliveryFailed):
            assert "shutting down" in result.reason
    assert left_alive(setup.scenario) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_accounts_for_the_running_and_the_queued(
    tmp_path: Path, sig: signal.Signals
) -> None:
    setup = fake_shim(tmp_path, [_hanging_turn()], "--eof-grace", "0.3")
    ids = ["m1", "m2", "m3"]
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            for mid in ids:
                await shim.send("work", message_id=mid)
            await until(lambda: len(read_pids(setup.scenario)) == 1)
            assert shim.process is not None
            os.kill(shim.process.pid, sig)
            assert await shim.process.wait() == 128 + sig
            await shim.wait_closed(LIMIT)
            seen = events.drain()
    assert check_accounted(seen, ids) == []
    assert left_alive(setup.scenario) == []


# ---------------------------------------------------------------------------
# Random interleavings of Send, Kill, Shutdown and Ping
# ---------------------------------------------------------------------------

ACTIONS: Final = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from([0.0, 0.0, 0.05, 0.3])),
        st.tuples(st.just("ping"), st.just(0.0)),
        st.tuples(st.just("state"), st.just(0.0)),
        st.tuples(st.just("kill"), st.just(0.0)),
        st.tuples(st.just("shutdown"), st.sampled_from([0.0, 1.0, 5.0])),
        st.tuples(st.just("sleep"), st.sampled_from([0.01, 0.1, 0.3])),
        st.tuples(st.just("bad"), st.just(0.0)),
    ),
    min_size=1,
    max_size=12,
)

_INTERLEAVING_TURNS: Final = [
    answer_turn("one", thread_id=THREAD, steps=[Sleep(0.05)]),
    answer_turn("two", thread_id=THREAD, steps=[Spawn.of(["sleep", "300"]), Sleep(0.3)]),
    steps_turn(Emit(thread_started_event(THREAD)), Spawn.of(["sleep", "301"]), Hang()),
    answer_turn("four", thread_id=THREAD),
]


async def _replay(root: Path, actions: list[tuple[str, float]]) -> None:
    setup = fake_shim(root, _INTERLEAVING_TURNS, "--eof-grace", "0.3", "--turn-timeout", "3")
    seen: list[p.AnyEvent] = []
    sent: list[str] = []  # before any Kill or Shutdown: each must be accounted for
    late: list[str] = []  # after one: the shim may have stopped reading
    stopped = False
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options, on_event=seen.append) as shim:
            assert shim.process is not None
            for n, (action, arg) in enumerate(actions):
                try:
                    if action == "send":
                        mid = f"m{n}"
                        (late if stopped else sent).append(mid)
                        await shim.send(f"task {n}", message_id=mid)
                        await trio.sleep(arg)
                    elif action == "ping":
                        await shim.ping(LIMIT)
                    elif action == "state":
                        await shim.get_state(LIMIT)
                    elif action == "bad":
                        await shim.send_raw(frame(b'{"cmd":"Explode"}'))
                    elif action == "sleep":
                        await trio.sleep(arg)
                    else:
                        stopped = True
                        cmd = p.Kill() if action == "kill" else p.Shutdown(timeout_secs=int(arg))
                        await shim.send_command(cmd)
                except ShimGone:
                    # Only a stop we asked for may close the connection.
                    assert stopped, (actions, n, shim.close_reason)
                    break
            if not stopped:
                await shim.ping(LIMIT)  # still serving
                await shim.shutdown(timeout_secs=0)
            await shim.wait_closed(LIMIT)
            code = await shim.process.wait()
    assert code in DOCUMENTED_EXIT_CODES
    assert code == 0, (actions, code)
    problems = check_accounted(seen, sent + late)
    assert [x for x in problems if not x.startswith(tuple(f"{mid}: 0 " for mid in late))] == [], (
        actions,
        seen,
    )
    assert left_alive(setup.scenario) == [], actions
    assert sum(isinstance(e, p.Ready) for e in seen) == 1


@settings(
    max_examples=60 if active_profile() == "long" else 15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(actions=ACTIONS)
def test_random_interleavings_keep_every_promise(actions: list[tuple[str, float]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="faults-interleave-"))
    try:
        trio.run(_replay, root, actions)
    finally:
        shutil.rmtree(root, ignore_errors=True)
