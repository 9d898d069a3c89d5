"""Test support: a real shim process driving the fake Codex CLI, and hygiene checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions
from trio_codex_shim.testing.fake_codex import Scenario, Turn, read_pids, write_fake_codex_launcher
from trio_codex_shim.testing.fake_codex import read_invocations as read_invocations

TERMINAL = (p.Completion, p.DeliveryFailed)


class FakeSetup(msgspec.Struct, frozen=True):
    """A workspace, a scenario for the fake CLI, and the options to start a shim on it."""

    workspace: Path
    scenario: Path
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


def survivors(scenario: Path) -> list[int]:
    """Grandchildren the fake CLI started that are still alive (not even zombies)."""
    return [pid for pid in read_pids(scenario) if process_tree.is_alive(pid)]


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
