"""Save uncommitted work before the agent is stopped (``--preserve-work``)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Final

import trio

log = logging.getLogger(__name__)

COMMIT_MESSAGE: Final = "wip: auto-save before restart"
_IDENTITY: Final = {
    "GIT_AUTHOR_NAME": "trio-codex-shim",
    "GIT_AUTHOR_EMAIL": "trio-codex-shim@localhost",
    "GIT_COMMITTER_NAME": "trio-codex-shim",
    "GIT_COMMITTER_EMAIL": "trio-codex-shim@localhost",
}


async def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**_IDENTITY, **os.environ}
    return await trio.run_process(
        ["git", *args], cwd=cwd, env=env, capture_stdout=True, capture_stderr=True, check=False
    )


async def preserve_work(cwd: Path, timeout_secs: float) -> bool:
    """Commit a dirty working tree as ``wip: auto-save before restart``.

    Returns whether a commit was made.  Bounded by ``timeout_secs``; a
    directory that is not a git work tree, or any git failure, is logged and
    leaves the tree untouched.
    """
    with trio.move_on_after(timeout_secs):
        try:
            status = await _git(cwd, "status", "--porcelain")
            if status.returncode != 0:
                log.info("preserve-work: %s is not a git work tree, nothing saved", cwd)
                return False
            if not status.stdout.strip():
                log.info("preserve-work: working tree clean, nothing to save")
                return False
            for args in (("add", "-A"), ("commit", "-q", "--no-verify", "-m", COMMIT_MESSAGE)):
                result = await _git(cwd, *args)
                if result.returncode != 0:
                    err = result.stderr.decode(errors="replace").strip()
                    log.warning("preserve-work: git %s failed: %s", args[0], err)
                    return False
        except OSError as exc:
            log.warning("preserve-work: could not run git: %s", exc)
            return False
        log.info("preserve-work: committed uncommitted work in %s", cwd)
        return True
    log.warning("preserve-work: gave up after %gs", timeout_secs)
    return False
