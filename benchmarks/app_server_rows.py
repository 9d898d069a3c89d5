"""Per-message latency: the shim with ``--backend app-server``, with ``--backend exec``,
and ``codex exec --json`` run directly -- the real Codex CLI against the mock model.

Each row times ``turns`` messages on one thread, from writing ``SendMessage``
to reading its ``Completion`` (for the direct runs: from spawning
``codex exec`` to its exit), and reports the median, the first turn (which
starts the thread) and the slowest.  Measured, never asserted.

For the benchmark table::

    from benchmarks.app_server_rows import backend_rows
    rows = backend_rows(Path(".codex-cli/node_modules/.bin/codex"), turns=10)

or standalone: ``python benchmarks/app_server_rows.py [CODEX] [--turns N]``
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import msgspec
import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.codex.launcher import apply_env, resolve_codex
from trio_codex_shim.framing import FrameReader, frame
from trio_codex_shim.testing.mock_model import CodexSettings, codex_settings, open_mock_model

REPO: Final = Path(__file__).resolve().parent.parent
PINNED_CODEX: Final = REPO / ".codex-cli" / "node_modules" / ".bin" / "codex"
_TURN_LIMIT_SECS: Final = 60.0


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One way of running Codex, timed over ``turns`` messages (milliseconds)."""

    name: str
    turns: int
    median_ms: float
    first_ms: float
    max_ms: float

    @classmethod
    def of(cls, name: str, samples: list[float]) -> Row:
        ms = [s * 1000 for s in samples]
        return cls(
            name=name,
            turns=len(ms),
            median_ms=round(statistics.median(ms), 1),
            first_ms=round(ms[0], 1),
            max_ms=round(max(ms), 1),
        )


def backend_rows(codex: Path | None = None, *, turns: int = 10) -> list[Row]:
    """Measure the three rows (blocking: runs its own Trio loop)."""
    program = codex or Path(os.environ.get("CODEX_BIN") or PINNED_CODEX)
    return trio.run(measure_rows, program, turns)


async def measure_rows(codex: Path, turns: int = 10) -> list[Row]:
    """The rows, inside a running Trio loop: app-server shim, exec shim, direct exec."""
    rows: list[Row] = []
    async with open_mock_model() as server:
        for name, args in (
            ("shim --backend app-server", ["--backend", "app-server"]),
            ("shim --backend exec", ["--backend", "exec"]),
        ):
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                settings = codex_settings(server.base_url, Path(tmp) / "home")
                samples = await _time_shim(codex, settings, Path(tmp), args, turns)
            rows.append(Row.of(name, samples))
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            settings = codex_settings(server.base_url, Path(tmp) / "home")
            samples = await _time_exec(codex, settings, Path(tmp), turns)
            rows.append(Row.of("codex exec --json (direct)", samples))
    return rows


async def _time_shim(
    codex: Path, settings: CodexSettings, tmp: Path, args: list[str], turns: int
) -> list[float]:
    (tmp / "home").mkdir()
    work = tmp / "work"
    work.mkdir()
    config = list(settings.shim_args())
    parent, child = socket.socketpair()
    fd = child.fileno()
    argv = [sys.executable, "-m", "trio_codex_shim", "--fd", str(fd), "--codex", os.fspath(codex)]
    argv += ["--cwd", os.fspath(work), "--log-level", "warning", *config, *args]
    proc = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=settings.environ(),
        pass_fds=(fd,),
        start_new_session=True,
    )
    child.close()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
    reader = FrameReader(stream)
    samples: list[float] = []
    try:
        with trio.fail_after(_TURN_LIMIT_SECS):
            await _until(reader, lambda e: isinstance(e, p.Ready))
            await trio.sleep(1.0)  # let a persistent server finish starting, as in production
        for i in range(turns):
            mid = f"bench-{i}"
            cmd = p.SendMessage(sender="bench", body=f"message {i}", message_id=mid)
            with trio.fail_after(_TURN_LIMIT_SECS):
                start = time.perf_counter()
                await stream.send_all(frame(p.encode(cmd)))
                end = await _until(reader, partial(_terminal, mid=mid))
            if not isinstance(end, p.Completion):
                raise RuntimeError(f"{args}: message {i} failed: {end}")
            samples.append(time.perf_counter() - start)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(15):
            await stream.send_all(frame(p.encode(p.Kill())))
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
        await stream.aclose()
    return samples


async def _time_exec(codex: Path, settings: CodexSettings, tmp: Path, turns: int) -> list[float]:
    """``codex exec --json`` per message, as the exec backend runs it (native binary)."""
    (tmp / "home").mkdir()
    resolved = resolve_codex(os.fspath(codex))
    env = apply_env(settings.environ(), resolved)
    base = [resolved.program, "exec", "--json", "--skip-git-repo-check", "-m", "gpt-5.5"]
    base += [*settings.config_args, "--dangerously-bypass-approvals-and-sandbox"]
    thread: str | None = None
    samples: list[float] = []
    for i in range(turns):
        argv = base + (["resume", thread] if thread else []) + ["-"]
        with trio.fail_after(_TURN_LIMIT_SECS):
            start = time.perf_counter()
            done = await trio.run_process(
                argv,
                stdin=f"message {i}".encode(),
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                cwd=tmp,
            )
            samples.append(time.perf_counter() - start)
        if thread is None:
            for line in done.stdout.splitlines():
                event = msgspec.json.decode(line)
                if event.get("type") == "thread.started":
                    thread = str(event["thread_id"])
    return samples


def _terminal(event: p.AnyEvent, mid: str) -> bool:
    if isinstance(event, p.Completion):
        return event.message_id == mid
    return isinstance(event, p.DeliveryFailed) and event.id == mid


async def _until(reader: FrameReader, pred: Callable[[p.AnyEvent], bool]) -> p.AnyEvent:
    while True:
        payload = await reader.receive()
        if payload is None:
            raise RuntimeError("the shim closed the connection")
        event = p.decode_event(payload)
        if pred(event):
            return event


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| how | turns | median ms | first ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {r.turns} | {r.median_ms:.0f} | {r.first_ms:.0f} | {r.max_ms:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("codex", nargs="?", type=Path, help="the Codex CLI (default: pinned)")
    parser.add_argument("--turns", type=int, default=10)
    ns = parser.parse_args(argv)
    print(markdown(backend_rows(ns.codex, turns=ns.turns)))


if __name__ == "__main__":
    main()
