"""Per-message round trips: the shim against running the same ``codex exec`` directly.

Every side keeps its own thread (a new one, then ``resume ID``) in its own
workspace and ``CODEX_HOME``, and the sides take turns message by message,
cycling through every order of the sides, so machine noise and the thread's
growth hit them alike.  Ratios and differences are medians of per-round
pairs.

- **shim**: ``SendMessage`` written -> ``Completion`` read, through a shim
  started with :func:`~trio_codex_shim.client.open_shim`.
- **direct**: from this same Trio process, the argv, environment, working
  directory and stdin prompt the shim would use -- built with the shim's own
  functions (:func:`~trio_codex_shim.cli.parse`,
  :func:`~trio_codex_shim.codex.exec_argv.exec_argv`,
  :func:`~trio_codex_shim.codex.environment.codex_environment`,
  :func:`~trio_codex_shim.codex.launcher.apply_env`) -- timed from spawning to
  the exit with both pipes read to the end.
- **direct launcher**: the same, but with the npm package's Node launcher as
  the program (what a shim without native resolution would run).

Three CLIs: the real one against the mock model (with the Node launcher as a
third side), the fake CLI (``testing/fake_codex.py``), and a ``/bin/sh``
stand-in that costs ~2 ms a run, so the shim's own cost shows above the
noise of the fake's Python start-up.  With the fake,
:func:`check_same_invocation` compares what it recorded for a shim run and a
direct run (argv, prompt, environment).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Final

import msgspec
import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.cli import parse
from trio_codex_shim.client import ClientOptions, ShimClient, open_shim
from trio_codex_shim.codex.environment import codex_environment
from trio_codex_shim.codex.exec_argv import exec_argv
from trio_codex_shim.codex.launcher import ResolvedCodex, apply_env, resolve_codex
from trio_codex_shim.core.text import format_injected_message
from trio_codex_shim.testing.fake_codex import Scenario, read_invocations, write_fake_codex_launcher
from trio_codex_shim.testing.mock_model import codex_settings, open_mock_model

from .common import Row, median, ms, progress

_TURN_LIMIT: Final = 120.0
_SENDER: Final = "bench"
_READ: Final = 65_536


class Direct(msgspec.Struct, kw_only=True):
    """Runs ``codex exec`` as the shim would, turn after turn on one thread."""

    name: str
    shim_args: tuple[str, ...]
    shim_env: dict[str, str]
    native: bool = True
    thread: str | None = None

    def command(self, thread: str | None) -> tuple[list[str], dict[str, str], Path]:
        """argv, environment and cwd of the next run, as the shim builds them."""
        options, _, _ = parse(["--fd", "3", *self.shim_args])
        codex = resolve_codex(options.codex) if self.native else ResolvedCodex(options.codex)
        env = codex_environment(self.shim_env, drop=options.env_drop, allow=options.env_allow)
        return exec_argv(options, codex.program, thread), apply_env(env, codex), options.cwd

    async def turn(self, body: str) -> float:
        argv, env, cwd = self.command(self.thread)
        prompt = format_injected_message(_SENDER, body).encode()
        start = time.perf_counter()
        with trio.fail_after(_TURN_LIMIT):
            stdout, code = await _run(argv, env, cwd, prompt)
        elapsed = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"{self.name}: codex exited {code}")
        if self.thread is None:
            self.thread = _thread_of(stdout)
        return elapsed


async def _run(argv: list[str], env: dict[str, str], cwd: Path, prompt: bytes) -> tuple[bytes, int]:
    """Spawn, write the prompt, read both pipes to the end, wait: as the exec backend does."""
    proc = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []

    async def write() -> None:
        assert proc.stdin is not None
        async with proc.stdin:
            await proc.stdin.send_all(prompt)

    async def read(stream: trio.abc.ReceiveStream, into: list[bytes] | None) -> None:
        async with stream:
            while chunk := await stream.receive_some(_READ):
                if into is not None:
                    into.append(bytes(chunk))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        nursery.start_soon(read, proc.stdout, out)
        nursery.start_soon(read, proc.stderr, None)
        await proc.wait()
    assert proc.returncode is not None
    return b"".join(out), proc.returncode


def _thread_of(stdout: bytes) -> str:
    for line in stdout.splitlines():
        event = msgspec.json.decode(line)
        if isinstance(event, dict) and event.get("type") == "thread.started":
            return str(event["thread_id"])
    raise RuntimeError("codex printed no thread.started")


async def _shim_turn(shim: ShimClient, body: str) -> float:
    start = time.perf_counter()
    outcome = await shim.send(body, sender=_SENDER)
    result = await outcome.wait(_TURN_LIMIT)
    elapsed = time.perf_counter() - start
    if not isinstance(result, p.Completion):
        raise RuntimeError(f"shim: {result}")
    return elapsed


async def interleave(
    sides: Sequence[tuple[str, Callable[[str], Awaitable[float]]]], turns: int, label: str
) -> dict[str, list[float]]:
    """``turns`` messages per side, the sides taking turns.

    Rounds cycle through every order of the sides, so over each full cycle
    every side goes first, last, and after each other side equally often.
    """
    samples: dict[str, list[float]] = {name: [] for name, _ in sides}
    orders = list(itertools.permutations(sides))
    step = max(1, turns // 4)
    for i in range(turns):
        if i % step == 0:
            progress(f"{label}: message {i + 1}/{turns}")
        for name, turn in orders[i % len(orders)]:
            samples[name].append(await turn(f"message {i}"))
    return samples


# ---------------------------------------------------------------------------
# The fake CLI
# ---------------------------------------------------------------------------


def _fake_side(tmp: Path, name: str) -> tuple[Path, tuple[str, ...]]:
    """A scenario (default answer ``OK``, forever) and the shim arguments to run it."""
    side = tmp / name
    workspace = side / "work"
    workspace.mkdir(parents=True)
    scenario = Scenario().write(side / "scenario.json")
    codex = write_fake_codex_launcher(side / "bin" / "codex", scenario)
    return scenario, ("--codex", os.fspath(codex), "--cwd", os.fspath(workspace))


_SH_CODEX: Final = """#!/bin/sh
# A Codex stand-in that costs next to nothing: read the prompt, print one turn.
thread=0199a000-0000-7000-8000-0000000000sh
prev=
for arg in "$@"; do
    [ "$prev" = resume ] && thread=$arg
    prev=$arg
done
cat >/dev/null
printf '%s\\n' \\
  '{"type":"thread.started","thread_id":"'"$thread"'"}' \\
  '{"type":"turn.started"}' \\
  '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"OK"}}' \\
  '{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":0,"output_tokens":10,"reasoning_output_tokens":0}}'
"""


def _sh_side(tmp: Path, name: str) -> tuple[str, ...]:
    side = tmp / name
    workspace = side / "work"
    workspace.mkdir(parents=True)
    codex = side / "codex"
    codex.write_text(_SH_CODEX)
    codex.chmod(codex.stat().st_mode | stat.S_IXUSR)
    return ("--codex", os.fspath(codex), "--cwd", os.fspath(workspace))


def check_same_invocation(shim_scenario: Path, direct_scenario: Path) -> str:
    """What the fake recorded for the first shim run and the first direct run must match."""
    shim_run = read_invocations(shim_scenario)[0]
    direct_run = read_invocations(direct_scenario)[0]
    problems = [
        what
        for what, a, b in (
            ("argv", shim_run.argv, direct_run.argv),
            ("stdin", shim_run.stdin, direct_run.stdin),
            ("environment names", sorted(shim_run.env_names), sorted(direct_run.env_names)),
            ("recorded environment", shim_run.env, direct_run.env),
            ("cwd name", Path(shim_run.cwd).name, Path(direct_run.cwd).name),
        )
        if a != b
    ]
    if problems:
        raise RuntimeError(f"the direct run differs from the shim's: {', '.join(problems)}")
    return "argv, stdin, environment identical (checked on the fake's records)"


async def _added(
    tmp: Path, label: str, shim_args: tuple[str, ...], direct_args: tuple[str, ...], turns: int
) -> tuple[dict[str, list[float]], str]:
    env = dict(os.environ)
    direct = Direct(name=f"direct {label}", shim_args=direct_args, shim_env=env)
    log = tmp / f"shim-{label.replace(' ', '-')}.log"
    options = ClientOptions(args=shim_args, env=env, log_path=log)
    async with open_shim(options) as shim:
        samples = await interleave(
            [("shim", partial(_shim_turn, shim)), ("direct", direct.turn)],
            turns,
            f"{label} round trips",
        )
    return samples, own_share(log, samples["shim"])


def _added_row(figure: str, measured: tuple[dict[str, list[float]], str], note: str) -> Row:
    samples, share = measured
    shim, direct = samples["shim"], samples["direct"]
    added = paired(shim, direct, lambda a, b: a - b)
    return Row(
        figure=figure,
        value=f"{ms(median(shim))} ({added * 1000:+.1f} ms added)",
        baseline=f"{ms(median(direct))} (same `codex exec` argv/env/cwd, run directly)",
        ratio=f"{paired(shim, direct, _ratio):.3f}x",
        target="≤ +3 ms",
        met=added <= 0.003,
        note=f"medians of {len(shim)} interleaved messages each; added = median of the "
        f"per-round differences; {note}{share}",
    )


async def fake_rows(tmp: Path, turns: int, sh_turns: int) -> list[Row]:
    """The fake CLI (``testing/fake_codex.py``), then a ``/bin/sh`` stand-in that
    costs ~2 ms, so the shim's own cost is not lost in Python's start-up noise."""
    shim_scenario, shim_args = _fake_side(tmp, "shim")
    direct_scenario, direct_args = _fake_side(tmp, "direct")
    fake = await _added(tmp, "fake CLI", shim_args, direct_args, turns)
    checked = check_same_invocation(shim_scenario, direct_scenario)
    sh = await _added(
        tmp, "sh stand-in", _sh_side(tmp, "sh-shim"), _sh_side(tmp, "sh-direct"), sh_turns
    )
    return [
        _added_row("per-message overhead, fake CLI", fake, checked),
        _added_row(
            "per-message overhead, sh stand-in",
            sh,
            "a /bin/sh script printing one canned turn: our own cost, without the fake's "
            "~100 ms of Python start-up noise",
        ),
    ]


_LOG_TIME: Final = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: turn \d+: codex exec (started|exited)"
)


def own_share(log: Path, round_trips: list[float]) -> str:
    """What the shim spent per message outside Codex: its round trip minus the
    Codex process's life as its log times it (spawn included; ms resolution)."""
    try:
        marks = [
            (dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), m[2])
            for m in _LOG_TIME.finditer(log.read_text())
        ]
    except OSError:
        return ""
    starts = [t for t, what in marks if what == "started"]
    exits = [t for t, what in marks if what == "exited"]
    if not starts or len(starts) != len(exits) or len(starts) != len(round_trips):
        return ""
    outside = [
        rt - (b - a).total_seconds() for rt, a, b in zip(round_trips, starts, exits, strict=True)
    ]
    return f"; shim time outside Codex's life (spawn, frames, core; its log) {ms(median(outside))}"


def _ratio(a: float, b: float) -> float:
    return a / b


def paired(a: list[float], b: list[float], how: Callable[[float, float], float]) -> float:
    """Median over rounds of ``how(a[i], b[i])``: interleaved pairs cancel drift."""
    return median([how(x, y) for x, y in zip(a, b, strict=True)])


# ---------------------------------------------------------------------------
# The real CLI against the mock model
# ---------------------------------------------------------------------------


async def real_rows(tmp: Path, codex: Path, turns: int) -> list[Row]:
    """Shim vs. the native binary run directly vs. the Node launcher run directly."""
    async with open_mock_model() as server, AsyncExitStack() as stack:
        sides: list[tuple[str, Callable[[str], Awaitable[float]]]] = []
        directs: list[Direct] = []
        log = tmp / "shim-real.log"
        for name in ("shim", "direct", "launcher"):
            side = tmp / f"real-{name}"
            workspace = side / "work"
            workspace.mkdir(parents=True)
            (side / "home").mkdir()
            settings = codex_settings(server.base_url, side / "home")
            config = settings.shim_args()
            args = (
                "--codex",
                os.fspath(codex),
                "--cwd",
                os.fspath(workspace),
                "--codex-arg=--skip-git-repo-check",
                *config,
            )
            env = settings.environ()
            if name == "shim":
                options = ClientOptions(args=args, env=env, log_path=log)
                client = await stack.enter_async_context(open_shim(options))
                sides.append((name, partial(_shim_turn, client)))
            else:
                runner = Direct(name=name, shim_args=args, shim_env=env, native=name == "direct")
                directs.append(runner)
                sides.append((name, runner.turn))
        native = directs[0].command(None)[0][0]
        if native == os.fspath(codex):
            raise RuntimeError(f"{codex} is not the npm launcher: nothing native to compare")
        samples = await interleave(sides, turns, "real CLI round trips")
    shim, direct, node = (samples[k] for k in ("shim", "direct", "launcher"))
    overhead = paired(shim, direct, _ratio)
    beyond = paired(shim, node, _ratio)
    note = (
        f"medians of {turns} interleaved messages each (a new thread, then resumes), "
        f"mock model; ratio = median of per-round ratios; "
        f"{median([a - b for a, b in zip(shim, direct, strict=True)]) * 1000:+.1f} ms per message"
        f"{own_share(log, shim)}"
    )
    return [
        Row(
            figure="per-message overhead, real CLI",
            value=ms(median(shim)),
            baseline=f"{ms(median(direct))} (same argv/env/cwd, native binary, run directly)",
            ratio=f"{overhead:.3f}x",
            target="≤ 1.03x",
            met=overhead <= 1.03,
            note=note,
        ),
        Row(
            figure="beyond direct (native binary)",
            value=ms(median(shim)),
            baseline=f"{ms(median(node))} (the npm Node launcher run directly)",
            ratio=f"{beyond:.3f}x",
            target="< 0.85x",
            met=beyond < 0.85,
            note=f"the shim runs {Path(native).name} from the launcher's platform package "
            "(codex/launcher.py); same interleaved rounds",
        ),
    ]
