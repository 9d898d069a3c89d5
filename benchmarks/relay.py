"""JSONL relay rate: realistic Codex lines per second through the shim.

A stand-in Codex (:mod:`benchmarks.codex_standin`) streams ``lines`` realistic
lines as fast as the pipe takes them.  The shim's rate is the marginal one:
``lines / (turn with lines - turn with none)``, both timed SendMessage ->
Completion on the same shim, so process start-up and the message round trip
cancel out.  Its ceiling is msgspec decoding the same lines, already split,
into the shim's own Struct in a tight loop in one process; the naive port is
``json.loads`` line by line.  Rounds interleave all four measurements.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Final

import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.client import open_shim
from trio_codex_shim.codex import exec_jsonl

from .common import Row, median, progress, shim_options
from .jsonl import realistic_lines, stream_lines, write_standin

_BLOCK: Final = 1000


def _loop_msgspec(lines: list[bytes]) -> float:
    decode = exec_jsonl._decoder.decode  # the shim's own decoder and Struct
    start = time.perf_counter()
    for line in lines:
        decode(line)
    return time.perf_counter() - start


def _loop_json(lines: list[bytes]) -> float:
    loads = json.loads
    start = time.perf_counter()
    for line in lines:
        loads(line)
    return time.perf_counter() - start


async def relay_rows(tmp: Path, lines: int, rounds: int) -> list[Row]:
    block = realistic_lines(_BLOCK)
    repeat = max(1, lines // _BLOCK)
    standin = write_standin(tmp / "bin", block, repeat)
    all_lines = stream_lines(block, repeat)
    total = len(all_lines)
    per_run = standin.block_bytes * repeat
    mb = per_run / 1e6
    workspace = tmp / "work"
    workspace.mkdir()
    empty: list[float] = []
    full: list[float] = []
    ceiling: list[float] = []
    naive: list[float] = []
    options = shim_options(standin.program, workspace, log_path=tmp / "shim.log")
    async with open_shim(options) as shim:

        async def turn(i: int, count: int) -> float:
            standin.set_repeat(count)
            start = time.perf_counter()
            outcome = await shim.send(f"relay {i}")
            result = await outcome.wait(600)
            elapsed = time.perf_counter() - start
            if not isinstance(result, p.Completion):
                raise RuntimeError(f"relay turn failed: {result}")
            return elapsed

        await turn(-1, 0)  # warm-up: the first turn starts the thread
        for r in range(rounds):
            progress(f"relay round {r + 1}/{rounds}: {total} lines, {mb:.0f} MB")
            ceiling.append(_loop_msgspec(all_lines))
            naive.append(_loop_json(all_lines))
            empty.append(await turn(2 * r, 0))
            full.append(await turn(2 * r + 1, repeat))
    shim_rate = total / (median(full) - median(empty))
    ceiling_rate = total / median(ceiling)
    naive_rate = total / median(naive)
    share = shim_rate / ceiling_rate
    speedup = shim_rate / naive_rate
    detail = (
        f"{total} lines ({mb:.0f} MB, {per_run / total:.0f} B/line; items: 45% commands "
        f"(started, then completed with output), 15% agent messages, 15% reasoning, "
        f"15% to-do updates, 10% file changes); "
        f"turn {median(full):.2f} s with lines, {median(empty) * 1000:.0f} ms without; "
        f"median of {rounds}"
    )
    return [
        Row(
            figure="JSONL relay rate vs msgspec ceiling",
            value=f"{shim_rate / 1000:.0f}k lines/s",
            baseline=f"{ceiling_rate / 1000:.0f}k lines/s (msgspec tight loop, one process)",
            ratio=f"{share:.2f}",
            target="≥ 0.50",
            met=share >= 0.5,
            note=detail,
        ),
        Row(
            figure="JSONL relay rate vs stdlib loop",
            value=f"{shim_rate / 1000:.0f}k lines/s",
            baseline=f"{naive_rate / 1000:.0f}k lines/s (json.loads per line, one process)",
            ratio=f"{speedup:.2f}x",
            target="≥ 3x",
            met=speedup >= 3.0,
        ),
    ]


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        lines = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
        for row in trio.run(relay_rows, Path(d), lines, 3):
            print(row)
