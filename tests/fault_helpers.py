"""Support for the fault-matrix tests: a shim on a raw socket, /proc checks, accounting.

:class:`RawShim` starts a real shim process on one end of a socketpair the
test owns outright (buffer sizes, not reading, closing it mid-frame), unlike
:func:`~trio_codex_shim.client.open_shim`, which always reads.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Final

import trio

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.core.machine import EXIT_OK, EXIT_TRANSPORT
from trio_codex_shim.framing import FrameError, FrameReader, frame
from trio_codex_shim.testing.fake_codex import read_invocations, read_pids

DOCUMENTED_EXIT_CODES: Final = frozenset({EXIT_OK, 2, EXIT_TRANSPORT}) | frozenset(
    128 + int(sig) for sig in signal.Signals
)
"""README: 0 after Shutdown/Kill/EOF, 2 bad usage, 3 broken stream, 128+N after signal N."""


def started_pids(scenario: Path) -> list[int]:
    """Every process the fake CLI recorded: each ``codex`` run and each grandchild."""
    return [r.pid for r in read_invocations(scenario)] + read_pids(scenario)


def left_alive(scenario: Path) -> list[int]:
    """The processes of :func:`started_pids` still alive (zombies count as gone)."""
    return [pid for pid in started_pids(scenario) if process_tree.is_alive(pid)]


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` (``VmHWM`` in ``/proc/PID/status``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise LookupError(f"no VmHWM for pid {pid}")


def check_accounted(events: Iterable[p.AnyEvent], ids: Iterable[str]) -> list[str]:
    """What is wrong with the terminal events of ``ids`` (empty: each exactly once)."""
    counts = Counter(
        e.message_id
        if isinstance(e, p.Completion)
        else e.id
        if isinstance(e, p.DeliveryFailed)
        else None
        for e in events
    )
    wanted = set(ids)
    problems = [f"{mid}: {counts[mid]} terminal events" for mid in wanted if counts[mid] != 1]
    problems += [
        f"{mid}: terminal event for an id never sent" for mid in counts if mid and mid not in wanted
    ]
    return sorted(problems)


class RawShim:
    """A shim process and the test's end of its socket (see :func:`raw_shim`)."""

    def __init__(self, process: trio.Process, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.reader = FrameReader(self.stream)
        self.events: list[p.AnyEvent] = []

    async def send(self, *commands: p.AnyCommand) -> None:
        await self.stream.send_all(b"".join(frame(p.encode(c)) for c in commands))

    async def next_event(self) -> p.AnyEvent | None:
        """The next event (also kept in :attr:`events`); ``None`` at a clean end of stream."""
        payload = await self.reader.receive()
        if payload is None:
            return None
        event = p.decode_event(payload)
        self.events.append(event)
        return event

    async def until(self, kind: type[p.Event], timeout_secs: float = 20.0) -> p.AnyEvent:
        """Read events up to and including the next one of ``kind``."""
        with trio.fail_after(timeout_secs):
            while True:
                event = await self.next_event()
                if event is None:
                    raise AssertionError(f"stream ended before a {kind.__name__}: {self.events}")
                if isinstance(event, kind):
                    return event

    async def read_to_end(self, timeout_secs: float = 20.0) -> list[p.AnyEvent]:
        """Every event until the shim closes the stream; raises on a truncated stream."""
        with trio.fail_after(timeout_secs):
            while await self.next_event() is not None:
                pass
        return self.events

    async def wait(self, timeout_secs: float = 20.0) -> int:
        with trio.fail_after(timeout_secs):
            return await self.process.wait()


def _spawn_argv(args: Sequence[str]) -> list[str]:
    # The shim finds its socket on fd 3, as batty's dup2 arranges: the socket
    # goes in as stdin and sh moves it (see trio_codex_shim.client._spawn).
    shim = [sys.executable, "-m", "trio_codex_shim", "--fd", "3", *args]
    return ["/bin/sh", "-c", 'exec "$@" 3<&0 0</dev/null', "sh", *shim]


@asynccontextmanager
async def raw_shim(
    args: Sequence[str],
    *,
    log_path: Path,
    buffer_bytes: int | None = None,
    ready: bool = True,
) -> AsyncIterator[RawShim]:
    """A shim process on a socketpair; on exit it is SIGKILLed if still running, and reaped.

    ``buffer_bytes`` sets SO_SNDBUF and SO_RCVBUF on both ends (the shim's end
    keeps them across exec).  With ``ready`` the ``Ready`` event is read first.
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if buffer_bytes is not None:
        for end in (parent, child):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        process = await trio.lowlevel.open_process(
            _spawn_argv(args), stdin=child.fileno(), stdout=log, stderr=log, start_new_session=True
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
        os.close(log)
    shim = RawShim(process, parent)
    try:
        if ready:
            first = await shim.until(p.Ready)
            assert shim.events == [first], shim.events
        yield shim
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                leftovers = process_tree.descendants(process.pid)
                process.kill()
                for pid in leftovers:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                await process.wait()
            with suppress(trio.ClosedResourceError):
                await shim.stream.aclose()


async def read_events_to_end(shim: RawShim, timeout_secs: float = 20.0) -> list[p.AnyEvent]:
    """Like :meth:`RawShim.read_to_end`, but a truncated last frame is reported, not raised."""
    try:
        return await shim.read_to_end(timeout_secs)
    except FrameError as exc:
        raise AssertionError(f"the shim's last frame was cut short: {exc}") from exc
