"""A scriptable mock of the OpenAI Responses API, for driving the real Codex CLI offline.

The server speaks HTTP/1.1 (h11 over Trio sockets, no threads) on 127.0.0.1 and
answers ``POST {base}/responses`` with a server-sent-event stream, one record per
event (``event: <type>\\ndata: <json>\\n\\n``). Each POST to ``/responses`` consumes
the next scripted :class:`Reply`; when the script is empty the server's default
reply (a plain assistant message ``"ok"`` unless told otherwise) is used. Every
request, to any path, is recorded as a :class:`RecordedRequest`.

With :func:`codex_settings`, ``codex exec`` 0.169.0 sends nothing but ``POST
/v1/responses`` (no ``/models`` fetch, no websocket attempt -- see
``docs/codex-cli-observed.md``). Any other request still gets an immediate JSON
``404`` (``426`` for a websocket upgrade), so a client never waits on the mock.

Typical use in a Trio test::

    async with open_mock_model() as server:
        server.script(Reply.shell("echo hi"), Reply.text("done"))
        settings = codex_settings(server.base_url, tmp_path / "codex-home")
        ...  # run `codex exec --json ... *settings.config_args` with settings.env
        assert server.responses_requests[1].tool_outputs()

Standalone: ``python -m trio_codex_shim.testing.mock_model [--port N]`` serves
the default reply until interrupted and prints the ``-c`` arguments to use.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shlex
import signal
import sys
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import h11
import msgspec
import trio

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_REPLY",
    "ApplyPatch",
    "CodexSettings",
    "ExecCommand",
    "Failure",
    "Message",
    "MockModel",
    "OutputItem",
    "RawItem",
    "Reasoning",
    "RecordedRequest",
    "Reply",
    "StreamEnd",
    "Usage",
    "codex_settings",
    "main",
    "open_mock_model",
    "serve_mock_model",
]

#: Seconds a kept-alive connection may sit idle (or a request may take to arrive
#: in full) before the server closes it.
DEFAULT_IDLE_TIMEOUT: Final = 120.0

_MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
_RECEIVE_SIZE: Final = 65536
_SERVER_HEADER: Final = ("server", "trio-codex-shim-mock-model")


# --------------------------------------------------------------------------------------
# Script: what the model answers
# --------------------------------------------------------------------------------------


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token figures sent in ``response.completed`` (``response.usage``).

    ``cached_tokens`` is part of ``input_tokens`` and ``reasoning_tokens`` part
    of ``output_tokens``, as in the real API; ``total_tokens`` is derived.
    """

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``usage`` object of a Responses API ``response``."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


class Message(msgspec.Struct, frozen=True, tag="message"):
    """An assistant message with one ``output_text`` part."""

    text: str


class Reasoning(msgspec.Struct, frozen=True, tag="reasoning"):
    """A reasoning item; each string is one ``summary_text`` part."""

    summary: tuple[str, ...]


class ExecCommand(msgspec.Struct, frozen=True, kw_only=True, tag="exec_command"):
    """A ``function_call`` of Codex's ``exec_command`` tool (a shell command).

    Codex runs it and calls the model again with a ``function_call_output``, so
    a second reply must be scripted (or the default one is used). An empty
    ``call_id`` is replaced by a unique ``call_N`` when the reply is sent.
    """

    cmd: str
    call_id: str = ""
    workdir: str | None = None
    yield_time_ms: int | None = None
    tty: bool = False
    login: bool = False

    def arguments(self) -> str:
        """The JSON-encoded ``arguments`` string of the function call."""
        args: dict[str, Any] = {"cmd": self.cmd, "tty": self.tty, "login": self.login}
        if self.workdir is not None:
            args["workdir"] = self.workdir
        if self.yield_time_ms is not None:
            args["yield_time_ms"] = self.yield_time_ms
        return msgspec.json.encode(args).decode()


class ApplyPatch(msgspec.Struct, frozen=True, kw_only=True, tag="apply_patch"):
    """A ``custom_tool_call`` of Codex's ``apply_patch`` tool (freeform patch text).

    An empty ``call_id`` is replaced by a unique ``call_N`` when the reply is sent.
    """

    patch: str
    call_id: str = ""


class RawItem(msgspec.Struct, frozen=True, tag="raw"):
    """Any output item, given as its literal JSON (sent as is)."""

    json: bytes


OutputItem = Message | Reasoning | ExecCommand | ApplyPatch | RawItem
"""One item of a reply's ``output``, sent as a ``response.output_item.done`` event."""


StreamEnd = Literal["final", "close", "eof", "stall"]
"""How a 200 reply's event stream ends; see :class:`Reply`."""


class Failure(msgspec.Struct, frozen=True):
    """The ``response.error`` of a ``response.failed`` event."""

    code: str
    message: str


def _encode_body(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return msgspec.json.encode(body)


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """One scripted answer to one ``POST /responses``.

    Sending goes in this order: wait ``delay`` seconds (or, with ``hang``, until
    the client disconnects or the server stops); if ``status`` is not 200 answer
    with that status and ``error_body`` (JSON) and stop; otherwise open the SSE
    stream, send ``response.created``, one ``response.output_item.done`` per item,
    then -- according to ``end`` -- ``response.failed`` (when ``failure`` is set)
    or ``response.completed`` with ``usage`` (``"final"``), or no final event at
    all: the connection is dropped mid-body (``"close"``), the HTTP body is ended
    cleanly (``"eof"``), or the stream stays open and silent until the client
    disconnects or the server stops (``"stall"``).

    Build replies with the class methods (``Reply.text("hi")``, ``Reply.shell(...)``,
    ``Reply.http_error(429, {...})``, ...) and adjust them with ``with_usage``,
    ``with_delay``, ``with_headers``.
    """

    items: tuple[OutputItem, ...] = ()
    usage: Usage = Usage()
    status: int = 200
    error_body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    failure: Failure | None = None
    end: StreamEnd = "final"
    delay: float = 0.0
    hang: bool = False

    # -- builders -----------------------------------------------------------------

    @classmethod
    def of(cls, *items: OutputItem, usage: Usage | None = None) -> Reply:
        """A completed response carrying ``items`` (in order)."""
        return cls(items=items, usage=usage if usage is not None else Usage())

    @classmethod
    def text(cls, text: str, *, usage: Usage | None = None) -> Reply:
        """A plain assistant message."""
        return cls.of(Message(text), usage=usage)

    @classmethod
    def reasoning(
        cls, summary: str | Sequence[str], text: str, *, usage: Usage | None = None
    ) -> Reply:
        """A reasoning item (one summary part per string), then an assistant message."""
        parts = (summary,) if isinstance(summary, str) else tuple(summary)
        return cls.of(Reasoning(parts), Message(text), usage=usage)

    @classmethod
    def shell(
        cls,
        cmd: str,
        *,
        call_id: str = "",
        workdir: str | None = None,
        yield_time_ms: int | None = None,
        usage: Usage | None = None,
    ) -> Reply:
        """An ``exec_command`` function call running ``cmd`` (Codex calls back with its output)."""
        call = ExecCommand(cmd=cmd, call_id=call_id, workdir=workdir, yield_time_ms=yield_time_ms)
        return cls.of(call, usage=usage)

    @classmethod
    def patch(cls, patch: str, *, call_id: str = "", usage: Usage | None = None) -> Reply:
        """An ``apply_patch`` custom tool call with the given patch text."""
        return cls.of(ApplyPatch(patch=patch, call_id=call_id), usage=usage)

    @classmethod
    def patch_add_file(
        cls, path: str, content: str, *, call_id: str = "", usage: Usage | None = None
    ) -> Reply:
        """An ``apply_patch`` call adding file ``path`` (relative to the cwd) with ``content``."""
        lines = content.splitlines()
        body = "".join(f"+{line}\n" for line in lines)
        patch = f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch\n"
        return cls.patch(patch, call_id=call_id, usage=usage)

    @classmethod
    def http_error(
        cls, status: int, body: object = None, *, headers: Iterable[tuple[str, str]] = ()
    ) -> Reply:
        """An HTTP error answer; ``body`` is JSON-encoded unless given as ``bytes``/``str``.

        Without a body a generic ``{"error": {"message", "type"}}`` object is sent.
        """
        if body is None:
            body = {"error": {"message": f"mock error {status}", "type": "mock_error"}}
        return cls(status=status, error_body=_encode_body(body), headers=tuple(headers))

    @classmethod
    def usage_limit(
        cls,
        resets_at: int | None = None,
        *,
        resets_in_seconds: int | None = None,
        plan_type: str | None = "plus",
        message: str = "The usage limit has been reached",
    ) -> Reply:
        """HTTP 429 with a ``usage_limit_reached`` error body (what ChatGPT-plan quotas send)."""
        error: dict[str, Any] = {"type": "usage_limit_reached", "message": message}
        if plan_type is not None:
            error["plan_type"] = plan_type
        if resets_at is not None:
            error["resets_at"] = resets_at
        if resets_in_seconds is not None:
            error["resets_in_seconds"] = resets_in_seconds
        return cls.http_error(429, {"error": error})

    @classmethod
    def failed(cls, code: str, message: str, *items: OutputItem) -> Reply:
        """A stream that ends with ``response.failed`` carrying ``{code, message}``."""
        return cls(items=items, failure=Failure(code, message))

    @classmethod
    def cut(cls, *items: OutputItem, how: Literal["close", "eof"] = "close") -> Reply:
        """A stream cut short after ``items``, before ``response.completed``.

        ``how="close"`` drops the connection in the middle of the chunked body;
        ``how="eof"`` ends the HTTP body properly but without a final event.
        """
        return cls(items=items, end=how)

    @classmethod
    def stall(cls, *items: OutputItem) -> Reply:
        """A stream that sends ``items`` and then nothing, until the client gives up."""
        return cls(items=items, end="stall")

    @classmethod
    def hanging(cls) -> Reply:
        """A reply that never comes: the request waits until the client gives up.

        The server drops the request when the client disconnects or the server stops.
        """
        return cls(hang=True)

    # -- modifiers ----------------------------------------------------------------

    def with_usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> Reply:
        """This reply with the given token figures."""
        usage = Usage(
            input_tokens=input_tokens,
            cached_tokens=cached_tokens,
            output_tokens=output_tokens,
            reasoning_tokens=reasoning_tokens,
        )
        return msgspec.structs.replace(self, usage=usage)

    def with_delay(self, seconds: float) -> Reply:
        """This reply, sent after ``seconds`` (cut short if the client disconnects)."""
        return msgspec.structs.replace(self, delay=seconds)

    def with_headers(self, *headers: tuple[str, str]) -> Reply:
        """This reply with extra response headers (e.g. ``x-codex-primary-used-percent``)."""
        return msgspec.structs.replace(self, headers=self.headers + headers)


DEFAULT_REPLY: Final = Reply.text("ok")
"""What the server answers when its script is empty (unless given another default)."""


# --------------------------------------------------------------------------------------
# Records: what the client asked
# --------------------------------------------------------------------------------------


def _content_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request the server received, in full.

    ``body`` is the request body as sent, after undoing a ``gzip``/``deflate``
    content encoding. ``index`` counts all requests from 0; ``received_at`` is
    ``trio.current_time()`` when the body was complete.
    """

    index: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float

    @property
    def is_responses(self) -> bool:
        """True for a ``POST .../responses`` (a model turn)."""
        return self.method == "POST" and self.path.split("?", 1)[0].endswith("/responses")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key == lname:
                return value
        return None

    def json(self) -> Any:
        """The body decoded as JSON (``None`` for an empty body)."""
        if not self.body:
            return None
        return msgspec.json.decode(self.body)

    def input_items(self) -> list[dict[str, Any]]:
        """The objects of the request's ``input`` list (empty when there is none)."""
        data = self.json()
        if not isinstance(data, dict):
            return []
        items = data.get("input")
        if not isinstance(items, list):
            return []
        return [item for item in items if isinstance(item, dict)]

    def input_messages(self) -> list[tuple[str, str]]:
        """``(role, text)`` for every text part of every ``message`` item in ``input``.

        Codex also sends ``developer`` messages and context it wraps in tags
        (``<environment_context>`` ...) as user messages; all are listed.
        """
        out: list[tuple[str, str]] = []
        for item in self.input_items():
            if item.get("type", "message") != "message":
                continue
            role = item.get("role")
            if not isinstance(role, str):
                continue
            out.extend((role, text) for text in _content_texts(item.get("content")))
        return out

    def input_texts(self) -> list[str]:
        """The user and assistant message texts in ``input``, in order."""
        return [text for role, text in self.input_messages() if role in ("user", "assistant")]

    def user_texts(self) -> list[str]:
        """The user message texts in ``input``, in order."""
        return [text for role, text in self.input_messages() if role == "user"]

    def tool_outputs(self) -> list[str]:
        """The outputs of ``function_call_output``/``custom_tool_call_output`` items in ``input``.

        An output given as a list of content parts is joined into one string.
        """
        out: list[str] = []
        for item in self.input_items():
            if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
                continue
            output = item.get("output")
            if isinstance(output, dict):  # older shape: {"content": ..., "success": ...}
                output = output.get("content")
            out.append("".join(_content_texts(output)))
        return out

    def tool_names(self) -> list[str]:
        """The names of the tools offered in the request's ``tools`` list."""
        data = self.json()
        if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
            return []
        names: list[str] = []
        for tool in data["tools"]:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                names.append(tool["name"])
        return names


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class _ClientGone(Exception):
    """The peer closed the connection while we were waiting."""


class MockModel:
    """A running mock model server; obtain one from :func:`open_mock_model`.

    All methods must be called from the Trio thread that runs the server.
    """

    def __init__(self, host: str, port: int, default: Reply, idle_timeout: float) -> None:
        self.host: Final = host
        self.port: Final = port
        self.default = default
        self.idle_timeout = idle_timeout
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._changed = trio.Event()
        self._call_counter = 0
        self._response_counter = 0

    @property
    def base_url(self) -> str:
        """The provider base URL to give Codex, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    # -- script -------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue ``replies``; each later ``POST /responses`` consumes the next one."""
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """How many scripted replies have not been used yet."""
        return len(self._script)

    def clear_script(self) -> None:
        """Drop the scripted replies not used yet."""
        self._script.clear()

    # -- records ------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        return list(self._requests)

    @property
    def responses_requests(self) -> list[RecordedRequest]:
        """The ``POST .../responses`` requests received so far, in order."""
        return [r for r in self._requests if r.is_responses]

    async def wait_for_responses_requests(self, count: int) -> None:
        """Return once ``count`` ``POST /responses`` requests have been received.

        Waits without limit: bound it with ``trio.fail_after``.
        """
        while len(self.responses_requests) < count:
            await self._changed.wait()

    def _record(self, request: RecordedRequest) -> None:
        self._requests.append(request)
        self._changed.set()
        self._changed = trio.Event()

    def _next_reply(self) -> Reply:
        return self._script.popleft() if self._script else self.default

    # -- connection handling ------------------------------------------------------

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
        try:
            while True:
                request: _Incoming | None = None
                with trio.move_on_after(self.idle_timeout):
                    request = await self._read_request(conn, stream)
                if request is None:
                    return  # idle (or too slow a request): close the connection
                must_close = await self._respond(conn, stream, request)
                if must_close or conn.our_state is not h11.DONE:
                    return
                if conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except h11.RemoteProtocolError as exc:
            await self._send_protocol_error(conn, stream, exc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream) -> _Incoming:
        request: h11.Request | None = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECEIVE_SIZE)
                if not data:
                    raise _ClientGone
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return self._incoming(request, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise _ClientGone
            else:  # PAUSED cannot happen before the response; anything else is ignored
                continue

    def _incoming(self, request: h11.Request, raw: bytes) -> _Incoming:
        headers = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers
        )
        encoding = next((v.strip().lower() for k, v in headers if k == "content-encoding"), "")
        body = raw
        if encoding in ("gzip", "deflate"):
            try:
                body = zlib.decompress(raw, wbits=47)
            except zlib.error:
                body = raw
        recorded = RecordedRequest(
            index=len(self._requests),
            method=request.method.decode("ascii", "replace"),
            path=request.target.decode("latin-1"),
            headers=headers,
            body=body,
            received_at=trio.current_time(),
        )
        self._record(recorded)
        upgrade = any(k == "upgrade" and "websocket" in v.lower() for k, v in headers)
        return _Incoming(recorded, upgrade)

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, incoming: _Incoming
    ) -> bool:
        """Answer one request; True when the connection must be closed afterwards."""
        req = incoming.request
        if incoming.websocket:
            await _send_json(conn, stream, 426, {"error": {"message": "websockets unsupported"}})
            return True
        if not req.is_responses:
            status = 404 if req.method in ("GET", "HEAD", "POST") else 405
            body = {
                "error": {
                    "message": f"mock model: no route for {req.method} {req.path}",
                    "type": "invalid_request_error",
                    "code": "not_found" if status == 404 else "method_not_allowed",
                }
            }
            await _send_json(conn, stream, status, body)
            return False
        reply = self._next_reply()
        return await self._send_reply(conn, stream, reply)

    async def _send_reply(
        self, conn: h11.Connection, stream: trio.SocketStream, reply: Reply
    ) -> bool:
        if reply.hang or reply.delay > 0:
            seconds = math.inf if reply.hang else reply.delay
            if not await _sleep_while_connected(conn, stream, seconds):
                return True
            if reply.hang:  # pragma: no cover - sleep_forever never ends normally
                return True
        extra = tuple((k.encode(), v.encode()) for k, v in reply.headers)
        if reply.status != 200:
            body = reply.error_body
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (_SERVER_HEADER[0].encode(), _SERVER_HEADER[1].encode()),
                *extra,
            ]
            await _send(conn, stream, h11.Response(status_code=reply.status, headers=headers))
            await _send(conn, stream, h11.Data(data=body))
            await _send(conn, stream, h11.EndOfMessage())
            return False

        self._response_counter += 1
        response_id = f"resp_{self._response_counter}"
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (_SERVER_HEADER[0].encode(), _SERVER_HEADER[1].encode()),
            *extra,
        ]
        await _send(conn, stream, h11.Response(status_code=200, headers=headers))
        created = {
            "type": "response.created",
            "response": {"id": response_id, "status": "in_progress"},
        }
        await _send_sse(conn, stream, created)
        for index, item in enumerate(reply.items):
            item_json = self._item_json(item, response_id, index)
            event = {"type": "response.output_item.done", "output_index": index, "item": item_json}
            await _send_sse(conn, stream, event)
        if reply.end == "close":
            return True
        if reply.end == "eof":
            await _send(conn, stream, h11.EndOfMessage())
            return False
        if reply.end == "stall":
            await _sleep_while_connected(conn, stream, math.inf)
            return True
        if reply.failure is not None:
            final = {
                "type": "response.failed",
                "response": {
                    "id": response_id,
                    "status": "failed",
                    "error": {"code": reply.failure.code, "message": reply.failure.message},
                },
            }
        else:
            final = {
                "type": "response.completed",
                "response": {
                    "id": response_id,
                    "status": "completed",
                    "usage": reply.usage.to_json(),
                },
            }
        await _send_sse(conn, stream, final)
        await _send(conn, stream, h11.EndOfMessage())
        return False

    def _next_call_id(self) -> str:
        self._call_counter += 1
        return f"call_{self._call_counter}"

    def _item_json(self, item: OutputItem, response_id: str, index: int) -> Any:
        suffix = f"{response_id.removeprefix('resp_')}_{index}"
        if isinstance(item, Message):
            return {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{suffix}",
                "status": "completed",
                "content": [{"type": "output_text", "text": item.text, "annotations": []}],
            }
        if isinstance(item, Reasoning):
            return {
                "type": "reasoning",
                "id": f"rs_{suffix}",
                "summary": [{"type": "summary_text", "text": text} for text in item.summary],
            }
        if isinstance(item, ExecCommand):
            return {
                "type": "function_call",
                "id": f"fc_{suffix}",
                "call_id": item.call_id or self._next_call_id(),
                "name": "exec_command",
                "arguments": item.arguments(),
                "status": "completed",
            }
        if isinstance(item, ApplyPatch):
            return {
                "type": "custom_tool_call",
                "id": f"ctc_{suffix}",
                "call_id": item.call_id or self._next_call_id(),
                "name": "apply_patch",
                "input": item.patch,
                "status": "completed",
            }
        return msgspec.json.decode(item.json)

    async def _send_protocol_error(
        self, conn: h11.Connection, stream: trio.SocketStream, exc: h11.RemoteProtocolError
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}}
        try:
            with trio.move_on_after(5):
                await _send_json(conn, stream, exc.error_status_hint, body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass


class _Incoming(msgspec.Struct, frozen=True):
    request: RecordedRequest
    websocket: bool


async def _send(conn: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _send_sse(conn: h11.Connection, stream: trio.SocketStream, event: dict[str, Any]) -> None:
    payload = msgspec.json.encode(event)
    record = b"event: " + str(event["type"]).encode() + b"\ndata: " + payload + b"\n\n"
    await _send(conn, stream, h11.Data(data=record))


async def _send_json(
    conn: h11.Connection, stream: trio.SocketStream, status: int, body: object
) -> None:
    payload = msgspec.json.encode(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (_SERVER_HEADER[0].encode(), _SERVER_HEADER[1].encode()),
    ]
    await _send(conn, stream, h11.Response(status_code=status, headers=headers))
    await _send(conn, stream, h11.Data(data=payload))
    await _send(conn, stream, h11.EndOfMessage())


async def _sleep_while_connected(
    conn: h11.Connection, stream: trio.SocketStream, seconds: float
) -> bool:
    """Sleep ``seconds`` (``inf``: until cancelled); False if the client disconnected first."""
    gone = False
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal gone
            try:
                while True:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                    if not data:
                        break
                    conn.receive_data(data)  # buffered for the next request cycle
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            gone = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return not gone


async def serve_mock_model(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    default: Reply = DEFAULT_REPLY,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    task_status: trio.TaskStatus[MockModel] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the mock model until cancelled; use with ``await nursery.start(serve_mock_model)``.

    ``task_status.started`` hands over the :class:`MockModel` once the socket is
    listening (``port=0`` picks a free port). On cancellation the listener and
    every connection are closed and pending replies are dropped.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = int(listeners[0].socket.getsockname()[1])
    server = MockModel(host, bound_port, default, idle_timeout)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server._handle_connection, listeners)
        task_status.started(server)


@asynccontextmanager
async def open_mock_model(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    default: Reply = DEFAULT_REPLY,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
) -> AsyncIterator[MockModel]:
    """Run a mock model server for the duration of the ``async with`` block.

    The server is listening when the block starts and stopped (all connections
    closed) when it ends.
    """
    async with trio.open_nursery() as nursery:
        serve = functools.partial(
            serve_mock_model, host=host, port=port, default=default, idle_timeout=idle_timeout
        )
        server: MockModel = await nursery.start(serve)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------
# Codex settings
# --------------------------------------------------------------------------------------


class CodexSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Command-line and environment settings that point Codex at a mock model.

    ``config_args`` is ready to splice into an argv (``"-c", "KEY=VALUE", ...``);
    ``env`` holds only the variables to add to the inherited environment.
    """

    config_args: tuple[str, ...]
    env: dict[str, str]

    def shim_args(self) -> tuple[str, ...]:
        """The same settings as the shim's options: ``--codex-config=KEY=VALUE`` each."""
        return tuple(f"--codex-config={pair}" for pair in self.config_args[1::2])

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: ``os.environ``) updated with :attr:`env`."""
        merged = dict(os.environ if base is None else base)
        merged.update(self.env)
        return merged


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string for everything we put in here.
    return msgspec.json.encode(value).decode()


def codex_settings(
    base_url: str,
    codex_home: str | os.PathLike[str],
    *,
    provider: str = "mock",
    api_key: str = "dummy",
    stream_idle_timeout_ms: int | None = None,
    extra_config: Mapping[str, str] | None = None,
) -> CodexSettings:
    """Settings that make ``codex`` use the mock model at ``base_url``.

    The provider talks the Responses API over plain HTTP (no websockets) and
    never retries, so every scripted failure reaches Codex's error handling at
    once. ``codex_home`` becomes ``CODEX_HOME`` (the directory is not created
    here). ``stream_idle_timeout_ms`` bounds how long Codex waits on a silent
    stream (useful with :meth:`Reply.hanging`). ``extra_config`` adds more
    ``-c KEY=VALUE`` pairs, values given as TOML text.
    """
    table = {
        "name": _toml_str(provider),
        "base_url": _toml_str(base_url),
        "wire_api": _toml_str("responses"),
        "supports_websockets": "false",
        "request_max_retries": "0",
        "stream_max_retries": "0",
    }
    if stream_idle_timeout_ms is not None:
        table["stream_idle_timeout_ms"] = str(stream_idle_timeout_ms)
    inline = ",".join(f"{key}={value}" for key, value in table.items())
    pairs = [f"model_provider={_toml_str(provider)}", f"model_providers.{provider}={{{inline}}}"]
    pairs.extend(f"{key}={value}" for key, value in (extra_config or {}).items())
    args: list[str] = []
    for pair in pairs:
        args += ["-c", pair]
    env = {"CODEX_HOME": os.fspath(codex_home), "OPENAI_API_KEY": api_key}
    return CodexSettings(config_args=tuple(args), env=env)


# --------------------------------------------------------------------------------------
# Standalone server
# --------------------------------------------------------------------------------------


async def _serve_until_signalled(host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_mock_model(host=host, port=port) as server:
            settings = codex_settings(server.base_url, "$CODEX_HOME")
            print(f"mock model listening: {server.base_url}", flush=True)
            print(f"codex args: {shlex.join(settings.config_args)}", flush=True)
            print("env: CODEX_HOME=<a temp dir> OPENAI_API_KEY=dummy", flush=True)
            async for _ in signals:
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the default reply (``"ok"``) until SIGINT/SIGTERM; print how to point Codex at it."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_codex_shim.testing.mock_model",
        description="Mock OpenAI Responses API for the Codex CLI (answers every turn with 'ok').",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    args = parser.parse_args(argv)
    trio.run(_serve_until_signalled, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
