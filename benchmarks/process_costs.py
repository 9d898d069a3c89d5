"""What a shim costs as a process: start-up, idle CPU, and memory under a flood of output.

- **start-up**: spawning ``python -m trio_codex_shim --fd N`` until its
  ``Ready`` frame arrives, against spawning ``python -c "import trio, msgspec"``
  until it writes a byte after those imports (the floor for any Trio +
  msgspec shim), alternating.
- **idle**: CPU time (``/proc/PID/task/*/schedstat``, nanoseconds) an idle shim
  uses over a window after ``Ready``, next to an idle ``trio.sleep_forever()``
  process over the same window.
- **memory**: peak RSS (``VmHWM``) of a shim whose stand-in Codex prints
  30 MB, then (a fresh shim) 300 MB of command output (1 MiB
  ``aggregated_output`` items); the baseline is the idle shim's RSS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import msgspec
import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, open_shim
from trio_codex_shim.framing import FrameReader

from .common import Row, median, ms, progress, shim_argv, spawn_on_socketpair, stop_process
from .jsonl import write_standin

_FLOOR: Final = "import trio, msgspec"
_IDLE_TRIO: Final = "import trio; trio.run(trio.sleep_forever)"
_MIB: Final = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far (scheduler statistics, ns resolution)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


async def _start_shim(tmp: Path, *args: str) -> float:
    """Seconds from spawning a shim to its ``Ready``; the shim is then told to exit."""
    start = time.perf_counter()
    proc, stream = await spawn_on_socketpair(
        shim_argv("--codex", "codex", "--cwd", os.fspath(tmp), *args), stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(30):
            payload = await FrameReader(stream).receive()
        elapsed = time.perf_counter() - start
        if payload is None or not isinstance(p.decode_event(payload), p.Ready):
            raise RuntimeError(f"expected Ready, got {payload!r}")
        return elapsed
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await stop_process(proc, stream)


async def _run_floor() -> float:
    """Seconds from spawning ``python -c "import trio, msgspec"`` to its first byte."""
    start = time.perf_counter()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", f"{_FLOOR}; import os; os.write(1, b'.')"], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    async with proc.stdout:
        await proc.stdout.receive_some(1)
        elapsed = time.perf_counter() - start
    await proc.wait()
    return elapsed


async def startup_rows(tmp: Path, runs: int) -> list[Row]:
    shim: list[float] = []
    floor: list[float] = []
    await _start_shim(tmp)  # warm the page cache
    await _run_floor()
    for i in range(runs):
        if i % 10 == 0:
            progress(f"start-up: run {i + 1}/{runs}")
        pair = [(_start_shim, shim), (_run_floor, floor)]
        for fn, into in pair if i % 2 == 0 else pair[::-1]:
            into.append(await fn(tmp) if fn is _start_shim else await fn())  # type: ignore[operator]
    value = median(shim)
    return [
        Row(
            figure="start-up (spawn → Ready)",
            value=ms(value),
            baseline=f"{ms(median(floor))} (python -c '{_FLOOR}', spawn → first byte)",
            ratio=f"{value / median(floor):.2f}x",
            target="< 150 ms",
            met=value < 0.150,
            note=f"median of {runs} alternating runs",
        )
    ]


async def idle_rows(tmp: Path, seconds: float) -> list[Row]:
    """CPU of an idle shim (default settings) and of an idle Trio process, same window."""
    proc, stream = await spawn_on_socketpair(
        shim_argv("--codex", "codex", "--cwd", os.fspath(tmp)), stderr=subprocess.DEVNULL
    )
    floor = await trio.lowlevel.open_process([sys.executable, "-c", _IDLE_TRIO])
    try:
        reader = FrameReader(stream)
        with trio.fail_after(30):
            await reader.receive()  # Ready
        await trio.sleep(1.0)  # both past their start-up

        async def drain() -> None:  # SessionStats every 10 s: keep reading them
            while await reader.receive() is not None:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            shim0, floor0 = cpu_seconds(proc.pid), cpu_seconds(floor.pid)
            progress(f"idle: measuring CPU over {seconds:g} s")
            await trio.sleep(seconds)
            shim_cpu = cpu_seconds(proc.pid) - shim0
            floor_cpu = cpu_seconds(floor.pid) - floor0
            nursery.cancel_scope.cancel()
    finally:
        floor.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await stop_process(floor)
            await stop_process(proc, stream)
    per_minute = shim_cpu * 60 / seconds
    return [
        Row(
            figure=f"idle CPU over {seconds:g} s",
            value=ms(shim_cpu),
            baseline=f"{ms(floor_cpu)} (idle trio.sleep_forever(), same window)",
            ratio=f"+{(shim_cpu - floor_cpu) * 1000:.1f} ms",
            target="< 50 ms / 60 s",
            met=per_minute < 0.050,
            note=f"default settings (SessionStats every 10 s, orphans reaped on SIGCHLD); "
            f"{per_minute * 1000:.1f} ms per minute",
        )
    ]


def _output_line(size: int, index: int) -> bytes:
    """One ``command_execution`` item whose output is ``size`` bytes of text."""
    row = b"tests/test_module.py::test_case PASSED [ 42%] some log output\n"
    output = (row * (size // len(row) + 1))[:size].decode()
    item = {
        "id": f"item_{index}",
        "type": "command_execution",
        "command": "/bin/bash -lc 'make test'",
        "aggregated_output": output,
        "exit_code": 0,
        "status": "completed",
    }
    return msgspec.json.encode({"type": "item.completed", "item": item})


async def _peak_rss(tmp: Path, block: list[bytes], repeat: int) -> tuple[int, int, float]:
    """(idle RSS, peak RSS) in KiB of a fresh shim relaying ``block`` ``repeat`` times,
    and the rate in bytes per second."""
    megabytes = len(block) * repeat
    standin = write_standin(tmp / f"bin-{megabytes}", block, repeat)
    workspace = tmp / f"mem-{megabytes}"
    workspace.mkdir()
    options = ClientOptions(
        args=("--codex", os.fspath(standin.program), "--cwd", os.fspath(workspace)),
        log_path=tmp / "memory-shim.log",
    )
    async with open_shim(options) as shim:
        assert shim.pid is not None
        idle = memory_kib(shim.pid, "VmRSS")
        start = time.perf_counter()
        outcome = await shim.send("print it all")
        result = await outcome.wait(600)
        elapsed = time.perf_counter() - start
        if not isinstance(result, p.Completion):
            raise RuntimeError(f"memory run failed: {result}")
        peak = memory_kib(shim.pid, "VmHWM")
    return idle, peak, standin.block_bytes * repeat / elapsed


async def memory_rows(tmp: Path, small_mb: int, big_mb: int) -> list[Row]:
    block = [_output_line(_MIB, i) for i in range(small_mb)]  # 1 MiB items
    progress(f"memory: {small_mb} MB of command output")
    _, small, _ = await _peak_rss(tmp, block, 1)
    progress(f"memory: {big_mb} MB of command output")
    idle_big, big, rate = await _peak_rss(tmp, block, big_mb // small_mb)
    return [
        Row(
            figure=f"peak RSS, {big_mb} MB of output",
            value=f"{big / 1024:.1f} MB",
            baseline=f"{small / 1024:.1f} MB with {small_mb} MB of output; "
            f"{idle_big / 1024:.1f} MB idle",
            ratio=f"{big / small:.2f}x for {big_mb // small_mb}x the output",
            target="< 60 MB, flat",
            met=big / 1024 < 60 and big / small < 1.1,
            note=f"1 MiB command_execution items; relayed at {rate / 1e6:.0f} MB/s",
        )
    ]
