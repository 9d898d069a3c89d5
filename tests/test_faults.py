"""The fault matrix, Codex side: a real shim process, the fake Codex CLI, /proc checks.

For every way Codex can misbehave the shim must keep serving (Ping → Pong),
give every message exactly one terminal event, and leave no process behind.
The orchestrator-side faults are in ``test_faults_orchestrator.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec
import pytest
import trio
from fault_helpers import check_accounted, left_alive, vm_hwm_kib
from shim_helpers import events_so_far, fake_shim, read_invocations, until

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, ShimClient, open_shim
from trio_codex_shim.testing.fake_codex import (
    BigLine,
    CloseStdout,
    Emit,
    EmitBytesHex,
    EmitMany,
    Exit,
    Hang,
    KillSelf,
    Sleep,
    Spawn,
    Stderr,
    agent_message_event,
    answer_turn,
    read_pids,
    steps_turn,
    thread_started_event,
    turn_completed_event,
)

THREAD = "019a2000-0000-7000-8000-00000000fa17"
LIMIT = 30.0
RSS_SANITY_KIB = 200 * 1024
"""A generous ceiling on the shim's peak RSS (the precise figure is a benchmark)."""


async def assert_serving(shim: ShimClient) -> None:
    """The shim answers Ping and GetState."""
    await shim.ping()
    state = await shim.get_state()
    assert state.state in (p.ShimState.IDLE, p.ShimState.WORKING)


async def shut_down_clean(shim: ShimClient, scenario: Path) -> None:
    """Shutdown: exit code 0 and nothing the fake started is still alive."""
    await shim.shutdown(timeout_secs=5)
    assert shim.process is not None
    assert shim.process.returncode == 0
    assert left_alive(scenario) == []


# ---------------------------------------------------------------------------
# Codex cannot be started
# ---------------------------------------------------------------------------


def _unstartable(tmp: Path, kind: str) -> Path:
    path = tmp / f"codex-{kind}"
    if kind == "not_executable":
        path.write_text("#!/bin/sh\necho hi\n")
        path.chmod(0o644)
    elif kind == "directory":
        path.mkdir()
    elif kind == "bad_interpreter":
        path.write_text("#!/no/such/interpreter\n")
        path.chmod(0o755)
    elif kind == "not_a_program":
        path.write_bytes(b"\x7fELF garbage, not a binary")
        path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    "kind", ["not_executable", "directory", "bad_interpreter", "not_a_program"]
)
async def test_codex_that_cannot_start_fails_each_message_and_the_shim_serves_on(
    tmp_path: Path, kind: str
) -> None:
    # (A missing binary: test_e2e_exec.py::test_missing_codex_fails_the_message_and_keeps_serving.)
    codex = _unstartable(tmp_path, kind)
    options = ClientOptions(
        args=("--codex", str(codex), "--cwd", str(tmp_path)), log_path=tmp_path / "shim.log"
    )
    with trio.fail_after(LIMIT):
        async with open_shim(options) as shim:
            events = shim.events()
            first = await shim.send("hi", message_id="m1")
            second = await shim.send("again", message_id="m2")
            for outcome in (first, second):
                result = await outcome.wait(LIMIT)
                assert isinstance(result, p.DeliveryFailed), result
                assert "could not be started" in result.reason
            await assert_serving(shim)
            seen = await events_so_far(shim, events)
            await shim.shutdown(timeout_secs=5)
            assert shim.process is not None
            assert shim.process.returncode == 0
    assert check_accounted(seen, ["m1", "m2"]) == []


# ---------------------------------------------------------------------------
# Codex ends badly
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 7])
async def test_codex_that_exits_at_once_without_jsonl(tmp_path: Path, code: int) -> None:
    setup = fake_shim(
        tmp_path,
        [steps_turn(Stderr("fatal: nothing to say"), Exit(code)), answer_turn("ok")],
    )
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            if code == 0:
                # A clean exit is a (silent) completion: Codex said nothing went wrong.
                assert result == p.Completion(message_id="m1", response="", last_lines="")
            else:
                assert isinstance(result, p.DeliveryFailed)
                assert f"status {code}" in result.reason
                assert "fatal: nothing to say" in result.reason
            later = await (await shim.send("again", message_id="m2")).wait(LIMIT)
            assert isinstance(later, p.Completion)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    assert check_accounted(seen, ["m1", "m2"]) == []


async def test_codex_killed_mid_turn(tmp_path: Path) -> None:
    crash = steps_turn(
        Emit(thread_started_event(THREAD)),
        Emit(agent_message_event("half an answer")),
        Spawn.of(["sleep", "300"]),
        KillSelf("SIGKILL"),
    )
    setup = fake_shim(tmp_path, [crash, answer_turn("ok", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert isinstance(result, p.DeliveryFailed)
            assert "status -9" in result.reason
            later = await (await shim.send("again", message_id="m2")).wait(LIMIT)
            assert isinstance(later, p.Completion)
            await assert_serving(shim)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    assert check_accounted(seen, ["m1", "m2"]) == []
    runs = [r for r in read_invocations(setup.scenario) if r.kind == "exec"]
    assert runs[1].resume_id == THREAD  # the crash did not lose the thread


async def test_silent_codex_gets_a_stall_warning_then_the_turn_timeout(tmp_path: Path) -> None:
    silent = steps_turn(
        Emit(thread_started_event(THREAD)), Spawn.of(["sleep", "300"]), Sleep(0.2), Hang()
    )
    setup = fake_shim(tmp_path, [silent], "--stall-warn", "1", "--turn-timeout", "2.5")
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            start = trio.current_time()
            outcome = await shim.send("hi", message_id="m1")
            await until(lambda: len(read_invocations(setup.scenario)) == 1)
            await assert_serving(shim)  # a silent turn does not block the commands
            result = await outcome.wait(LIMIT)
            elapsed = trio.current_time() - start
            assert isinstance(result, p.DeliveryFailed)
            assert "turn timed out after 2.5s" in result.reason
            assert 2.5 <= elapsed < 2.5 + 0.5 + 3  # timeout + stop grace + slack
            # The whole tree was stopped with the turn, not only at exit.
            assert left_alive(setup.scenario) == []
            await assert_serving(shim)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    stalls = [e for e in seen if isinstance(e, p.Warning) and e.idle_secs is not None]
    assert stalls, seen
    assert all(e.idle_secs >= 1 for e in stalls if e.idle_secs is not None)
    assert check_accounted(seen, ["m1"]) == []


# ---------------------------------------------------------------------------
# Codex prints what it should not
# ---------------------------------------------------------------------------

_BAD_UTF8_MESSAGE = (
    b'{"type":"item.completed","item":{"type":"agent_message","text":"caf\xc3\x28"}}\n'
)


async def test_garbage_and_invalid_utf8_on_stdout_are_skipped(tmp_path: Path) -> None:
    garbage = answer_turn(
        "the real answer",
        thread_id=THREAD,
        steps=[
            Emit("not json at all"),
            Emit('{"type": "item.completed", "item": '),  # cut short
            Emit("[1, 2, 3]"),
            Emit({"type": "item.completed", "item": 42}),
            Emit({"type": "no.such.event", "item": {"type": "no_such_item"}}),
            EmitBytesHex("ff fe fd 0a"),
            EmitBytesHex(_BAD_UTF8_MESSAGE.hex()),
            Emit("[" * 100_000 + "]" * 100_000),  # nesting deeper than any decoder's stack
            Emit('{"type":"thread.started","thread_id":' + "[" * 50_000 + "}"),
            EmitBytesHex("00 00 00 0a"),
            Stderr("garbage on stderr \x00\x1b[31m"),
        ],
    )
    setup = fake_shim(tmp_path, [garbage])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert result == p.Completion(
                message_id="m1", response="the real answer", last_lines="the real answer"
            )
            await assert_serving(shim)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    assert check_accounted(seen, ["m1"]) == []


async def test_a_100_mb_line_is_skipped_with_bounded_memory(tmp_path: Path) -> None:
    huge = answer_turn(
        "after the flood",
        thread_id=THREAD,
        steps=[
            BigLine(100_000_000),
            # A valid agent message over the 16 MiB line cap is skipped too.
            BigLine.of(
                20_000_000,
                prefix='{"type":"item.completed","item":{"type":"agent_message","text":"',
                suffix='"}}',
            ),
        ],
    )
    setup = fake_shim(tmp_path, [huge])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert isinstance(result, p.Completion)
            assert result.response == "after the flood"
            await assert_serving(shim)
            assert shim.process is not None
            peak = vm_hwm_kib(shim.process.pid)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    print(f"shim peak RSS: {peak} KiB")
    assert peak < RSS_SANITY_KIB, f"peak RSS {peak} KiB"
    assert check_accounted(seen, ["m1"]) == []
    assert "over the line cap" in (tmp_path / "shim.log").read_text()


async def test_an_agent_message_larger_than_a_frame_still_completes(tmp_path: Path) -> None:
    """Under the 16 MiB line cap but over the 1 MiB frame cap: the events are cut to fit."""
    text = "start " + "y" * 3_000_000 + " end"
    big = steps_turn(
        Emit(thread_started_event(THREAD)),
        Emit(agent_message_event(text)),
        Emit(turn_completed_event()),
    )
    setup = fake_shim(tmp_path, [big, answer_turn("small", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert isinstance(result, p.Completion)
            assert len(p.encode(result)) <= p.MAX_FRAME_BYTES
            assert result.response.startswith("start ")
            assert result.response.endswith(" end")
            capture = await shim.capture()
            assert len(p.encode(capture)) <= p.MAX_FRAME_BYTES
            await assert_serving(shim)
            later = await (await shim.send("again", message_id="m2")).wait(LIMIT)
            assert later == p.Completion(message_id="m2", response="small", last_lines="small")
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    assert check_accounted(seen, ["m1", "m2"]) == []


async def test_a_million_lines_keep_memory_and_the_log_bounded(tmp_path: Path) -> None:
    flood = answer_turn(
        "survived",
        thread_id=THREAD,
        steps=[
            EmitMany.of({"type": "item.started", "item": {"type": "reasoning"}}, 400_000),
            EmitMany.of("garbage line that is not json", 200_000),
            # Each of these is a bad thread id: one Warning, not 200,000.
            EmitMany.of({"type": "thread.started", "thread_id": "-x"}, 200_000),
            # Switching threads back and forth: one Warning, not 200,000.
            EmitMany.of(
                '{"type":"thread.started","thread_id":"0a"}\n'
                '{"type":"thread.started","thread_id":"0b"}',
                100_000,
            ),
        ],
    )
    setup = fake_shim(tmp_path, [flood])
    with trio.fail_after(LIMIT * 2):
        async with open_shim(setup.options) as shim:
            events = shim.events(buffer=2_000_000)
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT * 2)
            assert isinstance(result, p.Completion)
            assert result.response == "survived"
            await assert_serving(shim)
            assert shim.process is not None
            peak = vm_hwm_kib(shim.process.pid)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    print(f"shim peak RSS: {peak} KiB")
    assert peak < RSS_SANITY_KIB, f"peak RSS {peak} KiB"
    warnings = [e for e in seen if isinstance(e, p.Warning)]
    assert 2 <= len(warnings) <= 5, warnings
    assert check_accounted(seen, ["m1"]) == []
    log_size = (tmp_path / "shim.log").stat().st_size
    assert log_size < 2_000_000, f"the log grew to {log_size} bytes"


# ---------------------------------------------------------------------------
# Codex's pipes
# ---------------------------------------------------------------------------


async def test_codex_closes_stdout_but_keeps_running(tmp_path: Path) -> None:
    closer = steps_turn(
        Emit(thread_started_event(THREAD)), Spawn.of(["sleep", "300"]), CloseStdout(), Hang()
    )
    setup = fake_shim(
        tmp_path, [closer, answer_turn("ok", thread_id=THREAD)], "--turn-timeout", "3"
    )
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            outcome = await shim.send("hi", message_id="m1")
            await until(lambda: len(read_pids(setup.scenario)) == 1)
            for _ in range(5):  # the turn runs on, and the shim answers meanwhile
                await assert_serving(shim)
            assert not outcome.done
            result = await outcome.wait(LIMIT)
            assert isinstance(result, p.DeliveryFailed)
            assert "timed out" in result.reason
            assert left_alive(setup.scenario) == []
            later = await (await shim.send("again", message_id="m2")).wait(LIMIT)
            assert isinstance(later, p.Completion)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    assert check_accounted(seen, ["m1", "m2"]) == []


async def test_codex_closes_stdout_and_hangs_until_kill(tmp_path: Path) -> None:
    closer = steps_turn(Emit(thread_started_event(THREAD)), CloseStdout(), Hang())
    setup = fake_shim(tmp_path, [closer])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            outcome = await shim.send("hi", message_id="m1")
            await until(lambda: len(read_invocations(setup.scenario)) == 1)
            await assert_serving(shim)
            await shim.kill()
            assert shim.process is not None
            assert shim.process.returncode == 0
            assert isinstance(outcome.result, p.DeliveryFailed)
    assert left_alive(setup.scenario) == []


async def test_children_holding_stdout_do_not_hold_up_the_turn(tmp_path: Path) -> None:
    holder = answer_turn(
        "done",
        thread_id=THREAD,
        steps=[Spawn.of(["sleep", "300"], keep_stdout=True, keep_stderr=True)],
    )
    setup = fake_shim(tmp_path, [holder])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            start = trio.current_time()
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert trio.current_time() - start < 5  # the drain is 1 s
            assert result == p.Completion(message_id="m1", response="done", last_lines="done")
            await assert_serving(shim)
            again = await (await shim.send("again", message_id="m2")).wait(LIMIT)
            assert isinstance(again, p.Completion)
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    assert check_accounted(seen, ["m1", "m2"]) == []


# ---------------------------------------------------------------------------
# Security: argv, stdin, shell, environment
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["--config=evil", "-x", "resume", "x y", "$(touch pwned)"])
async def test_a_malicious_thread_id_never_reaches_argv(tmp_path: Path, evil: str) -> None:
    setup = fake_shim(tmp_path, [answer_turn("first", thread_id=evil), answer_turn("second")])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            events = shim.events()
            for mid in ("m1", "m2"):
                assert isinstance(
                    await (await shim.send("hi", message_id=mid)).wait(LIMIT), p.Completion
                )
            seen = await events_so_far(shim, events)
            await shut_down_clean(shim, setup.scenario)
    runs = [r for r in read_invocations(setup.scenario) if r.kind == "exec"]
    assert len(runs) == 2
    assert evil not in runs[1].argv
    assert "resume" not in runs[1].argv  # nothing valid to resume: a fresh thread
    assert any(isinstance(e, p.Warning) and "does not look like" in e.message for e in seen), seen
    assert not (setup.workspace / "pwned").exists()


@pytest.mark.parametrize(
    "body",
    ["--help", "-c model=evil", "--sandbox=danger-full-access x", "$(touch pwned)"],
)
async def test_a_prompt_that_looks_like_an_option_goes_only_on_stdin(
    tmp_path: Path, body: str
) -> None:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            result = await (await shim.send(body, message_id="m1")).wait(LIMIT)
            assert isinstance(result, p.Completion)
            await shut_down_clean(shim, setup.scenario)
    (run,) = read_invocations(setup.scenario)
    assert run.stdin is not None and body in run.stdin
    assert all(body not in arg for arg in run.argv)
    assert run.argv[-1] == "-"
    assert not (setup.workspace / "pwned").exists()
    assert not (tmp_path / "pwned").exists()


_SHELL_USES = re.compile(
    r"shell\s*=\s*True|os\.system\(|create_subprocess_shell|os\.popen\(|getstatusoutput|getoutput\("
    r"|os\.exec\w*p?e?\(|os\.spawn\w*\("
)


def test_no_shell_anywhere_in_the_package() -> None:
    package = Path(process_tree.__file__).parent
    offenders = []
    for source in sorted(package.rglob("*.py")):
        for n, line in enumerate(source.read_text().splitlines(), 1):
            if _SHELL_USES.search(line):
                offenders.append(f"{source.relative_to(package)}:{n}: {line.strip()}")
            # /bin/sh appears only in the client's fd trampoline (a fixed script, argv
            # passed as "$@") and in the fake CLI's launcher, never in the shim itself.
            if "/bin/sh" in line and source.name not in ("client.py", "fake_codex.py"):
                offenders.append(f"{source.relative_to(package)}:{n}: {line.strip()}")
    assert offenders == []


_ENV = {"SECRET_TOKEN": "hunter2", "KEEP_ME": "yes", "CLAUDECODE": "1", "NO_COLOR": "1"}
_RECORD = [*_ENV, "PATH"]


async def _recorded_env(tmp_path: Path, *args: str) -> tuple[dict[str, str | None], list[str]]:
    setup = fake_shim(tmp_path, [answer_turn("ok", thread_id=THREAD)], *args, record_env=_RECORD)
    options = msgspec.structs.replace(setup.options, env={**os.environ, **_ENV})
    with trio.fail_after(LIMIT):
        async with open_shim(options) as shim:
            assert isinstance(await (await shim.send("hi")).wait(LIMIT), p.Completion)
            await shut_down_clean(shim, setup.scenario)
    (run,) = read_invocations(setup.scenario)
    return run.env, run.env_names


async def test_env_drop_withholds_the_named_variables(tmp_path: Path) -> None:
    env, _ = await _recorded_env(tmp_path, "--env-drop", "SECRET_TOKEN", "--env-drop", "NO_COLOR")
    assert env["SECRET_TOKEN"] is None
    assert env["NO_COLOR"] is None
    assert env["CLAUDECODE"] is None  # always dropped
    assert env["KEEP_ME"] == "yes"
    assert env["PATH"] is not None


async def test_env_allow_passes_only_the_named_variables(tmp_path: Path) -> None:
    env, names = await _recorded_env(
        tmp_path, "--env-allow", "KEEP_ME", "--env-allow", "PATH", "--env-allow", "CLAUDECODE"
    )
    assert env["KEEP_ME"] == "yes"
    assert env["PATH"] is not None
    assert env["SECRET_TOKEN"] is None
    assert env["NO_COLOR"] is None
    assert env["CLAUDECODE"] is None  # dropped even when allowed
    # Beyond the list only what the fake's launcher adds: sh's PWD, Python's LC_CTYPE.
    assert set(names) - {"KEEP_ME", "PATH"} <= {"PWD", "SHLVL", "_", "LC_CTYPE"}, names


# ---------------------------------------------------------------------------
# Every input is bounded
# ---------------------------------------------------------------------------


async def test_the_transcript_rotates_within_its_cap(tmp_path: Path) -> None:
    transcript = tmp_path / "agent.log"
    cap = 4096
    chatty = answer_turn("line of agent text\n" * 150, thread_id=THREAD, steps=[Stderr("e" * 3000)])
    setup = fake_shim(
        tmp_path, [chatty], "--transcript", str(transcript), "--transcript-max-bytes", str(cap)
    )
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            for i in range(3):
                result = await (await shim.send("talk", message_id=f"m{i}")).wait(LIMIT)
                assert isinstance(result, p.Completion)
            await shut_down_clean(shim, setup.scenario)
    rotated = transcript.with_name(transcript.name + ".1")
    assert rotated.exists()
    assert transcript.stat().st_size <= cap
    assert rotated.stat().st_size <= cap
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("agent.log")) == [
        "agent.log",
        "agent.log.1",
    ]


async def test_the_stderr_tail_in_a_failure_is_bounded(tmp_path: Path) -> None:
    noisy = steps_turn(
        *[Stderr("noise " * 1000) for _ in range(200)], Stderr("the last words"), Exit(1)
    )
    setup = fake_shim(tmp_path, [noisy])
    with trio.fail_after(LIMIT):
        async with open_shim(setup.options) as shim:
            result = await (await shim.send("hi", message_id="m1")).wait(LIMIT)
            assert isinstance(result, p.DeliveryFailed)
            assert result.reason.rstrip().endswith("the last words")
            assert len(result.reason) < 8192 + 200  # the 8 KiB tail and a prefix
            await shut_down_clean(shim, setup.scenario)
    assert left_alive(setup.scenario) == []
