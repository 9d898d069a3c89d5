"""``python -m benchmarks``: every figure with its baseline, measured in one run, as one table.

The table goes to stdout and to ``benchmarks/RESULTS.md``; progress lines go
to stderr.  Figures are measured, never asserted: a missed target is
reported as missed.  ``--quick`` shortens every measurement (a smoke run,
not the numbers to quote); ``--only`` picks figures.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import trio

import trio_codex_shim

from . import frames, per_message, process_costs, relay
from .common import REPO, Row, codex_program, progress

RESULTS: Final = Path(__file__).resolve().parent / "RESULTS.md"
FIGURES: Final = (
    "per-message",
    "fake",
    "relay",
    "frames",
    "memory",
    "startup",
    "idle",
    "app-server",
)


class Settings(argparse.Namespace):
    quick: bool
    idle_secs: float | None
    turns: int | None
    lines: int | None
    only: str | None
    output: Path | None


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--idle-secs", type=float, help="idle window (default 60, quick 10)")
    parser.add_argument("--turns", type=int, help="messages per side, real CLI (default 40)")
    parser.add_argument("--lines", type=int, help="JSONL lines per relay turn (default 300000)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"markdown file to write (default {RESULTS.relative_to(REPO)}; none with --quick)",
    )
    return parser.parse_args(argv, namespace=Settings())


def _codex_version(codex: Path) -> str:
    try:
        out = subprocess.run([codex, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc})"
    return out.stdout.strip() or out.stderr.strip()


async def _app_server_rows(codex: Path, turns: int) -> list[Row]:
    """The rows of ``benchmarks/app_server_rows.py`` (another helper's), if it is there."""
    if importlib.util.find_spec("benchmarks.app_server_rows") is None:
        return []
    try:
        from . import app_server_rows

        found = await app_server_rows.measure_rows(codex, turns)
    except Exception as exc:  # someone else's module: report, do not lose the table
        return [
            Row(
                figure="app-server backend",
                value="not measured",
                baseline="—",
                ratio="—",
                target="—",
                met=None,
                note=f"benchmarks/app_server_rows.py failed: {exc!r}",
            )
        ]
    direct = next((row for row in found if "direct" in row.name), None)
    others = "; ".join(f"{row.name} {row.median_ms:.0f} ms" for row in found if row is not direct)
    rows = []
    for row in found:
        if row is direct or "app-server" not in row.name:
            continue  # exec vs direct is measured interleaved above
        base = direct.median_ms if direct is not None else None
        rows.append(
            Row(
                figure=f"per-message, {row.name} (real CLI)",
                value=f"{row.median_ms:.1f} ms",
                baseline="—" if direct is None else f"{direct.median_ms:.1f} ms ({direct.name})",
                ratio="—" if not base else f"{row.median_ms / base:.3f}x",
                target="—",
                met=None,
                note=f"from benchmarks/app_server_rows.py: median of {row.turns} sequential "
                f"messages (first {row.first_ms:.0f} ms, max {row.max_ms:.0f} ms), not "
                f"interleaved; the same helper measured {others}",
            )
        )
    return rows


async def measure(settings: Settings, tmp: Path) -> list[Row]:
    quick = settings.quick
    codex = codex_program()
    turns = settings.turns or (10 if quick else 40)
    lines = settings.lines or (100_000 if quick else 300_000)
    idle = settings.idle_secs or (10.0 if quick else 60.0)
    chosen = set(FIGURES if settings.only is None else settings.only.split(","))
    unknown = chosen - set(FIGURES)
    if unknown:
        raise SystemExit(f"unknown figure(s): {', '.join(sorted(unknown))}")
    steps: list[tuple[str, Callable[[Path], Awaitable[list[Row]]]]] = [
        ("per-message", lambda d: per_message.real_rows(d, codex, turns)),
        ("fake", lambda d: per_message.fake_rows(d, 30 if quick else 150, 50 if quick else 300)),
        ("relay", lambda d: relay.relay_rows(d, lines, 3 if quick else 5)),
        ("frames", lambda d: frames.frame_rows(d, 50_000 if quick else 200_000, 3 if quick else 5)),
        ("memory", lambda d: process_costs.memory_rows(d, 30, 300)),
        ("startup", lambda d: process_costs.startup_rows(d, 10 if quick else 30)),
        ("idle", lambda d: process_costs.idle_rows(d, idle)),
        ("app-server", lambda d: _app_server_rows(codex, turns)),
    ]
    rows: list[Row] = []
    for name, step in steps:
        if name not in chosen:
            continue
        progress(f"== {name}")
        work = tmp / name
        work.mkdir()
        rows += await step(work)
    return rows


def _met(row: Row) -> str:
    return "—" if row.met is None else ("**yes**" if row.met else "**no**")


def markdown(rows: list[Row], header: list[str]) -> str:
    out = [*header, ""]
    out.append("| figure | value | baseline (same run) | ratio | target | met |")
    out.append("|---|---|---|---|---|---|")
    for row in rows:
        cells = [row.figure, row.value, row.baseline, row.ratio, row.target, _met(row)]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out.append("")
    out += [f"- **{row.figure}**: {row.note}" for row in rows if row.note]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    package = Path(trio_codex_shim.__file__).parent
    # As installed: bytecode compiled (this sandbox sets PYTHONDONTWRITEBYTECODE=1,
    # which would otherwise make every shim start compile the package from source).
    compileall.compile_dir(package, quiet=1)
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        rows = trio.run(measure, settings, Path(tmp))
    load_after = os.getloadavg()
    header = [
        "# Benchmarks"
        + (" (--quick: a smoke run, not the figures to quote)" if settings.quick else ""),
        "",
        f"`python -m benchmarks {' '.join(sys.argv[1:] if argv is None else argv)}`".replace(
            " `", "`"
        ),
        f"{started:%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} cores; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"Python {platform.python_version()}, trio {trio.__version__}; "
        f"{_codex_version(codex_program())}.",
        "Every baseline is measured in the same run, interleaved with its figure; "
        "medians throughout.",
    ]
    text = markdown(rows, header)
    print(text)
    output = settings.output or (None if settings.quick else RESULTS)
    if output is not None:
        output.write_text(text)
        progress(f"wrote {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")


if __name__ == "__main__":
    main()
