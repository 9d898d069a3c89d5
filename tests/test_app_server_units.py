"""The app-server backend's pieces without a server: codec, connection, translator, argv."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from trio_codex_shim import process_tree
from trio_codex_shim.cli import parse
from trio_codex_shim.codex.app_server_backend import (
    app_server_argv,
    server_chain,
    thread_settings,
    turn_start_params,
)
from trio_codex_shim.codex.app_server_events import (
    TurnError,
    TurnTranslator,
    answer_server_request,
    classify_rpc_error,
    classify_turn_error,
)
from trio_codex_shim.codex.app_server_rpc import (
    Ignored,
    RpcClosed,
    RpcCodec,
    RpcConnection,
    RpcRemoteError,
    RpcTimeout,
    TextInput,
    ThreadResult,
    ThreadStartParams,
    TurnInterruptParams,
    TurnSteerParams,
)
from trio_codex_shim.codex.events import (
    AgentMessage,
    Failure,
    FailureKind,
    Notice,
    TokenUsage,
    TurnFailed,
)
from trio_codex_shim.options import BackendKind, OnBusy, Sandbox, ShimOptions

NOW = dt.datetime(2026, 4, 16, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
THREAD = "thr-1"
TURN = "turn-1"


def raw(obj: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(obj))


# -- codec -------------------------------------------------------------------------


def test_requests_are_numbered_lines_in_camel_case_without_nones() -> None:
    codec = RpcCodec()
    first, line = codec.request(
        "thread/start", ThreadStartParams(cwd="/w", approval_policy="never", sandbox="read-only")
    )
    second, _ = codec.request("turn/interrupt", TurnInterruptParams(THREAD, TURN))
    assert (first, second) == (1, 2)
    assert line.endswith(b"\n")
    assert msgspec.json.decode(line) == {
        "id": 1,
        "method": "thread/start",
        "params": {"cwd": "/w", "approvalPolicy": "never", "sandbox": "read-only"},
    }
    steer = TurnSteerParams(THREAD, TURN, (TextInput("more"),))
    _, line = codec.request("turn/steer", steer)
    assert msgspec.json.decode(line)["params"] == {
        "threadId": THREAD,
        "expectedTurnId": TURN,
        "input": [{"type": "text", "text": "more"}],
    }
    assert codec.notification("initialized") == b'{"method":"initialized"}\n'
    assert msgspec.json.decode(codec.result("srv-1", {"decision": "decline"})) == {
        "id": "srv-1",
        "result": {"decision": "decline"},
    }
    assert msgspec.json.decode(codec.error(9, -32601, "no")) == {
        "id": 9,
        "error": {"code": -32601, "message": "no"},
    }


def test_turn_start_carries_the_prompt_and_effort() -> None:
    params = turn_start_params(ShimOptions(reasoning_effort="low"), THREAD, "do it")
    assert msgspec.json.decode(msgspec.json.encode(params)) == {
        "threadId": THREAD,
        "input": [{"type": "text", "text": "do it"}],
        "effort": "low",
    }
    params = turn_start_params(ShimOptions(reasoning_effort=None), THREAD, "x")
    assert "effort" not in msgspec.to_builtins(params)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"id":1,"result":{}}', "response"),
        (b'{"id":1,"result":null}', "response"),
        (b'{"id":"a","error":{"code":-32600,"message":"no"}}', "response"),
        (b'{"method":"turn/started","params":{"x":1}}', "notification"),
        (b'{"method":"initialized"}', "notification"),
        (b'{"id":5,"method":"item/tool/requestUserInput","params":{}}', "request"),
        (b'{"id":5}', "invalid"),
        (b"{}", "invalid"),
    ],
)
def test_incoming_kinds(line: bytes, kind: str) -> None:
    assert RpcCodec().decode(line).kind == kind


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        RpcCodec().decode(b"not json")
    with pytest.raises(msgspec.DecodeError):
        RpcCodec().decode(b'{"id":[1]}')


# -- connection --------------------------------------------------------------------


async def _serve_lines(
    stream: trio.abc.ReceiveStream, conn: RpcConnection, answer: Any
) -> list[dict[str, Any]]:
    """Read the client's lines; answer each request with ``answer(request)``."""
    seen: list[dict[str, Any]] = []
    buf = b""
    while True:
        chunk = await stream.receive_some()
        if not chunk:
            return seen
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = msgspec.json.decode(line)
            seen.append(msg)
            reply = answer(msg)
            if reply is not None:
                conn.deliver(RpcCodec().decode(msgspec.json.encode(reply)))


async def test_connection_matches_responses_and_reports_errors() -> None:
    to_server, from_client = trio.testing.memory_stream_one_way_pair()
    conn = RpcConnection(to_server)

    def answer(msg: dict[str, Any]) -> Any:
        if msg["method"] == "thread/start":
            return {"id": msg["id"], "result": {"thread": {"id": THREAD, "extra": [1, 2]}}}
        if msg["method"] == "thread/resume":
            return {"id": msg["id"], "error": {"code": -32600, "message": "no rollout found"}}
        return None  # never answered

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_lines, from_client, conn, answer)
        with trio.fail_after(5):
            result = await conn.request("thread/start", {}, ThreadResult, timeout_secs=5)
            assert result.thread.id == THREAD
            with pytest.raises(RpcRemoteError) as err:
                await conn.request("thread/resume", {"threadId": "x"}, Ignored, timeout_secs=5)
            assert err.value.code == -32600
            assert err.value.message == "no rollout found"
            with pytest.raises(RpcTimeout):
                await conn.request("turn/interrupt", {}, Ignored, timeout_secs=0.05)
        conn.close("server gone")
        with pytest.raises(RpcClosed):
            await conn.request("turn/start", {}, Ignored, timeout_secs=5)
        nursery.cancel_scope.cancel()


async def test_closing_wakes_a_waiting_request() -> None:
    to_server, _from_client = trio.testing.memory_stream_one_way_pair()
    conn = RpcConnection(to_server)
    caught: list[BaseException] = []

    async def call() -> None:
        try:
            await conn.request("turn/start", {}, Ignored, timeout_secs=30)
        except RpcClosed as exc:
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        conn.close("codex app-server exited")
    assert len(caught) == 1
    assert "codex app-server exited" in str(caught[0])


async def test_a_broken_pipe_closes_the_connection() -> None:
    to_server, from_client = trio.testing.memory_stream_one_way_pair()
    await from_client.aclose()
    conn = RpcConnection(to_server)
    with pytest.raises(RpcClosed):
        await conn.notify("initialized")
    assert conn.closed


# -- translator --------------------------------------------------------------------


def completed(status: str, error: Any = None, turn: str = TURN) -> msgspec.Raw:
    return raw({"threadId": THREAD, "turn": {"id": turn, "status": status, "error": error}})


def test_a_completed_turn() -> None:
    tr = TurnTranslator(THREAD)
    tr.started(TURN)
    item = {"threadId": THREAD, "turnId": TURN, "item": {"type": "agentMessage", "text": "Hi"}}
    assert tr.feed("item/completed", raw(item)) == [AgentMessage("Hi")]
    usage = {
        "threadId": THREAD,
        "turnId": TURN,
        "tokenUsage": {
            "total": {
                "totalTokens": 2100,
                "inputTokens": 2000,
                "cachedInputTokens": 500,
                "outputTokens": 100,
                "reasoningOutputTokens": 40,
            },
            "last": {
                "totalTokens": 1050,
                "inputTokens": 1000,
                "cachedInputTokens": 0,
                "outputTokens": 50,
                "reasoningOutputTokens": 20,
            },
            "modelContextWindow": 258400,
        },
    }
    assert tr.feed("thread/tokenUsage/updated", raw(usage)) == [
        TokenUsage(
            scope="thread",
            input_tokens=2000,
            cached_input_tokens=500,
            output_tokens=100,
            reasoning_output_tokens=40,
            last_input_tokens=1000,
            last_output_tokens=50,
            context_window=258400,
        )
    ]
    assert not tr.done
    assert tr.feed("turn/completed", completed("completed")) == []
    assert tr.done
    assert tr.status == "completed"
    assert tr.feed("item/completed", raw(item)) == []  # nothing after the end


def test_other_threads_turns_and_stale_turns_are_ignored() -> None:
    tr = TurnTranslator(THREAD, stale=frozenset({"old"}))
    other = {"threadId": "thr-2", "turnId": TURN, "item": {"type": "agentMessage", "text": "x"}}
    assert tr.feed("item/completed", raw(other)) == []
    assert tr.feed("turn/completed", completed("completed", turn="old")) == []
    started = {"threadId": THREAD, "turn": {"id": TURN, "status": "inProgress"}}
    assert tr.feed("turn/started", raw(started)) == []
    assert tr.turn_id == TURN
    assert tr.feed("turn/completed", completed("completed", turn="another")) == []
    assert not tr.done
    assert tr.feed("turn/completed", completed("interrupted")) == []
    assert tr.status == "interrupted"


def test_unknown_and_malformed_notifications_are_ignored() -> None:
    tr = TurnTranslator(THREAD)
    assert tr.feed("thread/realtime/sdp", raw({"whatever": [1, 2]})) == []
    assert tr.feed("item/completed", raw({"item": "not an object"})) == []
    assert tr.feed("item/completed", raw({"item": {"type": "hookPrompt", "id": "h"}})) == []
    assert tr.feed("turn/completed", raw([1, 2, 3])) == []
    assert not tr.done


def test_a_failed_turn_is_classified_from_its_error() -> None:
    tr = TurnTranslator(THREAD, now=NOW)
    tr.started(TURN)
    error = {
        "message": "You've hit your usage limit. Please try again at 11:52 PM.",
        "codexErrorInfo": "usageLimitExceeded",
        "additionalDetails": None,
    }
    note = {"error": error, "willRetry": False, "threadId": THREAD, "turnId": TURN}
    assert tr.feed("error", raw(note)) == []
    events = tr.feed("turn/completed", completed("failed", error))
    assert len(events) == 1
    assert isinstance(events[0], TurnFailed)
    failure = events[0].failure
    assert failure.kind is FailureKind.USAGE_LIMIT
    assert failure.retry_at_label == "2026-04-16 23:52"
    assert tr.status == "failed"


def test_a_failed_turn_without_its_error_uses_the_error_notification() -> None:
    tr = TurnTranslator(THREAD)
    retrying = {"message": "reconnecting", "codexErrorInfo": "serverOverloaded"}
    final = {"message": "stream gone", "codexErrorInfo": {"responseStreamDisconnected": {}}}
    for err, again in ((retrying, True), (final, False)):
        note = {"error": err, "willRetry": again, "threadId": THREAD, "turnId": TURN}
        assert tr.feed("error", raw(note)) == []
    (event,) = tr.feed("turn/completed", completed("failed", None))
    assert event == TurnFailed(Failure(FailureKind.OTHER, "stream gone"))


def test_warning_notifications_become_notices() -> None:
    tr = TurnTranslator(THREAD)
    assert tr.feed("warning", raw({"message": "careful", "threadId": THREAD})) == [
        Notice("codex: careful")
    ]
    assert tr.feed("warning", raw({"message": "not ours", "threadId": "thr-9"})) == []


@pytest.mark.parametrize(
    ("info", "message", "kind"),
    [
        ("contextWindowExceeded", "Codex ran out of room", FailureKind.CONTEXT_WINDOW),
        ("usageLimitExceeded", "limit", FailureKind.USAGE_LIMIT),
        ("unauthorized", "who?", FailureKind.AUTH),
        ({"httpConnectionFailed": {"httpStatusCode": 401}}, "401", FailureKind.AUTH),
        ({"responseStreamConnectionFailed": {"httpStatusCode": 401}}, "x", FailureKind.AUTH),
        ({"httpConnectionFailed": {"httpStatusCode": 500}}, "usage limit", FailureKind.OTHER),
        ("rateLimitExceeded", "slow", FailureKind.RATE_LIMIT),
        ("serverOverloaded", "busy", FailureKind.OVERLOADED),
        ("sessionBudgetExceeded", "budget", FailureKind.OTHER),
        ("someFutureKind", "context window exceeded", FailureKind.OTHER),
        (None, "ran out of room in the model's context window", FailureKind.CONTEXT_WINDOW),
        (None, "unexpected status 401 Unauthorized", FailureKind.AUTH),
        (None, "boom", FailureKind.OTHER),
    ],
)
def test_classification_prefers_codex_error_info(
    info: Any, message: str, kind: FailureKind
) -> None:
    failure = classify_turn_error(TurnError(message, info), now=NOW)
    assert failure.kind is kind
    assert failure.message == message


def test_additional_details_are_kept_in_the_message() -> None:
    failure = classify_turn_error(TurnError("failed", "other", "details here"))
    assert failure.message == "failed (details here)"


def test_an_unknown_thread_on_resume_is_thread_not_found() -> None:
    exc = RpcRemoteError("thread/resume", -32600, "no rollout found for thread id abc")
    failure = classify_rpc_error(exc)
    assert failure.kind is FailureKind.THREAD_NOT_FOUND
    assert "no rollout found" in failure.message
    other = classify_rpc_error(RpcRemoteError("turn/start", -32603, "no rollout found"))
    assert other.kind is FailureKind.OTHER


@pytest.mark.parametrize(
    ("method", "result"),
    [
        ("item/commandExecution/requestApproval", {"decision": "decline"}),
        ("item/fileChange/requestApproval", {"decision": "decline"}),
        ("item/tool/requestUserInput", {"answers": {}}),
        ("mcpServer/elicitation/request", {"action": "decline"}),
        ("item/permissions/requestApproval", {"permissions": {}, "scope": "turn"}),
        ("item/tool/call", {"contentItems": [], "success": False}),
        ("account/chatgptAuthTokens/refresh", None),
        ("some/future/request", None),
    ],
)
def test_server_requests_get_refusals_in_the_schema_shape(method: str, result: Any) -> None:
    answer = answer_server_request(method)
    assert answer.result == result
    assert method in answer.notice


def test_legacy_approvals_are_denied_with_a_reason() -> None:
    for method in ("execCommandApproval", "applyPatchApproval"):
        decision = answer_server_request(method).result["decision"]
        assert isinstance(decision["denied"]["rejection"], str)


# -- command line and settings -----------------------------------------------------


def test_argv_and_thread_settings() -> None:
    opts = ShimOptions(
        codex_config=('model_provider="mock"',),
        codex_args=("--enable", "foo"),
        reasoning_effort=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
    )
    assert app_server_argv(opts, "codex") == [
        "codex",
        "app-server",
        "-c",
        'model_provider="mock"',
        "--enable",
        "foo",
    ]
    assert thread_settings(opts) == ("never", "workspace-write")
    assert thread_settings(ShimOptions()) == ("never", "danger-full-access")
    assert thread_settings(ShimOptions(sandbox=Sandbox.READ_ONLY)) == ("never", "read-only")


def test_cli_backend_and_on_busy(tmp_path: Path) -> None:
    options, _, _ = parse(["--cwd", str(tmp_path)])
    assert (options.backend, options.on_busy) == (BackendKind.EXEC, OnBusy.QUEUE)
    options, _, _ = parse(
        ["--backend", "app-server", "--on-busy", "steer", "--codex-config", "a=1"]
    )
    assert (options.backend, options.on_busy) == (BackendKind.APP_SERVER, OnBusy.STEER)
    assert options.codex_config == ("a=1",)
    with pytest.raises(SystemExit) as refused:
        parse(["--on-busy", "steer"])
    assert refused.value.code == 2


def test_server_chain_of_this_process_is_just_itself() -> None:
    assert server_chain(os.getpid()) == {os.getpid()}


async def test_terminate_descendants_spares_excluded_pids_but_not_their_children() -> None:
    assert process_tree.enable_subreaper()
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    server = await trio.lowlevel.open_process(
        [sys.executable, "-c", script], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        with trio.fail_after(20):
            tool = int((await server.stdout.receive_some()).decode())
            with process_tree.owned(server.pid):
                stopped = await process_tree.terminate_descendants(0.5, exclude={server.pid})
        assert tool in stopped
        assert server.pid not in stopped
        assert not process_tree.is_alive(tool)
        assert server.returncode is None
    finally:
        server.kill()
        with trio.CancelScope(shield=True), trio.fail_after(5):
            await server.wait()
