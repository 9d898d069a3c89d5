"""Supervise three shims on three temporary workspaces, send them work, print events.

By default each shim runs the fake Codex CLI (no network, a second or two)::

    .venv/bin/python examples/orchestrator.py

With ``--real`` the shims run the real Codex CLI (``$CODEX_BIN``, else the
pinned ``.codex-cli/node_modules/.bin/codex``) against the local mock model
server, still offline::

    .venv/bin/python examples/orchestrator.py --real

Every shim is kept alive by :func:`trio_codex_shim.supervise.supervise`
(pinged every second, restarted on death); the script sends each one
``--messages`` messages, waits for their outcomes, then shuts everything
down.  ``--kill-one`` SIGKILLs the first shim halfway to show a restart.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, ShimGone
from trio_codex_shim.supervise import (
    Report,
    Restarted,
    ShimDied,
    ShimEvent,
    Stopped,
    Supervisor,
    supervise,
)
from trio_codex_shim.testing.fake_codex import Sleep, Step, Turn, answer_turn
from trio_codex_shim.testing.harness import fake_shim_options

REPO = Path(__file__).resolve().parent.parent
PINNED_CODEX = REPO / ".codex-cli" / "node_modules" / ".bin" / "codex"
NAMES = ("alpha", "bravo", "charlie")
RUN_LIMIT_SECS = 180.0
TURN_LIMIT_SECS = 120.0


def printer(name: str) -> partial[None]:
    return partial(_print_report, name)


def _print_report(name: str, report: Report) -> None:
    match report:
        case ShimEvent(generation=gen, event=event):
            text = p.encode(event).decode()
            print(f"[{name}#{gen}] {text[:160]}", flush=True)
        case ShimDied() | Restarted() | Stopped():
            print(f"[{name}] *** {report!r}", flush=True)


def fake_options(root: Path, name: str) -> ClientOptions:
    """A shim whose Codex is the fake CLI, answering after a short pause."""
    turns: list[Turn | list[Step]] = [
        answer_turn(f"{name}: done with task {i}", steps=[Sleep(0.2)]) for i in range(8)
    ]
    return fake_shim_options(root, turns, name=name, extra_args=("--log-level", "warning"))


def real_options(root: Path, name: str, codex: Path, base_url: str) -> ClientOptions:
    """A shim running the real Codex CLI against the mock model at ``base_url``."""
    from trio_codex_shim.testing.mock_model import codex_settings

    home = root / f"{name}-codex-home"
    home.mkdir()
    settings = codex_settings(base_url, home)
    extra = ("--codex-arg=--skip-git-repo-check", *settings.shim_args())
    workspace = root / name
    workspace.mkdir()
    return ClientOptions(
        args=(
            *("--id", name, "--codex", str(codex), "--cwd", str(workspace)),
            *("--log-level", "warning", "--stop-grace", "1"),
            *extra,
        ),
        env=settings.environ(),
        log_path=root / f"{name}.log",
    )


async def run_one(name: str, sup: Supervisor, count: int, kill_midway: bool) -> None:
    """Send ``count`` messages one after another, printing each outcome."""
    for i in range(count):
        if kill_midway and i == count // 2:
            client = sup.client
            if client is not None and client.pid is not None:
                print(f"[{name}] *** SIGKILL to shim pid {client.pid}", flush=True)
                os.kill(client.pid, signal.SIGKILL)
        try:
            outcome = await sup.send(f"Task {i} for {name}: say hello.", sender="example")
            result = await outcome.wait(TURN_LIMIT_SECS)
        except ShimGone as exc:
            print(f"[{name}] message {i} lost with its shim ({exc}); sending it again", flush=True)
            outcome = await sup.send(f"Task {i} for {name} (again).", sender="example")
            result = await outcome.wait(TURN_LIMIT_SECS)
        print(f"[{name}] message {i} -> {type(result).__name__}", flush=True)


@asynccontextmanager
async def maybe_mock_model(real: bool) -> AsyncIterator[str | None]:
    if not real:
        yield None
        return
    from trio_codex_shim.testing.mock_model import Reply, open_mock_model

    async with open_mock_model(default=Reply.text("Hello from the mock model.")) as server:
        yield server.base_url


async def main(args: argparse.Namespace) -> int:
    codex = Path(os.environ.get("CODEX_BIN", PINNED_CODEX))
    if args.real and not await trio.Path(codex).exists():
        print(f"no Codex CLI at {codex}: set CODEX_BIN or run `nox -s install_codex`")
        return 2
    with tempfile.TemporaryDirectory(prefix="shim-orchestrator-") as tmp:
        root = Path(tmp)
        with trio.fail_after(RUN_LIMIT_SECS):
            async with maybe_mock_model(args.real) as base_url, trio.open_nursery() as nursery:
                sups: list[tuple[str, Supervisor]] = []
                for name in NAMES:
                    if base_url is None:
                        options = fake_options(root, name)
                    else:
                        options = real_options(root, name, codex, base_url)
                    sup = await nursery.start(
                        partial(
                            supervise,
                            options,
                            ping_interval=1.0,
                            ping_timeout=5.0,
                            backoff_initial=0.2,
                            backoff_max=5.0,
                            on_event=printer(name),
                        )
                    )
                    sups.append((name, sup))
                async with trio.open_nursery() as work:
                    for i, (name, sup) in enumerate(sups):
                        kill = args.kill_one and i == 0
                        work.start_soon(run_one, name, sup, args.messages, kill)
                for name, sup in sups:
                    stopped = await sup.shutdown(10)
                    print(f"[{name}] stopped: {stopped.reason} after {sup.restarts} restart(s)")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--real", action="store_true", help="real Codex CLI + mock model")
    parser.add_argument("--messages", type=int, default=3, help="messages per shim (default 3)")
    parser.add_argument("--kill-one", action="store_true", help="SIGKILL a shim to see a restart")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(trio.run(main, parse(sys.argv[1:])))
