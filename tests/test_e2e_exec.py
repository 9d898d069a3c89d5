"""End to end: real framing over a socketpair, a real shim process, the fake Codex CLI."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio
from shim_helpers import fake_shim, read_invocations, read_pids, survivors, terminal_ids, until

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, open_shim
from trio_codex_shim.core.text import format_injected_message
from trio_codex_shim.framing import frame
from trio_codex_shim.testing.fake_codex import (
    Hang,
    Sleep,
    Spawn,
    Stderr,
    Turn,
    Usage,
    answer_turn,
    steps_turn,
)

THREAD = "019a2000-0000-7000-8000-000000000001"
LIMIT = 30  # seconds: the bound on every test's waits


async def test_a_turn_then_a_resumed_turn(tmp_path: Path) -> None:
    setup = fake_shim(
        tmp_path,
        [
            answer_turn(
                "one\ntwo\nthree", thread_id=THREAD, usage=Usage(input_tokens=100, output_tokens=5)
            ),
            answer_turn(
                "second answer", thread_id=THREAD, usage=Usage(input_tokens=150, output_tokens=7)
            ),
        ],
        "--stats-interval",
        "0.2",
    )
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            first = await shim.send("Fix the bug", sender="manager", message_id="m1")
            done = await first.wait(LIMIT)
            assert done == p.Completion(
                message_id="m1", response="one\ntwo\nthree", last_lines="one\ntwo\nthree"
            )
            second = await shim.send("And now?", sender="architect", message_id="m2")
            assert isinstance(await second.wait(LIMIT), p.Completion)
            capture = await shim.capture()
            assert capture.content == "second answer"
            assert (await shim.capture(last_n_lines=0)).content == ""
            state = await shim.get_state()
            assert state.state is p.ShimState.IDLE
            stats = None
            async for event in events:
                if isinstance(event, p.SessionStats) and event.output_tokens == 12:
                    stats = event
                    break
    assert stats is not None
    # Like the real CLI the fake reports the thread's running total (100, then
    # 250): the shim must report 250, not 100 + 250.
    assert (stats.input_tokens, stats.output_tokens) == (250, 12)
    runs = [r for r in read_invocations(setup.scenario) if r.kind == "exec"]
    assert len(runs) == 2
    assert runs[0].resume_id is None
    assert runs[1].resume_id == THREAD
    assert runs[0].stdin == format_injected_message("manager", "Fix the bug")
    assert runs[1].stdin == format_injected_message("architect", "And now?")
    # The prompt never reaches argv; the shape is batty's.
    for run in runs:
        assert not any("Fix the bug" in arg for arg in run.argv)
        assert run.argv[:2] == ["exec", "--json"]
        assert run.argv[-1] == "-"
    assert runs[1].argv[-3:-1] == ["resume", THREAD]


async def test_event_order_of_one_turn(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [answer_turn("hello", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            outcome = await shim.send("hi", message_id="m1")
            await outcome.wait(LIMIT)
            got = []
            async for event in events:
                if not isinstance(event, p.SessionStats):
                    got.append(event)
                if isinstance(event, p.Completion):
                    break
    assert got == [
        p.StateChanged(from_state=p.ShimState.IDLE, to=p.ShimState.WORKING, summary=""),
        p.MessageDelivered(id="m1"),
        p.StateChanged(from_state=p.ShimState.WORKING, to=p.ShimState.IDLE, summary="hello"),
        p.Completion(message_id="m1", response="hello", last_lines="hello"),
    ]


async def test_queue_overflow_drops_the_oldest_and_accounts_for_every_message(
    tmp_path: Path,
) -> None:
    slow = answer_turn("done", thread_id=THREAD, steps=[Sleep(1.0)])
    setup = fake_shim(tmp_path, [slow], "--queue-depth", "2")
    ids = [f"m{i}" for i in range(6)]
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            outcomes = [await shim.send(f"task {i}", message_id=mid) for i, mid in enumerate(ids)]
            results = {o.message_id: await o.wait(LIMIT) for o in outcomes}
            await shim.ping()
            seen = []
            while True:
                with trio.move_on_after(0.2):
                    seen.append(await events.receive(LIMIT))
                    continue
                break
    # m0 runs at once; m1..m5 queue into a depth-2 queue: m1, m2, m3 are dropped
    # (oldest first) and m4, m5 run after m0.
    assert isinstance(results["m0"], p.Completion)
    for mid in ("m1", "m2", "m3"):
        failed = results[mid]
        assert isinstance(failed, p.DeliveryFailed)
        assert "queue full" in failed.reason
    assert isinstance(results["m4"], p.Completion)
    assert isinstance(results["m5"], p.Completion)
    assert sorted(terminal_ids(seen)) == sorted(ids)  # exactly one terminal event each
    warnings = [e.message for e in seen if isinstance(e, p.Warning)]
    assert "message queued while agent working (depth: 1)" in warnings
    assert "message queued while agent working (depth: 2)" in warnings


async def test_bad_frames_get_errors_and_the_shim_keeps_serving(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            await shim.send_raw(frame(b"{not json"))
            await shim.send_raw(frame(b'{"cmd":"Explode"}'))
            await shim.send_raw(frame(b'{"cmd":"Resize","rows":"tall","cols":1}'))
            await shim.send_raw(frame(b'{"cmd":"SendMessage","from":"x"}'))
            await shim.ping()
            errors = []
            async for event in events:
                if isinstance(event, p.Error):
                    errors.append(event)
                if len(errors) == 4:
                    break
            outcome = await shim.send("still there?")
            assert isinstance(await outcome.wait(LIMIT), p.Completion)
    assert [e.command for e in errors] == ["unknown", "Explode", "Resize", "SendMessage"]
    assert "malformed" in errors[0].reason
    assert "$.rows" in errors[2].reason
    assert "body" in errors[3].reason


async def test_oversized_length_closes_the_connection(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            await shim.send_raw((2**20 + 1).to_bytes(4, "big") + b"{}")
            await shim.wait_closed(LIMIT)
            got = [e async for e in events]
            assert shim.process is not None
            assert await shim.process.wait() == 3
    assert any(isinstance(e, p.Error) and "exceeds" in e.reason for e in got)
    assert "frame length 1048577 exceeds" in (tmp_path / "shim.log").read_text()


def _escaping_turn() -> Turn:
    """A turn whose commands escape into sessions of their own, then hangs."""
    return steps_turn(Spawn.of(["sleep", "300"]), Spawn.of(["sleep", "301"]), Hang())


async def test_kill_stops_codex_and_every_process_it_started(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [_escaping_turn()])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            running = await shim.send("work", message_id="m1")
            queued = await shim.send("later", message_id="m2")
            await until(lambda: len(read_pids(setup.scenario)) == 2)
            await shim.kill()
            assert shim.process is not None
            assert shim.process.returncode == 0
            assert isinstance(running.result, p.DeliveryFailed)
            assert isinstance(queued.result, p.DeliveryFailed)
    assert survivors(setup.scenario) == []


async def test_shutdown_lets_the_turn_finish(tmp_path: Path) -> None:
    turn = answer_turn("finished", thread_id=THREAD, steps=[Sleep(0.5)])
    setup = fake_shim(tmp_path, [turn])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            outcome = await shim.send("work", message_id="m1")
            await shim.shutdown(timeout_secs=10)
    assert outcome.result == p.Completion(
        message_id="m1", response="finished", last_lines="finished"
    )


async def test_shutdown_deadline_stops_the_turn_with_zero_survivors(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [_escaping_turn()])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            outcome = await shim.send("work", message_id="m1")
            await until(lambda: len(read_pids(setup.scenario)) == 2)
            await shim.shutdown(timeout_secs=1)
            got = [e async for e in events]
    assert isinstance(outcome.result, p.DeliveryFailed)
    assert "shutting down" in outcome.result.reason
    assert (
        p.StateChanged(from_state=p.ShimState.WORKING, to=p.ShimState.DEAD, summary="shim exiting")
        in got
    )
    assert survivors(setup.scenario) == []


async def test_orchestrator_eof_is_a_shutdown_with_grace(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [_escaping_turn()], "--eof-grace", "0.5")
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            outcome = await shim.send("work", message_id="m1")
            await until(lambda: len(read_pids(setup.scenario)) == 2)
            await shim.send_eof()
            await shim.wait_closed(LIMIT)
            assert shim.process is not None
            assert await shim.process.wait() == 0
    assert isinstance(outcome.result, p.DeliveryFailed)
    assert survivors(setup.scenario) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signals_stop_the_shim_and_its_work(tmp_path: Path, sig: signal.Signals) -> None:
    setup = fake_shim(tmp_path, [_escaping_turn()], "--eof-grace", "0.5")
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            outcome = await shim.send("work", message_id="m1")
            await until(lambda: len(read_pids(setup.scenario)) == 2)
            assert shim.process is not None
            os.kill(shim.process.pid, sig)
            assert await shim.process.wait() == 128 + sig
    assert isinstance(outcome.result, p.DeliveryFailed)
    assert survivors(setup.scenario) == []


async def test_preserve_work_commits_a_dirty_tree(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)], "--preserve-work")
    ws = setup.workspace
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "base"]):
        await trio.run_process(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=ws)
    (ws / "half-done.txt").write_text("work in progress\n")
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            await shim.shutdown(timeout_secs=5)
    result = await trio.run_process(
        ["git", "log", "--format=%s", "--name-only", "-1"], cwd=ws, capture_stdout=True
    )
    log = result.stdout.decode()
    assert log.splitlines()[0] == "wip: auto-save before restart"
    assert "half-done.txt" in log


async def test_transcript_has_agent_text_and_stderr(tmp_path: Path) -> None:
    transcript = tmp_path / "agent.log"
    turn = answer_turn("the agent says hi", thread_id=THREAD, steps=[Stderr("codex warns")])
    setup = fake_shim(tmp_path, [turn], "--transcript", str(transcript))
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            await (await shim.send("hi")).wait(LIMIT)
    text = transcript.read_text()
    assert "the agent says hi" in text
    assert "[stderr] codex warns" in text


async def test_batty_invocation_is_accepted(tmp_path: Path) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    codex = setup.options.args[1]
    args = (
        "--id",
        "eng-1",
        "--agent-type",
        "codex",
        "--cmd",
        f"{codex} --ignored-flag",
        "--cwd",
        str(setup.workspace),
        "--sdk-mode",
        "--pty-log-path",
        str(tmp_path / "pty.log"),
        "--graceful-shutdown-timeout-secs",
        "3",
        "--auto-commit-on-restart",
        "false",
        "--rows",
        "50",
        "--cols",
        "220",
    )
    options = ClientOptions(
        argv=(*setup.options.argv, "shim"), args=args, log_path=tmp_path / "batty.log"
    )
    with trio.fail_after(LIMIT):
        async with open_shim(options) as shim:
            await shim.resize(10, 10)
            outcome = await (await shim.send("hi")).wait(LIMIT)
            assert isinstance(outcome, p.Completion)
    assert "ok" in (tmp_path / "pty.log").read_text()
    assert "[shim-codex eng-1]" in (tmp_path / "batty.log").read_text()


async def test_missing_codex_fails_the_message_and_keeps_serving(tmp_path: Path) -> None:
    options = ClientOptions(
        args=("--codex", str(tmp_path / "no-such-codex"), "--cwd", str(tmp_path)),
        log_path=tmp_path / "shim.log",
    )
    with trio.fail_after(LIMIT):
        async with open_shim(options) as shim:
            outcome = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert isinstance(outcome, p.DeliveryFailed)
            assert "could not be started" in outcome.reason
            await shim.ping()
