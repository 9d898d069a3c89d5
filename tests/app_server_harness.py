"""Drive a real shim process over a socketpair, for the app-server end-to-end tests.

The shim runs as ``python -m trio_codex_shim --fd N`` in a session of its own;
frames are the protocol's 4-byte length + JSON.  Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import trio

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.framing import FrameReader, frame

Terminal = p.Completion | p.DeliveryFailed


class Shim:
    """One shim process and the orchestrator's end of its socket."""

    def __init__(self, proc: trio.Process, stream: trio.SocketStream, log_path: Path) -> None:
        self.proc = proc
        self.stream = stream
        self.reader = FrameReader(stream)
        self.events: list[p.AnyEvent] = []
        self.log_path = log_path
        self._seen = 0

    async def send(self, cmd: p.AnyCommand) -> None:
        with trio.fail_after(5):
            await self.stream.send_all(frame(p.encode(cmd)))

    async def message(self, body: str, message_id: str) -> None:
        await self.send(p.SendMessage(sender="manager", body=body, message_id=message_id))

    async def next_event(self, timeout_secs: float) -> p.AnyEvent:
        with trio.fail_after(timeout_secs):
            payload = await self.reader.receive()
        if payload is None:
            raise EOFError("the shim closed the connection")
        event = p.decode_event(payload)
        self.events.append(event)
        return event

    async def wait_for(
        self, pred: Callable[[p.AnyEvent], bool], timeout_secs: float = 20.0
    ) -> p.AnyEvent:
        """The first event from now on (or already received and not yet
        consumed by a wait) that satisfies ``pred``."""
        with trio.fail_after(timeout_secs):
            while True:
                while self._seen < len(self.events):
                    event = self.events[self._seen]
                    self._seen += 1
                    if pred(event):
                        return event
                await self.next_event(timeout_secs)

    async def terminal(self, message_id: str, timeout_secs: float = 20.0) -> Terminal:
        """The ``Completion`` or ``DeliveryFailed`` of ``message_id``."""
        for event in self.events:
            if _is_terminal(event, message_id):
                assert isinstance(event, p.Completion | p.DeliveryFailed)
                return event
        event = await self.wait_for(lambda e: _is_terminal(e, message_id), timeout_secs)
        assert isinstance(event, p.Completion | p.DeliveryFailed)
        return event

    def terminals(self, message_id: str) -> list[p.AnyEvent]:
        return [e for e in self.events if _is_terminal(e, message_id)]

    async def drain(self, timeout_secs: float = 0.3) -> None:
        """Read whatever events come within ``timeout_secs``."""
        with trio.move_on_after(timeout_secs), suppress(EOFError):
            while True:
                await self.next_event(timeout_secs)

    async def wait_exit(self, timeout_secs: float = 15.0) -> int:
        with trio.fail_after(timeout_secs):
            with suppress(EOFError):
                while True:
                    await self.next_event(timeout_secs)
            return await self.proc.wait()

    def descendants(self) -> list[int]:
        return process_tree.descendants(self.proc.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _is_terminal(event: p.AnyEvent, message_id: str) -> bool:
    if isinstance(event, p.Completion):
        return event.message_id == message_id
    return isinstance(event, p.DeliveryFailed) and event.id == message_id


@asynccontextmanager
async def open_shim(
    args: Sequence[str], *, env: dict[str, str], log_path: Path, cwd: Path
) -> AsyncIterator[Shim]:
    """Start a shim, wait for ``Ready``; on exit Kill it and make sure it is gone."""
    parent, child = socket.socketpair()
    fd = child.fileno()
    argv = [sys.executable, "-m", "trio_codex_shim", "--fd", str(fd), *args]
    out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        proc = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            cwd=cwd,
            pass_fds=(fd,),
            start_new_session=True,
        )
    finally:
        os.close(out)
        child.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
    shim = Shim(proc, stream, log_path)
    try:
        first = await shim.next_event(15)
        assert isinstance(first, p.Ready), first
        yield shim
    finally:
        with trio.CancelScope(shield=True):
            await _stop(shim)


async def _stop(shim: Shim) -> None:
    proc = shim.proc
    leftovers = shim.descendants()
    if proc.returncode is None:
        with trio.move_on_after(10), suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await shim.stream.send_all(frame(p.encode(p.Kill())))
            await proc.wait()
    if proc.returncode is None:
        leftovers += shim.descendants()
        proc.kill()
        for pid in leftovers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with trio.move_on_after(5):
            await proc.wait()
    await shim.stream.aclose()


def pids_with_cmdline(pids: Sequence[int], needle: bytes) -> list[int]:
    """Those of ``pids`` whose command line contains ``needle`` as one argument."""
    found = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in argv:
            found.append(pid)
    return found
