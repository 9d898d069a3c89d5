"""Test support: a real shim process driving the fake Codex CLI, and hygiene checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, EventSubscription, ShimClient
from trio_codex_shim.testing.fake_codex import Scenario, Turn, write_fake_codex_launcher
from trio_codex_shim.testing.fake_codex import read_invocations as read_invocations
from trio_codex_shim.testing.fake_codex import read_pids as read_pids
from trio_codex_shim.testing.harness import survivors as survivors
from trio_codex_shim.testing.mock_model import codex_settings

TERMINAL = (p.Completion, p.DeliveryFailed)


class FakeSetup(msgspec.Struct, frozen=True):
    """A workspace, a scenario for the fake CLI, and the options to start a shim on it."""

    workspace: Path
    scenario: Path
    options: ClientOptions


class RealSetup(msgspec.Struct, frozen=True):
    """A workspace, the real CLI's ``CODEX_HOME``, and the options to start a shim."""

    workspace: Path
    codex_home: Path
    options: ClientOptions


def fake_shim(
    tmp: Path,
    turns: Sequence[Turn],
    *args: str,
    log_name: str = "shim.log",
    **scenario: Any,
) -> FakeSetup:
    """A shim that runs the fake Codex CLI through ``turns`` (in ``tmp``)."""
    workspace = tmp / "work"
    workspace.mkdir(exist_ok=True)
    scenario_path = Scenario(turns=list(turns), **scenario).write(tmp / "scenario.json")
    codex = write_fake_codex_launcher(tmp / "bin" / "codex", scenario_path)
    options = ClientOptions(
        args=(
            "--codex",
            str(codex),
            "--cwd",
            str(workspace),
            "--log-level",
            "debug",
            "--stop-grace",
            "0.5",
            *args,
        ),
        log_path=tmp / log_name,
        ready_timeout_secs=20.0,
    )
    return FakeSetup(workspace, scenario_path, options)


def terminal_ids(events: Sequence[p.AnyEvent]) -> list[str]:
    """The message ids of every terminal event, in order, duplicates kept."""
    ids: list[str] = []
    for event in events:
        if isinstance(event, p.Completion) and event.message_id is not None:
            ids.append(event.message_id)
        elif isinstance(event, p.DeliveryFailed):
            ids.append(event.id)
    return ids


async def until(predicate: Callable[[], bool], timeout_secs: float = 20.0) -> None:
    """Poll ``predicate`` (a fact outside Trio: /proc, a file) until true, bounded."""
    with trio.fail_after(timeout_secs):
        while not predicate():  # noqa: ASYNC110 - the fact is outside Trio's reach
            await trio.sleep(0.05)


def real_shim(
    tmp: Path, codex_bin: Path, base_url: str, *args: str, log_name: str = "shim.log"
) -> RealSetup:
    """A shim running the real Codex CLI against the mock model at ``base_url``.

    Codex gets an isolated ``CODEX_HOME`` in ``tmp`` and a workspace that is
    not a git repository (hence ``--skip-git-repo-check``).
    """
    workspace = tmp / "work"
    workspace.mkdir(exist_ok=True)
    home = tmp / "codex-home"
    home.mkdir(exist_ok=True)
    settings = codex_settings(base_url, home)
    options = ClientOptions(
        args=(
            "--codex",
            str(codex_bin),
            "--cwd",
            str(workspace),
            "--codex-arg=--skip-git-repo-check",
            *settings.shim_args(),
            "--log-level",
            "debug",
            "--stop-grace",
            "1",
            *args,
        ),
        env=settings.environ(),
        log_path=tmp / log_name,
        ready_timeout_secs=20.0,
    )
    return RealSetup(workspace, home, options)


def processes_with(needle: str) -> list[int]:
    """Live processes whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmdline.replace(b"\0", b" ") and process_tree.is_alive(
            int(entry.name)
        ):
            found.append(int(entry.name))
    return found


async def events_so_far(shim: ShimClient, sub: EventSubscription) -> list[p.AnyEvent]:
    """Every event ``sub`` has seen up to now: a Ping's Pong follows them all."""
    await shim.ping()
    return sub.drain()
