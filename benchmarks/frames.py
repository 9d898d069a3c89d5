"""Frame throughput: pipelined Ping -> Pong round trips per second over a socketpair.

One client (this process) keeps ``window`` Pings in flight: it writes them in
batches of ``window / 2`` and splits every reply out of the stream with
:class:`~trio_codex_shim.framing.FrameReader`, the least an orchestrator does.
The same client runs against the shim and against a raw echo (a blocking
``recv``/``sendall`` loop in a second process that sends the Ping bytes
straight back), alternating, so the ratio is the shim's framing, decoding,
core and outbox against the transport alone.  A third peer, the least any
Trio shim does (split frames, decode each Command, encode and frame each
answer, a writer task sending them), shows how much of the gap is Trio and
Python rather than the shim.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Final

import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.framing import FrameReader, frame

from .common import Row, median, progress, shim_argv, spawn_on_socketpair, stop_process

_ROUND_LIMIT_SECS: Final = 600.0
"""One round takes about a second, or seconds under valgrind."""
_ECHO: Final = """
import socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
while data := s.recv(65536):
    s.sendall(data)
"""

_TRIO_FLOOR: Final = """
import socket, sys, trio
from trio_codex_shim import protocol as p
from trio_codex_shim.framing import FrameReader, frame

async def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    reader, queue, wake = FrameReader(stream), [], trio.lowlevel.ParkingLot()

    async def write():
        while True:
            while not queue:
                await wake.park()
            data = b"".join(queue)
            queue.clear()
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        while frames := await reader.receive_many():
            for payload in frames:
                p.decode_command(payload)
                queue.append(frame(p.encode(p.Pong())))
            wake.unpark_all()
        nursery.cancel_scope.cancel()

trio.run(main)
"""


async def round_trips(stream: trio.abc.Stream, count: int, window: int) -> float:
    """Seconds for ``count`` Pings, ``window`` in flight, until every reply is in.

    Bounded by :data:`_ROUND_LIMIT_SECS` (a peer that stops answering fails the run).
    """
    ping = frame(p.encode(p.Ping()))
    batch = max(1, window // 2)
    reader = FrameReader(stream)
    start = time.perf_counter()
    with trio.fail_after(_ROUND_LIMIT_SECS):
        sent = min(window, count)
        await stream.send_all(ping * sent)
        received = 0
        while received < count:
            if await reader.receive() is None:
                raise RuntimeError("the peer closed the stream")
            received += 1
            if received % batch == 0 and sent < count:
                more = min(batch, count - sent)
                await stream.send_all(ping * more)
                sent += more
    return time.perf_counter() - start


async def frame_rows(tmp: Path, count: int, rounds: int, window: int = 64) -> list[Row]:
    workspace = tmp / "frames-work"
    workspace.mkdir(parents=True)
    log = (tmp / "frames-shim.log").open("ab")
    shim, shim_stream = await spawn_on_socketpair(
        shim_argv("--codex", "codex", "--cwd", str(workspace), "--stats-interval", "3600"),
        stderr=log.fileno(),
    )
    echo, echo_stream = await spawn_on_socketpair([sys.executable, "-c", _ECHO, "{fd}"])
    floor, floor_stream = await spawn_on_socketpair([sys.executable, "-c", _TRIO_FLOOR, "{fd}"])
    peers: list[tuple[trio.SocketStream, list[float]]] = [
        (shim_stream, []),
        (echo_stream, []),
        (floor_stream, []),
    ]
    try:
        ready = await FrameReader(shim_stream).receive()
        assert ready is not None and isinstance(p.decode_event(ready), p.Ready), ready
        for stream, _ in peers:
            await round_trips(stream, count // 10, window)  # warm-up
        for r in range(rounds):
            progress(f"frames round {r + 1}/{rounds}: {count} pings each, window {window}")
            for stream, times in peers if r % 2 == 0 else peers[::-1]:
                times.append(await round_trips(stream, count, window))
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await stop_process(shim, shim_stream)
            await stop_process(echo, echo_stream)
            await stop_process(floor, floor_stream)
        log.close()
    shim_rate, echo_rate, floor_rate = (count / median(times) for _, times in peers)
    share = shim_rate / echo_rate
    return [
        Row(
            figure="frame throughput (Ping→Pong)",
            value=f"{shim_rate / 1000:.0f}k round trips/s",
            baseline=f"{echo_rate / 1000:.0f}k/s (raw socket echo, same client)",
            ratio=f"{share:.2f}",
            target="≥ 0.50",
            met=share >= 0.5,
            note=(
                f"{count} pipelined Pings, {window} in flight; median of {rounds}; "
                f"the least a Trio shim does (split, decode, answer, a writer task) "
                f"ran {floor_rate / 1000:.0f}k/s = {floor_rate / echo_rate:.2f} of raw in the same "
                f"rounds, the shim {shim_rate / floor_rate:.2f} of that"
            ),
        )
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for w in [int(x) for x in sys.argv[1:]] or [64]:
            for row in trio.run(frame_rows, Path(d) / str(w), 100_000, 3, w):
                print(row)
