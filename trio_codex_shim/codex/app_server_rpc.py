"""The JSON-RPC line protocol of ``codex app-server``.

One JSON object per line, JSON-RPC 2.0 without the ``"jsonrpc"`` member:
requests carry ``id``, ``method`` and ``params``; responses ``id`` and
``result`` or ``error{code, message}``; notifications ``method`` and
``params``.  The server sends requests of its own (approvals, questions),
which the client must answer.

:class:`RpcCodec` is sans-IO: it numbers requests, encodes what the shim
sends and decodes whatever the server prints with one reused decoder.
:class:`RpcConnection` is the thin Trio part: it writes lines under a lock,
matches responses to the requests waiting for them, and bounds every
request with a timeout.  Only the messages and fields the shim uses are
modelled; every ``params`` stays raw until someone asks for it.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final, Literal, TypeVar

import msgspec
import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

RequestId = int | str

_NULL: Final = msgspec.Raw(b"null")
_ABSENT: Final = msgspec.Raw(b"")

ERROR_INVALID_REQUEST: Final = -32600
"""What Codex answers for an unknown thread (``no rollout found …``), among others."""
ERROR_METHOD_NOT_FOUND: Final = -32601
WRITE_TIMEOUT_SECS: Final = 10.0
"""Longest one line may take to go into the server's stdin."""


# -- what the server says -------------------------------------------------------


class RpcErrorBody(msgspec.Struct, frozen=True):
    """The ``error`` member of a response."""

    code: int = 0
    message: str = ""


class Incoming(msgspec.Struct, frozen=True):
    """Any line from the server; :attr:`kind` says which of the three it is."""

    id: RequestId | None = None
    method: str | None = None
    params: msgspec.Raw = _NULL
    result: msgspec.Raw = _ABSENT
    error: RpcErrorBody | None = None

    @property
    def kind(self) -> Literal["response", "request", "notification", "invalid"]:
        if self.method is not None:
            return "notification" if self.id is None else "request"
        if self.id is not None and (self.error is not None or len(self.result) > 0):
            return "response"
        return "invalid"


# -- what the shim sends --------------------------------------------------------


class _Request(msgspec.Struct, frozen=True):
    id: int
    method: str
    params: Any


class _Notification(msgspec.Struct, frozen=True, omit_defaults=True):
    method: str
    params: Any = None


class _Result(msgspec.Struct, frozen=True):
    id: RequestId
    result: Any


class _ErrorReply(msgspec.Struct, frozen=True):
    id: RequestId
    error: RpcErrorBody


class ClientInfo(msgspec.Struct, frozen=True):
    name: str
    version: str


class InitializeParams(msgspec.Struct, frozen=True, rename="camel"):
    client_info: ClientInfo


class TextInput(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    """One item of a turn's ``input``: plain text."""

    text: str


class ThreadStartParams(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    cwd: str | None = None
    model: str | None = None
    approval_policy: str | None = None
    sandbox: str | None = None


class ThreadResumeParams(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    thread_id: str
    cwd: str | None = None
    model: str | None = None
    approval_policy: str | None = None
    sandbox: str | None = None


class TurnStartParams(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    thread_id: str
    input: tuple[TextInput, ...]
    effort: str | None = None


class TurnInterruptParams(msgspec.Struct, frozen=True, rename="camel"):
    thread_id: str
    turn_id: str


class TurnSteerParams(msgspec.Struct, frozen=True, rename="camel"):
    thread_id: str
    expected_turn_id: str
    input: tuple[TextInput, ...]


# -- results the shim reads ----------------------------------------------------


class ThreadRef(msgspec.Struct, frozen=True):
    id: str


class ThreadResult(msgspec.Struct, frozen=True):
    """The result of ``thread/start`` and ``thread/resume``."""

    thread: ThreadRef


class TurnRef(msgspec.Struct, frozen=True):
    id: str
    status: str = ""


class TurnResult(msgspec.Struct, frozen=True):
    """The result of ``turn/start``."""

    turn: TurnRef


class SteerResult(msgspec.Struct, frozen=True, rename="camel"):
    """The result of ``turn/steer``."""

    turn_id: str = ""


class Ignored(msgspec.Struct, frozen=True):
    """A result the shim does not read (``initialize``, ``turn/interrupt``)."""


# -- errors --------------------------------------------------------------------


class RpcError(Exception):
    """A request did not get a usable result."""


class RpcRemoteError(RpcError):
    """The server answered with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message


class RpcTimeout(RpcError):
    """No answer within the request's timeout."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(f"{method}: no answer from codex app-server within {timeout:g}s")
        self.method = method


class RpcClosed(RpcError):
    """The connection is gone (the server exited, or its stdin is closed)."""


class RpcBadResult(RpcError):
    """The result did not have the expected shape."""


# -- the codec -----------------------------------------------------------------


class RpcCodec:
    """Encode what the shim sends, decode what the server prints.  No I/O.

    Request ids count up from 1 and are never reused in one connection.
    """

    def __init__(self) -> None:
        self._next_id = 1
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[Incoming] = msgspec.json.Decoder(Incoming)

    def request(self, method: str, params: object) -> tuple[int, bytes]:
        """A new request id and the line (with its newline) that sends it."""
        request_id = self._next_id
        self._next_id += 1
        return request_id, self._line(_Request(request_id, method, params))

    def notification(self, method: str, params: object = None) -> bytes:
        return self._line(_Notification(method, params))

    def result(self, request_id: RequestId, result: object) -> bytes:
        """The line answering the server's request ``request_id``."""
        return self._line(_Result(request_id, result))

    def error(self, request_id: RequestId, code: int, message: str) -> bytes:
        """The line refusing the server's request ``request_id``."""
        return self._line(_ErrorReply(request_id, RpcErrorBody(code, message)))

    def decode(self, line: bytes) -> Incoming:
        """One line from the server; raises :class:`msgspec.DecodeError` when it is not one."""
        return self._decoder.decode(line)

    def _line(self, message: object) -> bytes:
        buf = bytearray()
        self._encoder.encode_into(message, buf)
        buf += b"\n"
        return bytes(buf)


_result_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decode_raw(raw: msgspec.Raw, tp: type[T]) -> T:
    """``raw`` JSON as ``tp``, with one cached decoder per type."""
    decoder = _result_decoders.get(tp)
    if decoder is None:
        decoder = _result_decoders[tp] = msgspec.json.Decoder(tp)
    result: T = decoder.decode(raw)
    return result


# -- the Trio connection ---------------------------------------------------------


class _Pending:
    __slots__ = ("done", "method", "reply")

    def __init__(self, method: str) -> None:
        self.method = method
        self.done = trio.Event()
        self.reply: Incoming | None = None


class RpcConnection:
    """The client side of one app-server's stdin/stdout.

    The owner reads stdout, passes each decoded line to :meth:`deliver` (which
    wakes the request waiting for a response) and calls :meth:`close` at EOF.
    Any task may call :meth:`request`; writes are serialised by a lock.
    """

    def __init__(self, stdin: trio.abc.SendStream, codec: RpcCodec | None = None) -> None:
        self._stdin = stdin
        self.codec = codec or RpcCodec()
        self._lock = trio.StrictFIFOLock()
        self._pending: dict[RequestId, _Pending] = {}
        self._closed: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def request(self, method: str, params: object, tp: type[T], *, timeout_secs: float) -> T:
        """Send a request and wait, at most ``timeout_secs``, for its result as ``tp``.

        Raises :class:`RpcRemoteError`, :class:`RpcTimeout`, :class:`RpcClosed`
        or :class:`RpcBadResult`; on cancellation the request is forgotten (a
        late answer is dropped).
        """
        request_id, line = self.codec.request(method, params)
        pending = _Pending(method)
        self._pending[request_id] = pending
        try:
            with trio.move_on_after(timeout_secs if timeout_secs > 0 else math.inf) as scope:
                await self._send(line)
                await pending.done.wait()
            if scope.cancelled_caught:
                raise RpcTimeout(method, timeout_secs)
        finally:
            self._pending.pop(request_id, None)
        reply = pending.reply
        if reply is None:
            raise RpcClosed(f"{method}: {self._closed or 'connection closed'}")
        if reply.error is not None:
            raise RpcRemoteError(method, reply.error.code, reply.error.message)
        try:
            return decode_raw(reply.result, tp)
        except (ValueError, RecursionError) as exc:  # DecodeError, bad UTF-8, deep nesting
            raise RpcBadResult(f"{method}: unexpected result: {exc}") from None

    async def notify(self, method: str, params: object = None) -> None:
        await self._send(self.codec.notification(method, params))

    async def respond(self, request_id: RequestId, result: object) -> None:
        await self._send(self.codec.result(request_id, result))

    async def respond_error(self, request_id: RequestId, code: int, message: str) -> None:
        await self._send(self.codec.error(request_id, code, message))

    def deliver(self, message: Incoming) -> bool:
        """Hand a response to its waiter; ``False`` when ``message`` is not one we await."""
        if message.kind != "response" or message.id is None:
            return False
        pending = self._pending.get(message.id)
        if pending is None:
            log.debug("dropping a response nobody waits for (id %r)", message.id)
            return True
        pending.reply = message
        pending.done.set()
        return True

    def close(self, reason: str) -> None:
        """No more responses will come: fail every waiting request with ``reason``."""
        if self._closed is None:
            self._closed = reason
        for pending in self._pending.values():
            pending.done.set()

    async def _send(self, line: bytes) -> None:
        """Write one whole line.  Shielded (a line cut in half would corrupt the
        stream for everyone) but bounded: a server that reads nothing for
        :data:`WRITE_TIMEOUT_SECS` counts as gone."""
        if self._closed is not None:
            raise RpcClosed(self._closed)
        with trio.CancelScope(shield=True):
            async with self._lock:
                try:
                    with trio.fail_after(WRITE_TIMEOUT_SECS):
                        await self._stdin.send_all(line)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self.close(f"cannot write to codex app-server: {exc!r}")
                except trio.TooSlowError:
                    self.close("codex app-server stopped reading its stdin")
        if self._closed is not None:
            raise RpcClosed(self._closed)
