"""The fake Codex CLI, driven the way a shim drives it: through its launcher."""

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from trio_codex_shim.testing.fake_codex import (
    BigLine,
    CloseStdout,
    Emit,
    EmitBytesHex,
    EmitMany,
    Exit,
    Hang,
    KillSelf,
    Scenario,
    Sleep,
    Spawn,
    Stderr,
    Turn,
    Usage,
    answer_turn,
    fail_turn,
    read_invocations,
    read_pids,
    steps_turn,
    write_fake_codex_launcher,
)

TIMEOUT = 30.0


class Fake:
    """A scenario file plus a launcher for it, in a test's tmp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scenario = root / "scenario.json"
        self.codex = root / "bin" / "codex"

    def setup(self, scenario: Scenario) -> None:
        scenario.write(self.scenario)
        write_fake_codex_launcher(self.codex, self.scenario)

    async def run(
        self, *args: str, stdin: bytes = b"hello\n", env: dict[str, str] | None = None
    ) -> "subprocess.CompletedProcess[bytes]":
        with trio.fail_after(TIMEOUT):
            return await trio.run_process(
                [str(self.codex), *args],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
            )

    async def open(self, *args: str, prompt: bytes | None = b"hello\n") -> trio.Process:
        """Start the fake with pipes; write ``prompt`` and close stdin unless it is None."""
        proc = await trio.lowlevel.open_process(
            [str(self.codex), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        if prompt is not None:
            assert proc.stdin is not None
            with trio.fail_after(TIMEOUT):
                await proc.stdin.send_all(prompt)
                await proc.stdin.aclose()
        return proc


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


@pytest.fixture
def spawned(fake: Fake) -> Iterator[list[int]]:
    """Kills every grandchild the fake recorded, and checks it is gone."""
    yield []
    pids = read_pids(fake.scenario) if fake.scenario.exists() else []
    for pid in pids:
        _kill_and_wait_gone(pid)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _kill_and_wait_gone(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    end = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < end, f"pid {pid} survived SIGKILL"
        time.sleep(0.01)


def _events(stdout: bytes) -> list[Any]:
    return [msgspec.json.decode(line) for line in stdout.splitlines()]


async def _read_until_eof(proc: trio.Process) -> bytes:
    assert proc.stdout is not None
    chunks = []
    while chunk := await proc.stdout.receive_some(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


async def _kill(proc: trio.Process) -> None:
    proc.kill()
    await proc.wait()


# ----------------------------------------------------------------------- exec


async def test_answer_turn(fake: Fake) -> None:
    usage = Usage(input_tokens=120, cached_input_tokens=20, output_tokens=7)
    fake.setup(Scenario(turns=[answer_turn("Hi there", thread_id="thr-1", usage=usage)]))

    done = await fake.run("exec", "--json", "-m", "gpt-5.5", "-c", "k=1", "-", stdin=b"the prompt")

    assert done.returncode == 0, done.stderr
    assert _events(done.stdout) == [
        {"type": "thread.started", "thread_id": "thr-1"},
        {"type": "turn.started"},
        {
            "type": "item.completed",
            "item": {"id": "item_0", "type": "agent_message", "text": "Hi there"},
        },
        {"type": "turn.completed", "usage": msgspec.to_builtins(usage)},
    ]
    (rec,) = read_invocations(fake.scenario)
    assert rec.kind == "exec"
    assert rec.index == 0
    assert rec.argv == ["exec", "--json", "-m", "gpt-5.5", "-c", "k=1", "-"]
    assert rec.stdin == "the prompt"
    assert rec.prompt_arg is None  # the prompt came on stdin only
    assert rec.model == "gpt-5.5"
    assert rec.config == ["k=1"]
    assert rec.resume_id is None
    assert rec.thread_id == "thr-1"


async def test_resume_recorded_and_usage_is_the_thread_total(fake: Fake) -> None:
    usage = Usage(input_tokens=100, output_tokens=3)
    fake.setup(
        Scenario(
            turns=[
                answer_turn("one", thread_id="thr-1", usage=usage),
                answer_turn("two", usage=usage),
            ],
            known_threads=[],  # only threads the fake itself started
        )
    )

    first = await fake.run("exec", "--json", "-")
    second = await fake.run(
        "exec", "--json", "--skip-git-repo-check", "resume", "thr-1", "-", stdin=b"again"
    )

    assert first.returncode == 0
    assert second.returncode == 0, second.stderr
    events = _events(second.stdout)
    # Codex 0.169 prints thread.started with the resumed id, and the thread's total usage.
    assert events[0] == {"type": "thread.started", "thread_id": "thr-1"}
    assert events[-1]["usage"]["input_tokens"] == 200
    assert events[-1]["usage"]["output_tokens"] == 6
    records = read_invocations(fake.scenario)
    assert [r.index for r in records] == [0, 1]
    assert records[1].resume_id == "thr-1"
    assert records[1].argv[-3:] == ["resume", "thr-1", "-"]
    assert records[1].flags == ["json", "skip-git-repo-check"]
    assert records[1].stdin == "again"


async def test_unknown_resume_id_fails_like_codex(fake: Fake) -> None:
    fake.setup(
        Scenario(
            turns=[answer_turn("never"), Turn(resume_unknown=True, answer="never")],
            known_threads=["thr-known"],
        )
    )

    unknown = await fake.run("exec", "--json", "resume", "thr-nope", "-")
    forced = await fake.run("exec", "--json", "resume", "thr-known", "-")

    for done, tid in ((unknown, "thr-nope"), (forced, "thr-known")):
        assert done.returncode == 1
        assert done.stdout == b""
        assert f"no rollout found for thread id {tid}".encode() in done.stderr


async def test_garbage_and_invalid_utf8_lines(fake: Fake) -> None:
    fake.setup(
        Scenario(
            turns=[
                steps_turn(
                    Emit("not json {"),
                    EmitBytesHex("ff fe 0a"),
                    Emit({"type": "mystery.event", "id": "$THREAD_ID"}),
                    EmitBytesHex("7b22747970"),  # a truncated last line, no newline
                )
            ]
        )
    )

    done = await fake.run("exec", "--json", "resume", "thr-x", "-")

    assert done.returncode == 0
    assert done.stdout == (b'not json {\n\xff\xfe\n{"type":"mystery.event","id":"thr-x"}\n{"typ')


@pytest.mark.parametrize(
    ("turn", "args", "stdin", "code", "stderr"),
    [
        (steps_turn(Emit({"type": "turn.started"}), Exit(7)), ("-",), b"hi", 7, b""),
        (fail_turn("boom"), ("-",), b"hi", 1, b""),
        (steps_turn(Stderr("dying"), KillSelf("SIGKILL")), (), b"hi", -signal.SIGKILL, b"dying"),
        (answer_turn("x"), ("--bogus", "-"), b"hi", 2, b"unexpected argument '--bogus'"),
        (answer_turn("x"), ("resume", "t", "-C", "/tmp"), b"hi", 2, b"unexpected argument '-C'"),
        (answer_turn("x"), ("-m",), b"hi", 2, b"a value is required for '--model <MODEL>'"),
        (answer_turn("x"), ("resume", "a", "b", "c"), b"hi", 2, b"unexpected argument 'c'"),
        (answer_turn("x"), ("-",), b"", 1, b"No prompt provided via stdin."),
    ],
    ids=[
        "exit-step",
        "fail",
        "kill-self",
        "unknown-option",
        "exec-option-after-resume",
        "missing-value",
        "extra-positional",
        "empty-prompt",
    ],
)
async def test_exit_codes(
    fake: Fake, turn: Turn, args: tuple[str, ...], stdin: bytes, code: int, stderr: bytes
) -> None:
    fake.setup(Scenario(turns=[turn]))

    done = await fake.run("exec", "--json", *args, stdin=stdin)

    assert done.returncode == code
    assert stderr in done.stderr
    if turn.fail is not None:
        assert _events(done.stdout)[-2:] == [
            {"type": "error", "message": "boom"},
            {"type": "turn.failed", "error": {"message": "boom"}},
        ]
    (rec,) = read_invocations(fake.scenario)
    assert (rec.index is None) == (code in (1, 2) and turn.fail is None)


async def test_json_flag_is_required(fake: Fake) -> None:
    fake.setup(Scenario(turns=[answer_turn("x")]))
    done = await fake.run("exec", "-")
    assert done.returncode == 2
    assert done.stdout == b""


async def test_turns_in_order_then_exhausted(fake: Fake) -> None:
    fake.setup(Scenario(turns=[answer_turn("a"), answer_turn("b")], when_exhausted="error"))

    answers = []
    for _ in range(2):
        done = await fake.run("exec", "--json", "-")
        answers.append(_events(done.stdout)[2]["item"]["text"])
    extra = await fake.run("exec", "--json", "-")

    assert answers == ["a", "b"]
    assert extra.returncode == 3
    assert b"exhausted" in extra.stderr


async def test_parallel_runs_claim_distinct_turns(fake: Fake) -> None:
    fake.setup(Scenario(turns=[answer_turn(str(i)) for i in range(6)]))
    answers: list[str] = []

    async def one() -> None:
        done = await fake.run("exec", "--json", "-")
        answers.append(_events(done.stdout)[2]["item"]["text"])

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)

    assert sorted(answers) == [str(i) for i in range(6)]


async def test_env_is_recorded(fake: Fake) -> None:
    fake.setup(Scenario())
    env = {"PATH": os.environ["PATH"], "CLAUDECODE": "1"}

    done = await fake.run("exec", "--json", "-", env=env)

    assert done.returncode == 0
    (rec,) = read_invocations(fake.scenario)
    assert rec.env["CLAUDECODE"] == "1"
    assert rec.env["CODEX_MANAGED_BY_NPM"] is None
    assert "CLAUDECODE" in rec.env_names
    assert _events(done.stdout)[2]["item"]["text"] == "OK"  # no turns: the default answer


async def test_setsid_grandchild_outlives_the_fake(fake: Fake, spawned: list[int]) -> None:
    fake.setup(
        Scenario(turns=[answer_turn("started", steps=[Spawn.of(["sleep", "300"], setsid=True)])])
    )

    done = await fake.run("exec", "--json", "-")

    assert done.returncode == 0
    (pid,) = read_pids(fake.scenario)
    assert _alive(pid)
    assert os.getsid(pid) == pid  # a session of its own, like Codex's tool commands
    assert os.getsid(pid) != os.getsid(0)


async def test_grandchild_keeping_stdout_holds_the_pipe_open(
    fake: Fake, spawned: list[int]
) -> None:
    fake.setup(
        Scenario(turns=[steps_turn(Emit("first"), Spawn.of(["sleep", "300"], keep_stdout=True))])
    )
    proc = await fake.open("exec", "--json", "-")
    try:
        assert proc.stdout is not None
        with trio.fail_after(TIMEOUT):
            assert await proc.wait() == 0
            assert await proc.stdout.receive_some() == b"first\n"
        with trio.move_on_after(0.2) as cs:
            await proc.stdout.receive_some()
        assert cs.cancelled_caught  # no EOF: the grandchild still has the pipe
        (pid,) = read_pids(fake.scenario)
        _kill_and_wait_gone(pid)
        with trio.fail_after(TIMEOUT):
            assert await proc.stdout.receive_some() == b""
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)


async def test_close_stdout_keeps_running(fake: Fake) -> None:
    fake.setup(Scenario(turns=[steps_turn(Emit("bye"), CloseStdout(), Sleep(300))]))
    proc = await fake.open("exec", "--json", "-")
    try:
        with trio.fail_after(TIMEOUT):
            assert await _read_until_eof(proc) == b"bye\n"
        assert proc.poll() is None  # EOF on stdout, process alive
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)
    assert proc.returncode == -signal.SIGKILL


async def test_hang_until_killed(fake: Fake) -> None:
    fake.setup(Scenario(turns=[Turn(thread_id="t", steps=[Hang()])]))
    proc = await fake.open("exec", "--json", "-")
    try:
        assert proc.stdout is not None
        with trio.fail_after(TIMEOUT):
            got = b""
            while got.count(b"\n") < 2:
                got += await proc.stdout.receive_some()
        assert [e["type"] for e in _events(got)] == ["thread.started", "turn.started"]
        assert proc.poll() is None
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)


async def test_emit_many_and_big_line_stream(fake: Fake) -> None:
    event = {"type": "item.completed", "item": {"id": "i", "type": "agent_message", "text": "x"}}
    count, size = 300_000, 50_000_000
    fake.setup(
        Scenario(
            turns=[
                steps_turn(
                    EmitMany.of(event, count),
                    BigLine.of(size, prefix='{"type":"big","text":"', suffix='"}'),
                    Emit("tail"),
                )
            ]
        )
    )
    proc = await fake.open("exec", "--json", "-")
    lines, total, last = 0, 0, b""
    try:
        assert proc.stdout is not None
        with trio.fail_after(120):
            while chunk := await proc.stdout.receive_some(1 << 20):
                lines += chunk.count(b"\n")
                total += len(chunk)
                last = (last + chunk)[-32:]
            assert await proc.wait() == 0
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)
    line = msgspec.json.encode(event) + b"\n"
    assert lines == count + 2
    assert total == count * len(line) + size + 1 + len(b"tail\n")
    assert last.endswith(b'xxxx"}\ntail\n')


def test_scenario_round_trips_through_json(tmp_path: Path) -> None:
    scenario = Scenario(
        turns=[
            answer_turn("hi", thread_id="t", usage=Usage(input_tokens=1), reasoning="hmm"),
            fail_turn("no", fail_as="error", codex_error_info="usageLimitExceeded"),
            [Emit({"a": 1}), EmitBytesHex("00"), EmitMany.of("x", 3), BigLine(10), Stderr("e")],
            steps_turn(Sleep(0.5), CloseStdout(), Spawn.of(["true"]), KillSelf("TERM"), Hang()),
        ],
        known_threads=["t"],
        pids_file="pids.txt",
    )
    path = scenario.write(tmp_path / "s.json")

    assert Scenario.load(path) == scenario
    raw = msgspec.json.decode(path.read_bytes())
    assert raw["turns"][1] == {
        "fail": "no",
        "as": "error",
        "codex_error_info": "usageLimitExceeded",
    }
    assert raw["turns"][2][0] == {"emit": {"a": 1}}


@pytest.mark.parametrize(
    "turn",
    [[{"emitt": "x"}], [{"emit": "x", "sleep": 1}], {"answer": "a", "fail": "b"}],
)
def test_bad_scenarios_are_rejected(tmp_path: Path, turn: Any) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(msgspec.json.encode({"turns": [turn]}))
    with pytest.raises(msgspec.ValidationError):
        Scenario.load(path)


# ----------------------------------------------------------------- app-server


class RpcClient:
    """Line-delimited JSON-RPC over the fake app-server's pipes."""

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.buffer = b""
        self.next_id = 1

    async def send(self, method: str, params: dict[str, Any]) -> int:
        request_id = self.next_id
        self.next_id += 1
        msg = {"id": request_id, "method": method, "params": params}
        await self.stdin.send_all(msgspec.json.encode(msg) + b"\n")
        return request_id

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            while b"\n" not in self.buffer:
                chunk = await self.stdout.receive_some()
                assert chunk, "app-server closed stdout"
                self.buffer += chunk
            line, _, self.buffer = self.buffer.partition(b"\n")
            yield msgspec.json.decode(line)

    async def until(self, pred: Any) -> list[dict[str, Any]]:
        """Messages up to and including the first one matching ``pred``."""
        seen = []
        async for msg in self.messages():
            seen.append(msg)
            if pred(msg):
                return seen
        raise AssertionError("unreachable")

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = await self.send(method, params)
        return (await self.until(lambda m: m.get("id") == request_id))[-1]


async def test_app_server_initialize_and_one_turn(fake: Fake) -> None:
    usage = Usage(input_tokens=100, cached_input_tokens=10, output_tokens=3)
    fake.setup(Scenario(turns=[answer_turn("Hello", thread_id="thr-app", usage=usage)]))
    proc = await fake.open("app-server", prompt=None)
    try:
        rpc = RpcClient(proc)
        with trio.fail_after(TIMEOUT):
            init = await rpc.call("initialize", {"clientInfo": {"name": "t", "version": "0"}})
            assert "userAgent" in init["result"]
            started = await rpc.call("thread/start", {"cwd": str(fake.root), "model": "gpt-5.5"})
            assert started["result"]["thread"]["id"] == "thr-app"
            turn_req = await rpc.send(
                "turn/start", {"threadId": "thr-app", "input": [{"type": "text", "text": "hi"}]}
            )
            seen = await rpc.until(lambda m: m.get("method") == "turn/completed")
            await proc.stdin.aclose()  # type: ignore[union-attr]
            assert await proc.wait() == 0
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)

    response = next(m for m in seen if m.get("id") == turn_req)
    turn_id = response["result"]["turn"]["id"]
    methods = [m.get("method") for m in seen if "method" in m]
    assert methods[0] == "thread/started"
    assert methods[1:] == [
        "turn/started",
        "item/started",
        "item/completed",
        "item/started",
        "item/completed",
        "thread/tokenUsage/updated",
        "turn/completed",
    ]
    agent = [m for m in seen if m.get("method") == "item/completed"][-1]["params"]
    assert agent["item"] == {"type": "agentMessage", "id": "msg_0", "text": "Hello"}
    assert agent["turnId"] == turn_id
    tokens = next(m for m in seen if m.get("method") == "thread/tokenUsage/updated")
    assert tokens["params"]["tokenUsage"]["last"]["inputTokens"] == 100
    assert tokens["params"]["tokenUsage"]["total"]["totalTokens"] == 103
    completed = seen[-1]["params"]["turn"]
    assert (completed["id"], completed["status"]) == (turn_id, "completed")
    kinds = [(r.kind, r.prompt) for r in read_invocations(fake.scenario)]
    assert kinds == [
        ("app-server", None),
        ("initialize", None),
        ("thread/start", None),
        ("turn/start", "hi"),
    ]


async def test_app_server_interrupt_and_failure(fake: Fake) -> None:
    fake.setup(
        Scenario(
            turns=[
                steps_turn(Hang()),
                fail_turn("out of room", codex_error_info="contextWindowExceeded"),
            ],
            known_threads=[],
        )
    )
    proc = await fake.open("app-server", prompt=None)
    try:
        rpc = RpcClient(proc)
        with trio.fail_after(TIMEOUT):
            unknown = await rpc.call("thread/resume", {"threadId": "nope"})
            assert unknown["error"]["message"] == "no rollout found for thread id nope"
            tid = (await rpc.call("thread/start", {}))["result"]["thread"]["id"]
            text = [{"type": "text", "text": "go"}]
            turn = (await rpc.call("turn/start", {"threadId": tid, "input": text}))["result"]
            turn_id = turn["turn"]["id"]
            await rpc.until(lambda m: m.get("method") == "turn/started")
            steer = await rpc.call(
                "turn/steer", {"threadId": tid, "expectedTurnId": turn_id, "input": text}
            )
            assert steer["result"] == {"turnId": turn_id}
            req = await rpc.send("turn/interrupt", {"threadId": tid, "turnId": turn_id})
            seen = await rpc.until(lambda m: m.get("method") == "turn/completed")
            assert seen[0] == {"id": req, "result": {}}
            assert seen[-1]["params"]["turn"]["status"] == "interrupted"

            await rpc.send("turn/start", {"threadId": tid, "input": text})
            seen = await rpc.until(lambda m: m.get("method") == "turn/completed")
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)

    error = next(m for m in seen if m.get("method") == "error")["params"]
    assert error["error"]["codexErrorInfo"] == "contextWindowExceeded"
    assert error["willRetry"] is False
    final = seen[-1]["params"]["turn"]
    assert final["status"] == "failed"
    assert final["error"]["message"] == "out of room"


async def test_app_server_raw_notifications_and_exit(fake: Fake) -> None:
    raw = [
        {"method": "item/completed", "params": {"turnId": "$TURN_ID", "item": {"type": "new"}}},
        {
            "method": "turn/completed",
            "params": {"threadId": "$THREAD_ID", "turn": {"id": "$TURN_ID"}},
        },
    ]
    fake.setup(Scenario(turns=[Turn(thread_id="t9", app_server_notifications=raw, exit_code=5)]))
    proc = await fake.open("app-server", prompt=None)
    try:
        rpc = RpcClient(proc)
        with trio.fail_after(TIMEOUT):
            await rpc.call("thread/start", {})
            text = [{"type": "text", "text": "go"}]
            turn = await rpc.call("turn/start", {"threadId": "t9", "input": text})
            turn_id = turn["result"]["turn"]["id"]
            await rpc.until(lambda m: m.get("method") == "turn/completed")
            assert await proc.wait() == 5
            rest = rpc.buffer + await _read_until_eof(proc)
    finally:
        with trio.fail_after(TIMEOUT, shield=True):
            await _kill(proc)

    assert rest == b""  # exactly one turn/completed, the scripted one
    records = read_invocations(fake.scenario)
    assert records[-1].kind == "turn/start"
    assert turn_id.startswith("019a")
