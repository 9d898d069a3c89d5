"""Own every process the shim starts, including the ones that try to escape.

Codex starts the agent's commands in sessions of their own, so killing Codex
or its process group leaves them running.  The shim therefore makes itself a
*child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): every orphan among its
descendants is re-parented to the shim instead of to init, so the shim can
always find them in ``/proc`` and stop them, and must reap them.

Reaping never uses ``waitpid(-1)``: that would steal the exit status of a
Codex process a ``trio.Process`` is waiting on.  Pids with an owner are
registered in :data:`OWNED`; the reaper takes only the others.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import trio

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER: Final = 36
_POLL_SECS: Final = 0.02

OWNED: Final[set[int]] = set()
"""Pids whose exit status belongs to a ``trio.Process`` (never reaped here)."""


def enable_subreaper() -> bool:
    """Make this process a child subreaper; ``False`` where the OS refuses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok: int = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return ok == 0


@contextmanager
def owned(pid: int) -> Iterator[None]:
    """Keep the reaper's hands off ``pid`` while its owner may still wait on it."""
    OWNED.add(pid)
    try:
        yield
    finally:
        OWNED.discard(pid)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), from ``/proc``."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        kids.extend(int(x) for x in text.split())
    return kids


def descendants(root: int | None = None) -> list[int]:
    """Every live descendant of ``root`` (default: this process), parents first."""
    found: list[int] = []
    frontier = [os.getpid() if root is None else root]
    seen: set[int] = set()
    while frontier:
        pid = frontier.pop()
        for kid in children(pid):
            if kid not in seen:
                seen.add(kid)
                found.append(kid)
                frontier.append(kid)
    return found


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")


def reap_orphans() -> int:
    """Reap every exited child this process has no owner for; how many were reaped."""
    reaped = 0
    for pid in children(os.getpid()):
        if pid in OWNED:
            continue
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:
            reaped += 1
    return reaped


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                log.warning("could not send %s to pid %d: %s", sig.name, pid, exc)


async def terminate_descendants(
    grace_secs: float, *, kill_rounds: int = 20, exclude: Collection[int] = ()
) -> list[int]:
    """Stop every descendant: TERM, up to ``grace_secs`` to exit, then KILL; reap.

    Returns the pids that were signalled.  New processes forked while this
    runs are caught by the repeated KILL rounds.  Bounded: at most
    ``grace_secs`` plus ``kill_rounds`` short polls.  Pids in ``exclude`` are
    never signalled (their descendants still are): a persistent Codex server
    survives the stop of the turn it ran.
    """
    spared = frozenset(exclude)

    def targets_now() -> list[int]:
        return [pid for pid in descendants() if pid not in spared]

    targets = targets_now()
    if not targets:
        return []
    log.info("stopping %d process(es): %s", len(targets), targets)
    _signal_all(targets, signal.SIGTERM)
    with trio.move_on_after(grace_secs):
        while any(is_alive(pid) for pid in targets_now()):
            reap_orphans()
            await trio.sleep(_POLL_SECS)
    signalled = list(targets)
    for _ in range(kill_rounds):
        alive = [pid for pid in targets_now() if is_alive(pid)]
        if not alive:
            break
        signalled.extend(pid for pid in alive if pid not in signalled)
        _signal_all(alive, signal.SIGKILL)
        await trio.sleep(_POLL_SECS)
        reap_orphans()
    reap_orphans()
    return signalled


async def reap_forever(fallback_secs: float = 30.0) -> None:
    """Reap exited orphans as they exit, until cancelled.

    Woken by SIGCHLD, so an idle shim costs nothing; ``fallback_secs`` bounds
    the wait should a signal be missed.  Outside the main thread, where Trio
    cannot receive signals, it polls every second instead.
    """
    if threading.current_thread() is not threading.main_thread():
        while True:
            reap_orphans()
            await trio.sleep(1.0)
    with trio.open_signal_receiver(signal.SIGCHLD) as signals:
        while True:
            reap_orphans()
            with trio.move_on_after(fallback_secs):
                await signals.__anext__()
