"""Shared fixtures: where the real Codex CLI is, and process hygiene checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trio_codex_shim.testing.hypothesis_profiles import load_profile

load_profile()  # TRIO_CODEX_SHIM_FUZZ_PROFILE: "ci" (default) or "long" (nox -s fuzz)

REPO = Path(__file__).resolve().parent.parent
PINNED_CODEX = REPO / ".codex-cli" / "node_modules" / ".bin" / "codex"


def find_codex() -> Path | None:
    """The real Codex CLI: ``$CODEX_BIN``, else the pinned copy in ``.codex-cli``."""
    env = os.environ.get("CODEX_BIN")
    if env:
        return Path(env)
    return PINNED_CODEX if PINNED_CODEX.exists() else None


@pytest.fixture
def codex_bin() -> Path:
    """The real CLI; skipped where absent, a failure under CI (``CI=true``)."""
    found = find_codex()
    if found is None:
        reason = "the pinned Codex CLI is not installed: run `./run install_codex` or set CODEX_BIN"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (required under CI)")
        pytest.skip(reason)
    return found
