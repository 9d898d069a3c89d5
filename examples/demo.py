"""The main job end to end: a small Trio orchestrator drives one shim for two messages.

Starts the mock model server, then a shim running the real Codex CLI against it
(``$CODEX_BIN`` or the pinned copy in ``.codex-cli``; the fake CLI, said so, when
neither exists), sends two messages on one Codex thread — the first makes the
agent run a shell command and write a file — and prints every event as it arrives.

    ./run demo            # or: .venv/bin/python examples/demo.py [--fake]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, ShimClient, open_shim
from trio_codex_shim.testing.fake_codex import Emit as FakeEmit
from trio_codex_shim.testing.fake_codex import (
    Scenario,
    Usage,
    answer_turn,
    command_execution_event,
    write_fake_codex_launcher,
)
from trio_codex_shim.testing.mock_model import Reply, codex_settings, open_mock_model

REPO = Path(__file__).resolve().parent.parent
PINNED = REPO / ".codex-cli" / "node_modules" / ".bin" / "codex"
LIMIT = 120.0


def find_codex() -> Path | None:
    """The real Codex CLI, if installed."""
    env = os.environ.get("CODEX_BIN")
    if env and Path(env).exists():
        return Path(env)
    return PINNED if PINNED.exists() else None


def fake_codex(tmp: Path) -> Path:
    """A fake CLI scripted to tell the same story as the mock model does."""
    thread = "019a0000-0000-7000-8000-00000000demo"
    scenario = Scenario(
        turns=[
            answer_turn(
                "I ran the tests and wrote NOTES.md.",
                thread_id=thread,
                steps=[
                    FakeEmit(command_execution_event("echo tests pass > NOTES.md", output="")),
                ],
                usage=Usage(input_tokens=1200, output_tokens=40),
            ),
            answer_turn(
                "NOTES.md says: the tests pass.",
                thread_id=thread,
                usage=Usage(input_tokens=900, output_tokens=25),
            ),
        ]
    ).write(tmp / "scenario.json")
    return write_fake_codex_launcher(tmp / "bin" / "codex", scenario)


def describe(event: p.AnyEvent) -> str:
    """One readable line per event, with the wire JSON."""
    return f"  <- {type(event).__name__:<16} {p.encode(event).decode()}"


async def converse(shim: ShimClient) -> None:
    """Send each message, printing every event until the message's terminal one."""
    events = shim.events()
    messages = [
        ("Run `echo tests pass` and write its output to NOTES.md.", "m-1"),
        ("What does NOTES.md say?", "m-2"),
    ]
    for body, mid in messages:
        print(f"\n-> SendMessage {mid}: {body}", flush=True)
        await shim.send(body, sender="demo-orchestrator", message_id=mid)
        async for event in events:
            print(describe(event), flush=True)
            if (isinstance(event, p.Completion) and event.message_id == mid) or (
                isinstance(event, p.DeliveryFailed) and event.id == mid
            ):
                break
    state = await shim.get_state()
    print(f"\n-> GetState: {state.state} for {state.since_secs}s", flush=True)


async def main(force_fake: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="trio-codex-shim-demo-") as tmpdir:
        tmp = Path(tmpdir)
        workspace = tmp / "workspace"
        workspace.mkdir()
        codex = None if force_fake else find_codex()
        async with open_mock_model() as mock:
            if codex is None:
                why = "--fake given" if force_fake else "the real Codex CLI is not installed"
                print(f"{why}: using the fake Codex CLI instead.")
                program = fake_codex(tmp)
                env = None
                extra: list[str] = []
            else:
                print(f"Real Codex CLI: {codex}; mock model server: {mock.base_url}")
                mock.script(
                    Reply.shell("echo tests pass > NOTES.md && cat NOTES.md"),
                    Reply.text("I wrote NOTES.md.").with_usage(1200, 40),
                    Reply.text("NOTES.md says: tests pass.").with_usage(2100, 65),
                )
                program = codex
                settings = codex_settings(mock.base_url, tmp / "codex-home")
                (tmp / "codex-home").mkdir()
                env = settings.environ()
                extra = ["--codex-arg=--skip-git-repo-check", *settings.shim_args()]
            options = ClientOptions(
                args=(
                    "--codex",
                    str(program),
                    "--cwd",
                    str(workspace),
                    "--id",
                    "demo",
                    "--stats-interval",
                    "1",
                    *extra,
                ),
                env=env,
                log_path=tmp / "shim.log",
            )
            with trio.fail_after(LIMIT):
                async with open_shim(options) as shim:
                    print(f"Shim started (pid {shim.pid}) and said Ready.")
                    await converse(shim)
            notes = workspace / "NOTES.md"
            if notes.exists():
                print(f"\nThe agent's file, {notes.name}: {notes.read_text().strip()!r}")
            print(f"Model requests served by the mock: {len(mock.responses_requests)}")
        print("\nShim log (last lines):")
        for line in (tmp / "shim.log").read_text().splitlines()[-6:]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fake", action="store_true", help="use the fake CLI even if Codex is here"
    )
    sys.exit(trio.run(main, parser.parse_args().fake))
