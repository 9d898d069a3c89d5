"""A Trio client for the shim: start or connect, typed calls, events, clean exit.

Three ways to get a :class:`ShimClient`, all with the same API:

- :func:`open_shim` starts the shim as a child process the way batty does:
  the child end of a ``socketpair`` becomes the shim's fd 3 (``--fd 3``).
- :func:`connect_shim` wraps a stream to a shim started elsewhere: a socket,
  or the stdin/stdout of a ``--stdio`` shim (see :func:`stdio_stream`).
- :func:`open_shim_unix_listener` listens on a Unix socket path; a shim
  started elsewhere with ``--socket PATH`` connects to it.

Inside a client, one reader task decodes every frame and dispatches it, and
one :class:`trio.StrictFIFOLock` serialises writes.  The protocol has no
request ids for ``Ping``/``GetState``/``CaptureScreen``; the shim answers
commands in the order it reads them, so the answers are matched first-in,
first-out, registered under the same lock that orders the writes.

Every wait is bounded: calls take ``timeout_secs`` and raise
:class:`trio.TooSlowError` when it runs out; a connection that closes first
raises :class:`ShimGone`.

**Slow event consumers** (:meth:`ShimClient.events`): every subscription has
its own bounded buffer.  When it is full, the *oldest* buffered event is
dropped to make room and :attr:`EventSubscription.dropped` counts it; the
reader, the other subscribers and the typed calls are never slowed down.
Typed calls (:meth:`ShimClient.send` outcomes, :meth:`ShimClient.ping`, ...)
never depend on a subscription, so nothing a slow consumer misses can hang
them.  A subscription sees the events received after it was created, and
ends (``StopAsyncIteration``) once the connection is closed and its buffer
is drained.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import sys
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Final, Generic, TypeVar

import msgspec
import trio

from . import process_tree
from . import protocol as p
from .framing import FrameError, FrameReader, frame

log = logging.getLogger(__name__)

T = TypeVar("T")

EventCallback = Callable[[p.AnyEvent], object]
"""Called in the reader task with every event, in order, before anything else.

It must not block or raise: it runs on the one task that reads the stream."""

MessageResult = p.Completion | p.DeliveryFailed
"""How a message ends: exactly one of these per message id."""

_EXIT_MARGIN: Final = 5.0
"""Beyond a Shutdown's own ``timeout_secs``: time to flush events and exit."""
_REAP_BOUND: Final = 5.0
"""How long a SIGKILLed process may take to be reaped."""
_CLOSE_AFTER_EXIT: Final = 1.0
"""After the shim process exits, how long its socket may stay open."""


class ShimError(Exception):
    """Base of the client's errors."""


class ShimGone(ShimError):
    """The connection to the shim is closed; ``reason`` says how it ended."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ShimStartError(ShimError):
    """The shim did not say ``Ready`` (it exited, or the ready timeout ran out)."""


class ClientOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How :func:`open_shim` starts, waits for and stops a shim process.

    The command line is ``[*argv, "--fd", str(fd), *args]``, and the socket is
    on that fd (3 to 9; stdin is ``/dev/null``).  ``env`` replaces
    the environment (``None``: inherit ours); ``cwd`` is the process's working
    directory (Codex's is the shim's ``--cwd`` in ``args``).  ``log_path``
    receives the shim's stdout and stderr (appended); ``None`` inherits ours.
    """

    argv: tuple[str, ...] = (sys.executable, "-m", "trio_codex_shim")
    args: tuple[str, ...] = ()
    fd: int = 3
    env: dict[str, str] | None = None
    cwd: Path | None = None
    log_path: Path | None = None
    ready_timeout_secs: float = 15.0
    """Seconds from start until ``Ready``; else :class:`ShimStartError`."""
    shutdown_timeout_secs: float = 10.0
    """``timeout_secs`` of the Shutdown sent on a normal exit (rounded up)."""
    kill_timeout_secs: float = 5.0
    """After ``Kill``, how long the shim may take to exit."""
    terminate_grace_secs: float = 2.0
    """After SIGTERM, how long before SIGKILL."""
    send_timeout_secs: float = 10.0
    """Longest one frame may take to write; past it the connection is closed."""
    event_buffer: int = 1024
    """Default per-subscription buffer of :meth:`ShimClient.events`."""

    def __post_init__(self) -> None:
        if not 3 <= self.fd <= 9:
            raise ValueError(f"fd must be 3..9 (the shim's socket), not {self.fd}")

    def command_line(self) -> list[str]:
        """The shim's argv as started (before the fd-3 trampoline)."""
        return [*self.argv, "--fd", str(self.fd), *self.args]


def new_message_id() -> str:
    """A fresh, globally unique message id."""
    return f"msg-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------
# Waiting for answers
# ---------------------------------------------------------------------------


class _Reply(Generic[T]):
    """One answer that will arrive (or not) from the reader task."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: T | None = None
        self._error: ShimGone | None = None

    @property
    def is_set(self) -> bool:
        return self._done.is_set()

    def set(self, value: T) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: ShimGone) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    def peek(self) -> T | None:
        return self._value

    async def wait(self, timeout_secs: float) -> T:
        with trio.fail_after(timeout_secs):
            await self._done.wait()
        if self._error is not None:
            raise ShimGone(self._error.reason)
        assert self._value is not None
        return self._value


class MessageOutcome:
    """What became of one ``SendMessage``: its terminal event, when it comes.

    The shim promises exactly one terminal event per message id,
    :class:`~.protocol.Completion` or :class:`~.protocol.DeliveryFailed`.
    """

    def __init__(self, message_id: str) -> None:
        self.message_id: Final = message_id
        self._reply: _Reply[MessageResult] = _Reply()
        self._delivered = False

    @property
    def delivered(self) -> bool:
        """``MessageDelivered`` was seen: the message was handed to Codex."""
        return self._delivered

    @property
    def done(self) -> bool:
        """The terminal event arrived, or the connection closed before it."""
        return self._reply.is_set

    @property
    def result(self) -> MessageResult | None:
        """The terminal event, once it arrived."""
        return self._reply.peek()

    async def wait(self, timeout_secs: float) -> MessageResult:
        """The terminal event; waits at most ``timeout_secs`` seconds.

        Raises :class:`trio.TooSlowError` when the time runs out (the outcome
        stays pending and may still arrive) and :class:`ShimGone` when the
        connection closed first (it never will).
        """
        return await self._reply.wait(timeout_secs)

    def __repr__(self) -> str:
        return f"<MessageOutcome {self.message_id} done={self.done} result={self.result!r}>"


class EventSubscription:
    """One consumer's view of the events; see the module docstring for its policy.

    Iterate with ``async for``, or call :meth:`receive` with a time limit.  Use it
    as a context manager (or call :meth:`close`) to stop receiving.
    """

    def __init__(self, capacity: int, unsubscribe: Callable[[EventSubscription], None]) -> None:
        if capacity < 1:
            raise ValueError("an event buffer holds at least one event")
        self._buffer: deque[p.AnyEvent] = deque()
        self._capacity = capacity
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._unsubscribe = unsubscribe
        self.dropped = 0
        """Events dropped because this subscriber fell ``capacity`` events behind."""

    def _push(self, event: p.AnyEvent) -> None:
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("event subscriber is %d events behind; dropping oldest", self._capacity)
        self._buffer.append(event)
        self._lot.unpark_all()

    def _end(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def close(self) -> None:
        """Stop receiving; buffered events are discarded."""
        self._buffer.clear()
        self._end()
        self._unsubscribe(self)

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> p.AnyEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            await self._lot.park()
        await trio.lowlevel.checkpoint()
        return self._buffer.popleft()

    def drain(self) -> list[p.AnyEvent]:
        """Every event buffered now, oldest first, without waiting."""
        events = list(self._buffer)
        self._buffer.clear()
        return events

    async def receive(self, timeout_secs: float) -> p.AnyEvent:
        """The next event; :class:`trio.TooSlowError` after ``timeout_secs`` seconds,
        :class:`ShimGone` once the connection closed and the buffer is empty."""
        with trio.fail_after(timeout_secs):
            try:
                return await self.__anext__()
            except StopAsyncIteration:
                raise ShimGone("connection closed") from None


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class ShimClient:
    """A connection to one shim.  Get one from :func:`open_shim`,
    :func:`connect_shim` or :meth:`ShimListener.accept`; never build it directly.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        send_timeout_secs: float = 10.0,
        event_buffer: int = 1024,
        on_event: EventCallback | None = None,
        process: trio.Process | None = None,
    ) -> None:
        self._stream = stream
        self._send_timeout = send_timeout_secs
        self._event_buffer = event_buffer
        self._on_event = on_event
        self.process: Final = process
        """The shim process, when this client started it."""
        self._send_lock = trio.StrictFIFOLock()
        self._cannot_write: str | None = None
        """Why no more frames can be written (a failed write, or EOF sent)."""
        self._ready = trio.Event()
        self._closed = trio.Event()
        self._close_reason: str | None = None
        self._reader_scope = trio.CancelScope()
        self._outcomes: dict[str, MessageOutcome] = {}
        self._pongs: deque[_Reply[p.Pong]] = deque()
        self._states: deque[_Reply[p.State]] = deque()
        self._captures: deque[_Reply[p.ScreenCapture]] = deque()
        self._subscribers: list[EventSubscription] = []
        self.stop_requested = False
        """A ``Shutdown`` or ``Kill`` was sent through this client."""
        self.bad_frames = 0
        """Frames from the shim that were not valid Events (logged and skipped)."""

    # -- status ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """``Ready`` was received."""
        return self._ready.is_set()

    @property
    def closed(self) -> bool:
        """The connection is closed; every call raises :class:`ShimGone`."""
        return self._closed.is_set()

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def pending(self) -> list[str]:
        """Ids of the messages sent through this client still without an outcome."""
        return list(self._outcomes)

    async def wait_ready(self, timeout_secs: float) -> None:
        """Return once ``Ready`` arrived; :class:`ShimStartError` if the
        connection closes first or ``timeout_secs`` seconds pass."""
        with trio.move_on_after(timeout_secs):
            async with trio.open_nursery() as nursery:

                async def _closed() -> None:
                    await self._closed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(_closed)
                await self._ready.wait()
                nursery.cancel_scope.cancel()
        if not self.ready:
            why = self._close_reason or f"no Ready within {timeout_secs:g}s"
            raise ShimStartError(f"the shim did not start: {why}")

    async def wait_closed(self, timeout_secs: float) -> None:
        """Return once the connection is closed.

        Raises :class:`trio.TooSlowError` after ``timeout_secs``.
        """
        with trio.fail_after(timeout_secs):
            await self._closed.wait()

    # -- commands -------------------------------------------------------------

    async def send(
        self,
        body: str,
        *,
        sender: str = "orchestrator",
        message_id: str | None = None,
    ) -> MessageOutcome:
        """Send ``body`` as one message; its :class:`MessageOutcome`.

        Returns once the frame is written (not when Codex answers): await
        :meth:`MessageOutcome.wait` for the terminal event.  An id is generated
        when none is given; an id still pending raises :class:`ValueError`, a
        message over the 1 MiB frame cap :class:`~.framing.FrameError`.
        """
        mid = new_message_id() if message_id is None else message_id
        outcome = MessageOutcome(mid)

        def register() -> None:  # under the send lock, so two sends cannot race
            if mid in self._outcomes:
                raise ValueError(f"message id {mid!r} is still pending")
            self._outcomes[mid] = outcome

        cmd = p.SendMessage(sender=sender, body=body, message_id=mid)
        await self._write(frame(p.encode(cmd)), register)
        return outcome

    async def ping(self, timeout_secs: float = 5.0) -> float:
        """Send ``Ping`` and wait for its ``Pong``; the round trip in seconds."""
        reply: _Reply[p.Pong] = _Reply()
        start = trio.current_time()
        await self._write(frame(p.encode(p.Ping())), lambda: self._pongs.append(reply))
        await reply.wait(timeout_secs)
        return trio.current_time() - start

    async def get_state(self, timeout_secs: float = 5.0) -> p.State:
        """Send ``GetState``; the ``State`` answering it."""
        reply: _Reply[p.State] = _Reply()
        await self._write(frame(p.encode(p.GetState())), lambda: self._states.append(reply))
        return await reply.wait(timeout_secs)

    async def capture(
        self, last_n_lines: int | None = None, timeout_secs: float = 5.0
    ) -> p.ScreenCapture:
        """Send ``CaptureScreen``; the ``ScreenCapture`` answering it."""
        reply: _Reply[p.ScreenCapture] = _Reply()
        cmd = p.CaptureScreen(last_n_lines=last_n_lines)
        await self._write(frame(p.encode(cmd)), lambda: self._captures.append(reply))
        return await reply.wait(timeout_secs)

    async def resize(self, rows: int, cols: int) -> None:
        """Send ``Resize`` (the shim accepts it and does nothing)."""
        await self._write(frame(p.encode(p.Resize(rows=rows, cols=cols))))

    async def shutdown(
        self,
        timeout_secs: float = 30.0,
        *,
        reason: p.ShutdownReason = p.ShutdownReason.REQUESTED,
    ) -> None:
        """Ask the shim to stop, letting a running turn finish for ``timeout_secs`` s.

        Returns once the shim closed the connection (and, for a shim this
        client started, once its process exited); :class:`trio.TooSlowError`
        if that takes longer than ``timeout_secs`` plus a few seconds to flush.
        """
        self.stop_requested = True
        cmd = p.Shutdown(timeout_secs=math.ceil(timeout_secs), reason=reason)
        with suppress(ShimGone):
            await self._write(frame(p.encode(cmd)))
        await self._wait_gone(timeout_secs + _EXIT_MARGIN)

    async def kill(self, timeout_secs: float = 10.0) -> None:
        """Send ``Kill``: the shim stops its turn and everything it started, and exits.

        Returns once the connection closed (and the process, if ours, exited);
        :class:`trio.TooSlowError` after ``timeout_secs`` seconds.
        """
        self.stop_requested = True
        with suppress(ShimGone):
            await self._write(frame(p.encode(p.Kill())))
        await self._wait_gone(timeout_secs)

    async def send_command(self, cmd: p.AnyCommand) -> None:
        """Send any Command as is.  Answers to it are *not* matched to a call:
        prefer the typed methods (a raw ``Ping`` here may answer someone's
        :meth:`ping`)."""
        if isinstance(cmd, p.Shutdown | p.Kill):
            self.stop_requested = True
        await self._write(frame(p.encode(cmd)))

    async def send_raw(
        self,
        data: bytes,
        *,
        answered_by: type[p.Pong] | type[p.State] | type[p.ScreenCapture] | None = None,
    ) -> None:
        """Write ``data`` unframed and unchecked (fuzzing: garbage, bad lengths).

        When ``data`` is a Ping, GetState or CaptureScreen, name its answer in
        ``answered_by`` so it is matched (and dropped) in order instead of
        answering a later call.  After bytes that break the framing the shim
        closes the connection.
        """

        def register() -> None:
            if answered_by is p.Pong:
                self._pongs.append(_Reply())
            elif answered_by is p.State:
                self._states.append(_Reply())
            elif answered_by is p.ScreenCapture:
                self._captures.append(_Reply())

        await self._write(data, register)

    async def send_eof(self) -> None:
        """Close the sending half: no more commands.  The shim takes this as its
        orchestrator leaving (a turn in flight gets ``--eof-grace`` seconds), and
        events keep arriving until it closes the connection.

        :class:`ShimGone` if the stream cannot half-close (then the shim is
        told nothing).
        """
        async with self._send_lock:
            if self._cannot_write is not None:
                raise ShimGone(self._cannot_write)
            if self.closed:
                raise ShimGone(self._close_reason or "connection closed")
            if not isinstance(self._stream, trio.abc.HalfCloseableStream):
                raise ShimGone("this stream cannot be half-closed")
            self._cannot_write = "end of stream sent: no more commands"
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stream.send_eof()

    def events(self, buffer: int | None = None) -> EventSubscription:
        """A new subscription to every event from now on (drop-oldest when
        ``buffer`` events behind; see the module docstring)."""
        sub = EventSubscription(buffer or self._event_buffer, self._unsubscribe)
        if self.closed:
            sub._end()
        else:
            self._subscribers.append(sub)
        return sub

    async def _wait_gone(self, timeout_secs: float) -> None:
        with trio.fail_after(timeout_secs):
            await self._closed.wait()
            if self.process is not None:
                await self.process.wait()

    def _unsubscribe(self, sub: EventSubscription) -> None:
        with suppress(ValueError):
            self._subscribers.remove(sub)

    # -- writing ----------------------------------------------------------------

    async def _write(
        self,
        data: bytes,
        register: Callable[[], None] | None = None,
        *,
        even_if_closed: bool = False,
    ) -> None:
        """Write one frame under the send lock; ``register`` runs just before it.

        The write itself is shielded from cancellation, so a frame is never
        half-written; it is bounded by the send timeout instead, after which
        the connection is closed (the peer cannot be trusted to resync).
        ``even_if_closed`` writes after the reader has stopped (a cancelled
        client still owes its shim a Kill), unless writing is over already.
        """
        async with self._send_lock:
            if self._cannot_write is not None:
                raise ShimGone(self._cannot_write)
            if self.closed and not even_if_closed:
                raise ShimGone(self._close_reason or "connection closed")
            if register is not None:
                register()
            with trio.CancelScope(shield=True):
                try:
                    with trio.move_on_after(self._send_timeout) as scope:
                        await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    # The shim stopped reading; what it sent before still
                    # arrives, so the reader runs on until the end of stream.
                    self._cannot_write = f"cannot write to the shim: {exc!r}"
                    raise ShimGone(self._cannot_write) from exc
            if scope.cancelled_caught:
                self._cannot_write = f"the shim read nothing for {self._send_timeout:g}s"
                self._close(self._cannot_write)  # a stuck peer: stop waiting for it
                raise ShimGone(self._cannot_write)

    # -- reading ----------------------------------------------------------------

    async def _read_forever(self) -> None:
        """The reader task: dispatch every frame until the connection ends."""
        reason = "client closed the connection"
        reader = FrameReader(self._stream)
        try:
            with self._reader_scope:
                while True:
                    try:
                        payload = await reader.receive()
                    except FrameError as exc:
                        reason = f"broken stream from the shim: {exc}"
                        break
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                        reason = f"connection lost: {exc!r}"
                        break
                    if payload is None:
                        reason = "the shim closed the connection"
                        break
                    try:
                        event = p.decode_event(payload)
                    except p.BadMessage as exc:
                        self.bad_frames += 1
                        log.warning("skipping a frame that is not an event: %s", exc)
                        continue
                    self._dispatch(event)
        finally:
            self._close(reason)

    def _dispatch(self, event: p.AnyEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)
        match event:
            case p.Ready():
                self._ready.set()
            case p.Pong():
                _answer(self._pongs, event)
            case p.State():
                _answer(self._states, event)
            case p.ScreenCapture():
                _answer(self._captures, event)
            case p.MessageDelivered(id=mid):
                outcome = self._outcomes.get(mid)
                if outcome is not None:
                    outcome._delivered = True
            case p.Completion(message_id=mid) | p.DeliveryFailed(id=mid):
                outcome = self._outcomes.pop(mid, None) if mid is not None else None
                if outcome is not None:
                    outcome._reply.set(event)
            case _:
                pass
        for sub in self._subscribers:
            sub._push(event)

    def _close(self, reason: str) -> None:
        """Mark the connection closed: fail every waiter, end every subscription."""
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        self._reader_scope.cancel()
        gone = ShimGone(reason)
        for outcome in self._outcomes.values():
            outcome._reply.fail(gone)
        self._outcomes.clear()
        for replies in (self._pongs, self._states, self._captures):
            while replies:
                replies.popleft().fail(gone)
        for sub in self._subscribers:
            sub._end()
        self._subscribers.clear()
        log.debug("connection to the shim closed: %s", reason)


def _answer(replies: deque[_Reply[T]], value: T) -> None:
    """Hand ``value`` to the oldest waiter (even one that gave up: order is kept)."""
    if replies:
        replies.popleft().set(value)
    else:
        log.warning("unsolicited %r from the shim", value)


# ---------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------


@asynccontextmanager
async def _running(client: ShimClient) -> AsyncIterator[trio.Nursery]:
    """Run ``client``'s reader for the block; body exceptions come out unwrapped.

    Trio nurseries wrap whatever crosses them in an ``ExceptionGroup``; the
    block's own exception is caught inside and re-raised outside instead
    (``Cancelled`` excepted: its cancel scope finds it inside a group too).
    """
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._read_forever)
        try:
            yield nursery
        except trio.Cancelled:
            raise  # its cancel scope unwraps it wherever it lands
        except BaseException as exc:
            body_error = exc
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error


@asynccontextmanager
async def connect_shim(
    stream: trio.abc.Stream,
    *,
    ready_timeout_secs: float | None = 15.0,
    shutdown_timeout_secs: float | None = 10.0,
    send_timeout_secs: float = 10.0,
    event_buffer: int = 1024,
    on_event: EventCallback | None = None,
) -> AsyncIterator[ShimClient]:
    """A :class:`ShimClient` over ``stream``, to a shim started elsewhere.

    Waits up to ``ready_timeout_secs`` for ``Ready`` (``None``: do not wait, for a
    shim that already sent it).  On a normal exit of the block, a shim still
    connected is sent ``Shutdown`` and given ``shutdown_timeout_secs`` seconds (plus
    a few to flush) to close the connection (``None``: skip that).  On every
    exit the stream is closed, which a shim takes as its orchestrator
    leaving: it stops within its ``--eof-grace``.
    """
    client = ShimClient(
        stream, send_timeout_secs=send_timeout_secs, event_buffer=event_buffer, on_event=on_event
    )
    try:
        async with _running(client):
            if ready_timeout_secs is not None:
                await client.wait_ready(ready_timeout_secs)
            yield client
            if shutdown_timeout_secs is not None and not client.closed:
                with trio.move_on_after(shutdown_timeout_secs + _EXIT_MARGIN):
                    with suppress(ShimGone):
                        await client.shutdown(shutdown_timeout_secs)
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def stdio_stream(
    process: trio.Process,
) -> trio.StapledStream[trio.abc.SendStream, trio.abc.ReceiveStream]:
    """The frame stream of a ``--stdio`` shim: its stdin and stdout, stapled.

    ``process`` must have been opened with ``stdin`` and ``stdout`` pipes.
    """
    if process.stdin is None or process.stdout is None:
        raise ValueError("the process needs stdin and stdout pipes")
    return trio.StapledStream(process.stdin, process.stdout)


async def _spawn(options: ClientOptions, child_fd: int) -> trio.Process:
    # The shim must find the socket on fd ``options.fd`` (batty: 3), as batty's
    # dup2 before exec arranges.  ``subprocess`` keeps a passed fd's number and
    # a ``preexec_fn`` is unsafe with threads, so the socket goes in as stdin
    # and ``sh`` moves it (single-digit fds: any POSIX sh can) and execs.
    argv = [
        "/bin/sh",
        "-c",
        f'exec "$@" {options.fd}<&0 0</dev/null',
        "sh",
        *options.command_line(),
    ]
    out: int | None = None
    if options.log_path is not None:
        out = os.open(options.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return await trio.lowlevel.open_process(
            argv,
            stdin=child_fd,
            stdout=out,
            stderr=out,
            env=options.env,
            cwd=options.cwd,
            start_new_session=True,
        )
    finally:
        if out is not None:
            os.close(out)


async def _watch_exit(client: ShimClient, process: trio.Process) -> None:
    """When the process exits, close the connection (after a short drain)."""
    await process.wait()
    with trio.move_on_after(_CLOSE_AFTER_EXIT):
        await client._closed.wait()
    client._close(f"the shim exited with code {process.returncode}")


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


async def _stop_process(
    client: ShimClient, process: trio.Process, options: ClientOptions, *, graceful: bool
) -> None:
    """Stop the shim process; returns only once it is reaped.  Bounded.

    Shutdown (when ``graceful``), then Kill, then SIGTERM, then SIGKILL for
    the shim *and* every descendant it still had (so nothing is orphaned even
    when the shim cannot clean up after itself).  Call it shielded.
    """
    if graceful and process.returncode is None and not client.closed:
        with trio.move_on_after(options.shutdown_timeout_secs + _EXIT_MARGIN):
            with suppress(ShimGone):
                await client.shutdown(options.shutdown_timeout_secs)
    if process.returncode is None:
        with trio.move_on_after(options.kill_timeout_secs):
            client.stop_requested = True
            with suppress(ShimGone):
                await client._write(frame(p.encode(p.Kill())), even_if_closed=True)
            await process.wait()
    if process.returncode is None:
        log.warning("shim pid %d ignored Kill; sending SIGTERM", process.pid)
        process.terminate()
        _signal(process.pid, signal.SIGCONT)  # a stopped shim must run to handle TERM
        with trio.move_on_after(options.terminate_grace_secs):
            await process.wait()
    if process.returncode is None:
        leftovers = process_tree.descendants(process.pid)
        log.warning("shim pid %d ignored SIGTERM; killing it and %s", process.pid, leftovers)
        process.kill()
        for pid in leftovers:
            _signal(pid, signal.SIGKILL)
        with trio.move_on_after(_REAP_BOUND):
            await process.wait()
        if process.returncode is None:
            log.error("shim pid %d survived SIGKILL for %gs", process.pid, _REAP_BOUND)


@asynccontextmanager
async def open_shim(
    options: ClientOptions | None = None, *, on_event: EventCallback | None = None
) -> AsyncIterator[ShimClient]:
    """Start a shim process, wait for ``Ready``, and stop it on exit.

    The shim gets the child end of a fresh Unix ``socketpair`` as fd
    ``options.fd`` (``--fd 3``), in a session of its own.  Raises
    :class:`ShimStartError` when no ``Ready`` comes within
    ``options.ready_timeout_secs``.

    On exit — normal, error or cancellation — this does not return until the
    shim process is reaped: after a normal exit it is sent ``Shutdown``
    (``options.shutdown_timeout_secs``), then on every path ``Kill``, then
    SIGTERM, then SIGKILL for it and its remaining descendants, each step
    bounded, and the whole shielded from cancellation.
    """
    opts = options or ClientOptions()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        process = await _spawn(opts, child.fileno())
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
    client = ShimClient(
        stream,
        send_timeout_secs=opts.send_timeout_secs,
        event_buffer=opts.event_buffer,
        on_event=on_event,
        process=process,
    )
    graceful = False
    try:
        async with _running(client) as nursery:
            nursery.start_soon(_watch_exit, client, process)
            try:
                try:
                    await client.wait_ready(opts.ready_timeout_secs)
                except ShimStartError as exc:
                    with trio.CancelScope(shield=True):
                        await _stop_process(client, process, opts, graceful=False)
                    code = process.returncode
                    raise ShimStartError(f"{exc} (the process exited with code {code})") from None
                yield client
                graceful = True
            finally:
                with trio.CancelScope(shield=True):
                    await _stop_process(client, process, opts, graceful=graceful)
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


class ShimListener:
    """A listening Unix socket that shims started with ``--socket PATH`` connect to."""

    def __init__(self, sock: trio.socket.SocketType, path: str) -> None:
        self._sock = sock
        self.path: Final = path

    @asynccontextmanager
    async def accept(
        self,
        timeout_secs: float,
        *,
        ready_timeout_secs: float | None = 15.0,
        shutdown_timeout_secs: float | None = 10.0,
        send_timeout_secs: float = 10.0,
        event_buffer: int = 1024,
        on_event: EventCallback | None = None,
    ) -> AsyncIterator[ShimClient]:
        """The next shim to connect, as in :func:`connect_shim`.

        :class:`trio.TooSlowError` if none connects within ``timeout_secs`` seconds.
        """
        with trio.fail_after(timeout_secs):
            conn, _ = await self._sock.accept()
        stream = trio.SocketStream(conn)
        async with connect_shim(
            stream,
            ready_timeout_secs=ready_timeout_secs,
            shutdown_timeout_secs=shutdown_timeout_secs,
            send_timeout_secs=send_timeout_secs,
            event_buffer=event_buffer,
            on_event=on_event,
        ) as client:
            yield client


@asynccontextmanager
async def open_shim_unix_listener(path: str | os.PathLike[str]) -> AsyncIterator[ShimListener]:
    """Listen on the Unix socket ``path`` (created here, removed on exit)."""
    where = os.fspath(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(where)
        sock.listen(16)
        yield ShimListener(sock, where)
    finally:
        sock.close()
        with suppress(FileNotFoundError):
            os.unlink(where)
