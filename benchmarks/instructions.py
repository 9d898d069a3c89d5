"""Instructions, not seconds: what the shim executes per Ping and per relayed line.

``python -m benchmarks.instructions``.  callgrind counts instructions, which do
not move with the machine's load, so they compare code changes where timings
on this shared machine cannot.  The shim runs under ``valgrind
--tool=callgrind --instr-atstart=no`` and counting is switched on
(``callgrind_control -i on``) only around the measured work: start-up is left
out, and so is the kernel's share (pipe and socket copies).  Needs valgrind;
takes about a minute.

- per Ping: pipelined Pings at 64 and at 1024 in flight (the frames figure);
- per line: a relay turn of realistic JSONL lines, less an empty turn (the
  relay figure), against msgspec decoding the same lines in a tight loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, open_shim
from trio_codex_shim.framing import FrameReader

from .common import REPO, progress, shim_argv, spawn_on_socketpair, stop_process
from .frames import round_trips
from .jsonl import realistic_lines, stream_lines, write_standin

_CALLGRIND: Final = ("valgrind", "--tool=callgrind", "--instr-atstart=no")
_START_LIMIT_SECS: Final = 300.0
"""Starting Python and Trio under valgrind takes tens of seconds."""
_CONTROL_LIMIT_SECS: Final = 60.0
_CEILING_LIMIT_SECS: Final = 600.0


async def _control(pid: int, *command: str) -> None:
    """Tell the callgrind-run process ``pid`` to do ``command`` (bounded: valgrind polls)."""
    with trio.fail_after(_CONTROL_LIMIT_SECS):
        await trio.run_process(
            ["callgrind_control", *command, str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


async def _collect(pid: int, on: bool) -> None:
    """Switch counting on or off in the callgrind-run process ``pid``."""
    await _control(pid, "-i", "on" if on else "off")


async def _dump(pid: int) -> None:
    """Write the counts so far to a numbered file and start again from zero."""
    await _control(pid, "-d")


def _totals(out: Path) -> list[int]:
    """Instructions in each dump of ``out`` (``out.1``, ``out.2``, ..., then ``out``)."""

    def order(path: Path) -> int:
        suffix = path.name[len(out.name) + 1 :]
        return int(suffix) if suffix.isdigit() else 1 << 30

    totals = []
    for path in sorted(out.parent.glob(out.name + "*"), key=order):
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                totals.append(int(line.split()[1]))
                break
    return totals


async def per_ping(tmp: Path, count: int, window: int) -> float:
    """Instructions the shim executes per Ping with ``window`` Pings in flight."""
    out = tmp / f"ping-{window}.callgrind"
    argv = [*_CALLGRIND, f"--callgrind-out-file={out}"]
    argv += shim_argv("--codex", "codex", "--cwd", os.fspath(tmp), "--stats-interval", "3600")
    proc, stream = await spawn_on_socketpair(argv, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(_START_LIMIT_SECS):
            ready = await FrameReader(stream).receive()
        assert ready is not None and isinstance(p.decode_event(ready), p.Ready), ready
        await round_trips(stream, 200, window)  # warm-up
        await _collect(proc.pid, True)
        await round_trips(stream, count, window)
        await _collect(proc.pid, False)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await stop_process(proc, stream)
    return sum(_totals(out)) / count


async def per_line(tmp: Path, lines: int) -> tuple[float, float]:
    """Instructions per relayed JSONL line: the shim's, and msgspec's tight loop's."""
    block = realistic_lines(1000)
    repeat = max(1, lines // 1000)
    standin = write_standin(tmp / "bin", block, repeat)
    work = tmp / "work"
    work.mkdir()
    out = tmp / "relay.callgrind"
    options = ClientOptions(
        argv=(*_CALLGRIND, f"--callgrind-out-file={out}", sys.executable, "-m", "trio_codex_shim"),
        args=("--codex", os.fspath(standin.program), "--cwd", os.fspath(work)),
        log_path=tmp / "shim.log",
        ready_timeout_secs=_START_LIMIT_SECS,
    )
    async with open_shim(options) as shim:
        assert shim.pid is not None
        pid = shim.pid

        async def turn(n: int) -> None:
            standin.set_repeat(n)
            result = await (await shim.send(f"relay {n}")).wait(600)
            if not isinstance(result, p.Completion):
                raise RuntimeError(f"relay turn failed: {result}")

        await turn(0)  # warm-up: the first turn starts the thread
        for n in (0, repeat):  # an empty turn, then a full one: one dump each
            await _collect(pid, True)
            await turn(n)
            await _collect(pid, False)
            await _dump(pid)
    empty, full = _totals(out)[:2]
    total = repeat * len(block)
    return (full - empty) / total, await _ceiling_per_line(stream_lines(block, repeat))


async def _ceiling_per_line(lines: list[bytes]) -> float:
    """msgspec's tight loop over ``lines`` (:func:`benchmarks.relay._loop_msgspec`), counted."""
    with tempfile.TemporaryDirectory(prefix="ceiling-") as d:
        data = Path(d) / "lines.bin"
        data.write_bytes(b"\n".join(lines))
        out = Path(d) / "ceiling.callgrind"
        script = (
            "import os, subprocess, sys\n"
            "from benchmarks.relay import _loop_msgspec\n"
            "lines = open(sys.argv[1], 'rb').read().split(b'\\n')\n"
            "pid = str(os.getpid())\n"
            "quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "subprocess.run(['callgrind_control', '-i', 'on', pid], **quiet)\n"
            "_loop_msgspec(lines)\n"
            "subprocess.run(['callgrind_control', '-i', 'off', pid], **quiet)\n"
        )
        argv = [*_CALLGRIND, f"--callgrind-out-file={out}", sys.executable, "-c", script, str(data)]
        env = {**os.environ, "PYTHONPATH": os.fspath(REPO)}
        with trio.fail_after(_CEILING_LIMIT_SECS):
            await trio.run_process(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        return sum(_totals(out)) / len(lines)


async def main(count: int = 20_000, lines: int = 30_000) -> None:
    with tempfile.TemporaryDirectory(prefix="instructions-") as d:
        tmp = Path(d)
        for window in (64, 1024):
            progress(f"instructions: {count} Pings, {window} in flight, under callgrind")
            (tmp / str(window)).mkdir()
            ping = await per_ping(tmp / str(window), count, window)
            print(f"per Ping, {window} in flight: {ping:,.0f} instructions")
        progress(f"instructions: a relay turn of {lines} lines, under callgrind")
        (tmp / "relay").mkdir()
        line, ceiling = await per_line(tmp / "relay", lines)
        print(f"per relayed line: {line:,.0f} instructions (msgspec's tight loop: {ceiling:,.0f})")


if __name__ == "__main__":
    trio.run(main)
