"""Start a Codex process, the one way both backends do it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from typing import Final

import trio

from ..options import ShimOptions
from .environment import codex_environment
from .launcher import ResolvedCodex, apply_env


def codex_env(options: ShimOptions, codex: ResolvedCodex) -> dict[str, str]:
    """The shim's environment as Codex gets it: filtered, plus what the launcher sets."""
    return apply_env(
        codex_environment(os.environ, drop=options.env_drop, allow=options.env_allow), codex
    )


async def open_codex(argv: list[str], options: ShimOptions, env: dict[str, str]) -> trio.Process:
    """Codex with piped stdin/stdout/stderr, in ``options.cwd``, in a session of its own.

    The caller owns the process: it must register it with
    :func:`~..process_tree.owned` and stop and reap it (the shim, a subreaper,
    stops the whole tree).  Raises ``OSError`` when it cannot be started.
    """
    return await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=options.cwd,
        env=env,
        start_new_session=True,
    )


PIPE_BYTES: Final = 64 * 1024
"""A Linux pipe's capacity unless widened: what the backends read at a time."""
MAX_READ: Final = 128 * 1024 - 64
"""The largest read whose buffer glibc takes from its heap: from 128 KiB up
(its mmap threshold, less room for the bytes header) it maps a fresh buffer
for every read. Measured: a read asking for 128 KiB took 33 us to return 500
bytes, one asking 64 bytes less 1.4 us."""


def widen_pipe(fd: int, size: int) -> int:
    """Ask for a pipe of ``size`` bytes behind ``fd``; the capacity it now has.

    Best effort: past the per-user limit on pipe memory the kernel refuses
    and the pipe keeps its size; a non-pipe (or a system without the call)
    reports the default.
    """
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    getter = getattr(fcntl, "F_GETPIPE_SZ", None)
    if setter is None or getter is None:
        return PIPE_BYTES
    with contextlib.suppress(OSError):  # over the per-user pipe limit: keep the size
        fcntl.fcntl(fd, setter, size)
    try:
        return int(fcntl.fcntl(fd, getter))
    except OSError:
        return PIPE_BYTES
