"""The environment Codex inherits: the shim's, minus what operators withhold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

ALWAYS_DROPPED: Final = frozenset({"CLAUDECODE"})
"""Never passed on: it would make Codex's tools believe they run inside Claude Code."""


def codex_environment(
    base: Mapping[str, str],
    *,
    drop: tuple[str, ...] = (),
    allow: tuple[str, ...] | None = None,
) -> dict[str, str]:
    """``base`` filtered: only ``allow`` names when given, never ``drop`` names."""
    dropped = ALWAYS_DROPPED.union(drop)
    allowed = None if allow is None else frozenset(allow)
    return {
        name: value
        for name, value in base.items()
        if name not in dropped and (allowed is None or name in allowed)
    }
