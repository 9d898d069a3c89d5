"""The mock Responses API server, driven by a raw h11 client and by the real Codex CLI."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import msgspec
import pytest
import trio

from trio_codex_shim.testing.mock_model import (
    ApplyPatch,
    ExecCommand,
    Message,
    MockModel,
    RawItem,
    Reasoning,
    RecordedRequest,
    Reply,
    Usage,
    codex_settings,
    open_mock_model,
    serve_mock_model,
)

TIMEOUT = 10.0
REAL_CODEX_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------
# A minimal HTTP/1.1 client over Trio sockets (h11)
# --------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool  # the body ended properly (EndOfMessage)
    events: list[tuple[str, Any]] = field(default_factory=list)

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    def event_types(self) -> list[str]:
        return [name for name, _ in self.events]


def parse_sse(body: bytes) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    for record in body.split(b"\n\n"):
        if not record.strip():
            continue
        name = ""
        data: Any = None
        for line in record.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[len(b"event: ") :].decode()
            elif line.startswith(b"data: "):
                data = msgspec.json.decode(line[len(b"data: ") :])
        assert data is not None
        assert data["type"] == name
        events.append((name, data))
    return events


class Client:
    """One kept-alive connection to the server."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, server: MockModel) -> Client:
        stream = await trio.open_tcp_stream(server.host, server.port)
        return cls(stream, f"{server.host}:{server.port}")

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", self.host), ("content-length", str(len(body))), *headers]
        await self.send(h11.Request(method=method, target=path, headers=all_headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        return await self.read_answer()

    async def read_answer(self) -> Answer:
        response: h11.Response | None = None
        chunks: list[bytes] = []
        complete = False
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                break  # connection closed in the middle of the body
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                complete = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
        assert response is not None, "no response head"
        headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        body = b"".join(chunks)
        events = parse_sse(body) if headers.get("content-type") == "text/event-stream" else []
        return Answer(response.status_code, headers, body, complete, events)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def post_responses(server: MockModel, payload: Any = None) -> Answer:
    client = await Client.connect(server)
    try:
        body = msgspec.json.encode(payload if payload is not None else {"input": []})
        headers = [("content-type", "application/json")]
        return await client.request("POST", "/v1/responses", body, headers)
    finally:
        await client.aclose()


@pytest.fixture
async def server() -> AsyncIterator[MockModel]:
    async with open_mock_model() as srv:
        yield srv


def output_items(answer: Answer) -> list[Any]:
    return [data["item"] for name, data in answer.events if name == "response.output_item.done"]


# --------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------


async def test_default_reply_is_plain_ok(server: MockModel) -> None:
    with trio.fail_after(TIMEOUT):
        answer = await post_responses(server)
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.complete
    assert answer.event_types() == [
        "response.created",
        "response.output_item.done",
        "response.completed",
    ]
    (item,) = output_items(answer)
    assert item["type"] == "message"
    assert item["role"] == "assistant"
    assert item["content"][0] == {"type": "output_text", "text": "ok", "annotations": []}
    created = answer.events[0][1]["response"]["id"]
    assert answer.events[-1][1]["response"]["id"] == created


async def test_scripted_replies_arrive_in_order_then_default(server: MockModel) -> None:
    server.script(
        Reply.text("first"),
        Reply.reasoning(["step 1", "step 2"], "second"),
        Reply.shell("echo hi", workdir="/w"),
        Reply.patch_add_file("hello.txt", "hi\nthere\n"),
    )
    assert server.pending == 4
    with trio.fail_after(TIMEOUT):
        answers = [await post_responses(server) for _ in range(5)]
    assert server.pending == 0

    assert output_items(answers[0])[0]["content"][0]["text"] == "first"

    reasoning, message = output_items(answers[1])
    assert reasoning["type"] == "reasoning"
    assert [part["text"] for part in reasoning["summary"]] == ["step 1", "step 2"]
    assert message["content"][0]["text"] == "second"

    (call,) = output_items(answers[2])
    assert call["type"] == "function_call"
    assert call["name"] == "exec_command"
    assert msgspec.json.decode(call["arguments"]) == {
        "cmd": "echo hi",
        "tty": False,
        "login": False,
        "workdir": "/w",
    }

    (patch,) = output_items(answers[3])
    assert patch["type"] == "custom_tool_call"
    assert patch["name"] == "apply_patch"
    assert patch["input"] == (
        "*** Begin Patch\n*** Add File: hello.txt\n+hi\n+there\n*** End Patch\n"
    )
    assert call["call_id"] != patch["call_id"]

    assert output_items(answers[4])[0]["content"][0]["text"] == "ok"


async def test_explicit_call_ids_and_raw_items(server: MockModel) -> None:
    raw = {"type": "web_search_call", "id": "ws_1", "status": "completed"}
    server.script(
        Reply.of(
            ExecCommand(cmd="ls", call_id="call_a", yield_time_ms=500),
            ApplyPatch(patch="*** Begin Patch\n*** End Patch\n", call_id="call_b"),
            RawItem(msgspec.json.encode(raw)),
        )
    )
    with trio.fail_after(TIMEOUT):
        answer = await post_responses(server)
    shell, patch, web = output_items(answer)
    assert shell["call_id"] == "call_a"
    assert msgspec.json.decode(shell["arguments"])["yield_time_ms"] == 500
    assert patch["call_id"] == "call_b"
    assert web == raw


async def test_usage_figures_are_reported(server: MockModel) -> None:
    server.script(
        Reply.text("x").with_usage(1000, 50, cached_tokens=200, reasoning_tokens=20),
        Reply.text("y", usage=Usage(input_tokens=7)),
    )
    with trio.fail_after(TIMEOUT):
        first = await post_responses(server)
        second = await post_responses(server)
    assert first.events[-1][1]["response"]["usage"] == {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 1050,
    }
    assert second.events[-1][1]["response"]["usage"]["input_tokens"] == 7


async def test_http_errors_carry_status_json_body_and_headers(server: MockModel) -> None:
    body = {"error": {"type": "usage_limit_reached", "message": "limit", "resets_at": 1}}
    server.script(
        Reply.http_error(429, body, headers=[("retry-after", "30")]),
        Reply.http_error(500),
        Reply.usage_limit(1_800_000_000, resets_in_seconds=60),
        Reply.http_error(403, "<html>blocked</html>"),
    )
    with trio.fail_after(TIMEOUT):
        limited, broken, usage_limit, forbidden = [await post_responses(server) for _ in range(4)]

    assert (limited.status, limited.complete, limited.json()) == (429, True, body)
    assert limited.headers["content-type"] == "application/json"
    assert limited.headers["retry-after"] == "30"

    assert broken.status == 500
    assert broken.json()["error"]["message"] == "mock error 500"

    assert usage_limit.status == 429
    assert usage_limit.json() == {
        "error": {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": "plus",
            "resets_at": 1_800_000_000,
            "resets_in_seconds": 60,
        }
    }
    assert forbidden.body == b"<html>blocked</html>"


async def test_response_failed_carries_code_and_message(server: MockModel) -> None:
    server.script(Reply.failed("context_length_exceeded", "too long", Message("partial")))
    with trio.fail_after(TIMEOUT):
        answer = await post_responses(server)
    assert answer.status == 200
    assert answer.complete
    assert answer.event_types() == [
        "response.created",
        "response.output_item.done",
        "response.failed",
    ]
    error = answer.events[-1][1]["response"]["error"]
    assert error == {"code": "context_length_exceeded", "message": "too long"}


async def test_cut_drops_the_connection_before_completed(server: MockModel) -> None:
    server.script(Reply.cut(Message("partial")))
    with trio.fail_after(TIMEOUT):
        answer = await post_responses(server)
    assert answer.status == 200
    assert not answer.complete
    assert answer.event_types() == ["response.created", "response.output_item.done"]


async def test_cut_eof_ends_the_body_cleanly_without_final_event(server: MockModel) -> None:
    server.script(Reply.cut(how="eof"), Reply.text("after"))
    with trio.fail_after(TIMEOUT):
        client = await Client.connect(server)
        try:
            first = await client.request("POST", "/v1/responses", b"{}")
            second = await client.request("POST", "/v1/responses", b"{}")  # same connection
        finally:
            await client.aclose()
    assert first.complete
    assert first.event_types() == ["response.created"]
    assert output_items(second)[0]["content"][0]["text"] == "after"


async def test_delay_holds_the_reply_back(server: MockModel) -> None:
    server.script(Reply.text("late").with_delay(0.3))
    start = trio.current_time()
    with trio.fail_after(TIMEOUT):
        answer = await post_responses(server)
    assert trio.current_time() - start >= 0.3
    assert output_items(answer)[0]["content"][0]["text"] == "late"


async def test_hanging_reply_is_dropped_when_the_client_leaves(server: MockModel) -> None:
    server.script(Reply.hanging(), Reply.text("next"))
    with trio.fail_after(TIMEOUT):
        client = await Client.connect(server)
        await client.send(
            h11.Request(
                method="POST",
                target="/v1/responses",
                headers=[("host", client.host), ("content-length", "2")],
            )
        )
        await client.send(h11.Data(data=b"{}"))
        await client.send(h11.EndOfMessage())
        await server.wait_for_responses_requests(1)
        with trio.move_on_after(0.2):  # nothing must come back while it hangs
            data = await client.stream.receive_some(1)
            pytest.fail(f"hanging reply sent {data!r}")
        await client.aclose()
        answer = await post_responses(server)
    assert output_items(answer)[0]["content"][0]["text"] == "next"


async def test_stalled_stream_sends_items_then_nothing(server: MockModel) -> None:
    server.script(Reply.stall(Message("so far")))
    with trio.fail_after(TIMEOUT):
        client = await Client.connect(server)
        try:
            await client.send(
                h11.Request(
                    method="POST",
                    target="/v1/responses",
                    headers=[("host", client.host), ("content-length", "0")],
                )
            )
            await client.send(h11.EndOfMessage())
            received = b""
            while b"response.output_item.done" not in received:
                received += await client.stream.receive_some(65536)
            with trio.move_on_after(0.2) as idle:
                await client.stream.receive_some(65536)
            assert idle.cancelled_caught, "a stalled stream must stay silent"
        finally:
            await client.aclose()


async def test_server_stops_while_a_request_hangs() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_model() as server:
            server.script(Reply.hanging())
            client = await Client.connect(server)
            await client.send(
                h11.Request(
                    method="POST",
                    target="/v1/responses",
                    headers=[("host", client.host), ("content-length", "0")],
                )
            )
            await client.send(h11.EndOfMessage())
            await server.wait_for_responses_requests(1)
        # the server closed the connection on its way out
        assert await client.stream.receive_some(1) == b""
        await client.aclose()


# --------------------------------------------------------------------------------------
# Other routes, connections, recording
# --------------------------------------------------------------------------------------


async def test_other_paths_get_json_404_and_websockets_426(server: MockModel) -> None:
    with trio.fail_after(TIMEOUT):
        client = await Client.connect(server)
        try:
            models = await client.request("GET", "/v1/models?client_version=0.169.0")
            # kept alive: a second request on the same connection
            scripted = await client.request("POST", "/v1/responses", b"{}")
        finally:
            await client.aclose()
        client = await Client.connect(server)
        try:
            upgrade = await client.request(
                "GET",
                "/v1/responses",
                headers=[("connection", "Upgrade"), ("upgrade", "websocket")],
            )
        finally:
            await client.aclose()
    assert models.status == 404
    assert models.json()["error"]["code"] == "not_found"
    assert scripted.status == 200
    assert upgrade.status == 426
    assert [(r.method, r.path, r.is_responses) for r in server.requests] == [
        ("GET", "/v1/models?client_version=0.169.0", False),
        ("POST", "/v1/responses", True),
        ("GET", "/v1/responses", False),
    ]
    assert len(server.responses_requests) == 1
    # nothing was consumed from the script by the other routes
    assert server.pending == 0


async def test_requests_are_recorded_with_headers_and_body(server: MockModel) -> None:
    payload = {"model": "gpt-5.5", "input": [{"role": "user", "content": "hi"}]}
    with trio.fail_after(TIMEOUT):
        await post_responses(server, payload)
        client = await Client.connect(server)
        try:
            zipped = gzip.compress(msgspec.json.encode(payload))
            await client.request("POST", "/v1/responses", zipped, [("content-encoding", "gzip")])
        finally:
            await client.aclose()
    first, second = server.requests
    assert (first.index, second.index) == (0, 1)
    assert first.method == "POST"
    assert first.header("Content-Type") == "application/json"
    assert first.header("x-missing") is None
    assert first.json() == payload
    assert second.json() == payload  # gzip undone
    assert first.received_at <= second.received_at


async def test_wait_for_responses_requests(server: MockModel) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post_responses, server)
        nursery.start_soon(post_responses, server)
        with trio.fail_after(TIMEOUT):
            await server.wait_for_responses_requests(2)
    assert len(server.responses_requests) == 2


async def test_nursery_start_api_and_custom_default() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            srv: MockModel = await nursery.start(
                lambda task_status: serve_mock_model(
                    default=Reply.text("default!"), task_status=task_status
                )
            )
            assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
            answer = await post_responses(srv)
            nursery.cancel_scope.cancel()
    assert output_items(answer)[0]["content"][0]["text"] == "default!"


def recorded(body: Any) -> RecordedRequest:
    return RecordedRequest(
        index=0,
        method="POST",
        path="/v1/responses",
        headers=(),
        body=msgspec.json.encode(body),
        received_at=0.0,
    )


def test_recorded_request_helpers_read_codex_input() -> None:
    request = recorded(
        {
            "tools": [{"type": "function", "name": "exec_command"}, {"type": "web_search"}],
            "input": [
                {
                    "type": "message",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "You are Codex"}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {
                            "type": "input_text",
                            "text": "<environment_context>...</environment_context>",
                        }
                    ],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "first prompt"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "first answer"}],
                },
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "exec_command",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "c1", "output": "hi\n"},
                {
                    "type": "custom_tool_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "Success."}],
                },
                {"role": "user", "content": "plain string content"},
            ],
        }
    )
    assert request.is_responses
    assert request.input_texts() == [
        "<environment_context>...</environment_context>",
        "first prompt",
        "first answer",
        "plain string content",
    ]
    assert request.user_texts()[-1] == "plain string content"
    assert request.input_messages()[0] == ("developer", "You are Codex")
    assert request.tool_outputs() == ["hi\n", "Success."]
    assert request.tool_names() == ["exec_command"]
    assert len(request.input_items()) == 8


def test_recorded_request_helpers_tolerate_odd_bodies() -> None:
    empty = RecordedRequest(
        index=0, method="GET", path="/v1/models", headers=(), body=b"", received_at=0.0
    )
    assert not empty.is_responses
    assert empty.json() is None
    assert empty.input_texts() == []
    assert empty.tool_outputs() == []
    assert empty.tool_names() == []
    assert recorded([1, 2]).input_items() == []
    assert recorded({"input": "text"}).input_items() == []


def test_reply_builders_are_frozen_and_composable() -> None:
    base = Reply.text("hi")
    changed = base.with_usage(10, 2).with_delay(1.5).with_headers(("x-a", "1"))
    assert base.usage == Usage()
    assert changed.usage == Usage(input_tokens=10, output_tokens=2)
    assert (changed.delay, changed.headers) == (1.5, (("x-a", "1"),))
    assert changed.items == (Message("hi"),)
    assert Reply.reasoning("why", "because").items == (Reasoning(("why",)), Message("because"))
    assert Reply.cut().end == "close"
    assert Reply.stall().end == "stall"
    assert Reply.hanging().hang
    with pytest.raises(AttributeError):
        base.delay = 3.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Codex settings and the standalone server
# --------------------------------------------------------------------------------------


def test_codex_settings_are_valid_toml_overrides(tmp_path: Path) -> None:
    settings = codex_settings(
        "http://127.0.0.1:1234/v1",
        tmp_path,
        stream_idle_timeout_ms=2000,
        extra_config={"model_reasoning_effort": '"low"'},
    )
    args = settings.config_args
    assert args[0::2] == ("-c", "-c", "-c")
    parsed: dict[str, Any] = {}
    for pair in args[1::2]:
        key, _, value = pair.partition("=")
        parsed[key] = tomllib.loads(f"v = {value}")["v"]
    assert parsed["model_provider"] == "mock"
    assert parsed["model_providers.mock"] == {
        "name": "mock",
        "base_url": "http://127.0.0.1:1234/v1",
        "wire_api": "responses",
        "supports_websockets": False,
        "request_max_retries": 0,
        "stream_max_retries": 0,
        "stream_idle_timeout_ms": 2000,
    }
    assert parsed["model_reasoning_effort"] == "low"
    assert settings.env == {"CODEX_HOME": str(tmp_path), "OPENAI_API_KEY": "dummy"}
    merged = settings.environ({"PATH": "/bin", "OPENAI_API_KEY": "real"})
    assert merged == {"PATH": "/bin", "CODEX_HOME": str(tmp_path), "OPENAI_API_KEY": "dummy"}


async def test_standalone_server_prints_its_settings_and_serves() -> None:
    argv = [sys.executable, "-m", "trio_codex_shim.testing.mock_model", "--port", "0"]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        with trio.fail_after(TIMEOUT):
            text = b""
            while b"codex args:" not in text or not text.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, f"server exited early: {text!r}"
                text += chunk
        first = text.decode().splitlines()[0]
        assert first.startswith("mock model listening: http://127.0.0.1:")
        url = urlsplit(first.split(": ", 1)[1])
        assert url.path == "/v1"
        assert 'model_provider="mock"' in text.decode()
        assert url.hostname is not None
        assert url.port is not None
        with trio.fail_after(TIMEOUT):
            stream = await trio.open_tcp_stream(url.hostname, url.port)
            client = Client(stream, url.netloc)
            try:
                answer = await client.request("POST", "/v1/responses", b"{}")
            finally:
                await client.aclose()
        assert output_items(answer)[0]["content"][0]["text"] == "ok"
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(TIMEOUT):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.move_on_after(TIMEOUT, shield=True):
                await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()


# --------------------------------------------------------------------------------------
# The real Codex CLI against the mock
# --------------------------------------------------------------------------------------


async def run_codex(
    codex_bin: Path,
    server: MockModel,
    home: Path,
    workdir: Path,
    prompt: str,
    *resume: str,
) -> tuple[int, list[Any], str]:
    """One ``codex exec --json`` turn; returns (exit code, JSONL events, stderr)."""
    settings = codex_settings(server.base_url, home)
    argv = [
        os.fspath(codex_bin),
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-m",
        "gpt-5.5",
        *settings.config_args,
        "--dangerously-bypass-approvals-and-sandbox",
        "--disable",
        "shell_snapshot",
        *resume,
        "-",
    ]

    async def kill_group(proc: trio.Process) -> None:
        # launcher and native binary share the new process group
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    with trio.fail_after(REAL_CODEX_TIMEOUT):
        result = await trio.run_process(
            argv,
            stdin=prompt.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=workdir,
            env=settings.environ(),
            start_new_session=True,
            deliver_cancel=kill_group,
        )
    events = [msgspec.json.decode(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, events, result.stderr.decode(errors="replace")


@pytest.mark.real_codex
async def test_real_codex_plain_turn(codex_bin: Path, server: MockModel, tmp_path: Path) -> None:
    home, workdir = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    workdir.mkdir()
    server.script(Reply.text("Hello from the mock").with_usage(100, 3, cached_tokens=10))

    code, events, stderr = await run_codex(codex_bin, server, home, workdir, "say hello")

    assert code == 0, stderr
    assert [e["type"] for e in events] == [
        "thread.started",
        "turn.started",
        "item.completed",
        "turn.completed",
    ]
    assert events[2]["item"]["type"] == "agent_message"
    assert events[2]["item"]["text"] == "Hello from the mock"
    usage = events[3]["usage"]
    assert (usage["input_tokens"], usage["cached_input_tokens"], usage["output_tokens"]) == (
        100,
        10,
        3,
    )
    (request,) = server.responses_requests
    assert request.user_texts()[-1] == "say hello"
    assert "exec_command" in request.tool_names()


@pytest.mark.real_codex
async def test_real_codex_tool_call_then_resume_carries_history(
    codex_bin: Path, server: MockModel, tmp_path: Path
) -> None:
    home, workdir = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    workdir.mkdir()
    server.script(Reply.shell("echo from-tool"), Reply.text("ran it"), Reply.text("second"))

    code, events, stderr = await run_codex(codex_bin, server, home, workdir, "run something")
    assert code == 0, stderr
    thread_id = events[0]["thread_id"]
    done = [e["item"] for e in events if e["type"] == "item.completed"]
    assert done[0]["type"] == "command_execution"
    assert done[0]["aggregated_output"] == "from-tool\n"
    assert done[0]["exit_code"] == 0
    assert "from-tool" in server.responses_requests[1].tool_outputs()[0]

    code, events, stderr = await run_codex(
        codex_bin, server, home, workdir, "and again", "resume", thread_id
    )
    assert code == 0, stderr
    assert events[0] == {"type": "thread.started", "thread_id": thread_id}
    resumed = server.responses_requests[2]
    assert resumed.input_texts()[-3:] == ["run something", "ran it", "and again"]
    assert "from-tool" in resumed.tool_outputs()[0]


# --------------------------------------------------------------------------------------
# Golden JSONL captured from the real CLI with this mock (docs/codex-cli-observed.md)
# --------------------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "codex_exec"


def test_codex_exec_fixtures_are_jsonl_and_indexed() -> None:
    index = msgspec.json.decode((FIXTURES / "index.json").read_bytes())
    files = sorted(FIXTURES.glob("*.jsonl"))
    assert {f.stem for f in files} == set(index)
    for path in files:
        events = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
        assert all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events), path
        text = path.read_text()
        assert "/tmp/" not in text, path
        failed = any(e["type"] == "turn.failed" for e in events)
        if failed:
            assert index[path.stem]["exit_code"] == 1, path
    assert (FIXTURES / "resume_unknown_uuid.jsonl").read_bytes() == b""
