"""Realistic ``codex exec --json`` lines, and the stand-in CLI that streams them.

The mix follows what Codex 0.169 prints during a busy turn (see
``docs/codex-cli-observed.md``): commands starting and completing with their
output, agent messages, reasoning summaries, to-do list updates and file
changes.  Deterministic (a fixed seed), so every run streams the same bytes.
"""

from __future__ import annotations

import os
import random
import stat
import sys
from pathlib import Path
from typing import Any, Final

import msgspec

STANDIN: Final = Path(__file__).resolve().parent / "codex_standin.py"

_PROSE: Final = (
    "the build test module import error fixed refactor function return value check "
    "file path config update parser token request response thread queue stream"
)
_WORDS: Final = tuple(_PROSE.split(" "))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _output(rng: random.Random, lines: int) -> str:
    rows = [f"{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.py:{rng.randint(1, 999)}: {_text(rng, 8)}"]
    rows += [_text(rng, rng.randint(3, 14)) for _ in range(lines - 1)]
    return "\n".join(rows) + "\n"


def _command(item: str, command: str, output: str, done: bool) -> dict[str, Any]:
    return {
        "type": "item.completed" if done else "item.started",
        "item": {
            "id": item,
            "type": "command_execution",
            "command": f"/bin/bash -lc {command!r}",
            "aggregated_output": output if done else "",
            "exit_code": 0 if done else None,
            "status": "completed" if done else "in_progress",
        },
    }


def realistic_lines(count: int, seed: int = 1) -> list[bytes]:
    """``count`` JSONL lines (no newlines) in the proportions of a busy turn."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    n = 0
    while len(lines) < count:
        item = f"item_{n}"
        n += 1
        kind = rng.random()
        events: list[dict[str, Any]]
        if kind < 0.45:  # a command: started, then completed with its output
            command = f"{rng.choice(['rg', 'sed -n', 'pytest -q', 'cat', 'ls'])} {_text(rng, 2)}"
            output = _output(rng, rng.choice([1, 2, 4, 8, 16, 40]))
            events = [_command(item, command, "", False), _command(item, command, output, True)]
        elif kind < 0.60:
            text = _text(rng, rng.randint(5, 80))
            events = [
                {
                    "type": "item.completed",
                    "item": {"id": item, "type": "agent_message", "text": text},
                }
            ]
        elif kind < 0.75:
            text = _text(rng, rng.randint(5, 40))
            events = [
                {"type": "item.completed", "item": {"id": item, "type": "reasoning", "text": text}}
            ]
        elif kind < 0.90:  # a to-do list, updated as steps complete
            steps = [{"text": _text(rng, 6), "completed": rng.random() < 0.5} for _ in range(5)]
            events = [
                {"type": "item.updated", "item": {"id": item, "type": "todo_list", "items": steps}}
            ]
        else:
            path = f"/work/src/{rng.choice(_WORDS)}.py"
            change = {
                "id": item,
                "type": "file_change",
                "changes": [{"path": path, "kind": "update"}],
            }
            events = [
                {"type": "item.started", "item": {**change, "status": "in_progress"}},
                {"type": "item.completed", "item": {**change, "status": "completed"}},
            ]
        lines.extend(msgspec.json.encode(event) for event in events)
    return lines[:count]


def stream_lines(block: list[bytes], repeat: int) -> list[bytes]:
    """The lines one stand-in run prints (``block``, ``repeat`` times), as distinct
    objects cut from one buffer, as the shim gets them (not 1000 lines kept cache-hot)."""
    return ((b"\n".join(block) + b"\n") * repeat).split(b"\n")[:-1]


class StandIn(msgspec.Struct, frozen=True):
    """A stand-in Codex program, and what one run of it prints."""

    program: Path
    spec: Path
    block: Path
    block_lines: int
    block_bytes: int

    def set_repeat(self, repeat: int) -> None:
        """Print the block ``repeat`` times in the runs from now on."""
        spec = {"block": os.fspath(self.block), "repeat": repeat}
        self.spec.write_bytes(msgspec.json.encode(spec))


def write_standin(directory: Path, block: list[bytes], repeat: int, name: str = "codex") -> StandIn:
    """A launcher in ``directory`` that streams ``block`` ``repeat`` times per run
    (and four lines of its own: thread and turn started, an answer, turn completed)."""
    directory.mkdir(parents=True, exist_ok=True)
    block_path = directory / f"{name}.block.jsonl"
    data = b"".join(line + b"\n" for line in block)
    block_path.write_bytes(data)
    spec = directory / f"{name}.spec.json"
    program = directory / name
    program.write_text(f'#!/bin/sh\nexec {sys.executable} -I {STANDIN} {spec} "$@"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    standin = StandIn(program, spec, block_path, len(block), len(data))
    standin.set_repeat(repeat)
    return standin
