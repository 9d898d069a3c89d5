"""The process tree: subreaper, finding escaped descendants, stopping and reaping."""

from __future__ import annotations

import os
import subprocess
import sys

import trio
from shim_helpers import until

from trio_codex_shim import process_tree

# A child that starts a grandchild in a session of its own (as Codex does for the
# agent's commands), prints the grandchild's pid, and exits: the grandchild escapes.
ESCAPE = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(['sleep', '300'], start_new_session=True, stdout=subprocess.DEVNULL)\n"
    "print(p.pid, flush=True)\n"
)


async def _start_escapee() -> int:
    result = await trio.run_process([sys.executable, "-c", ESCAPE], capture_stdout=True, check=True)
    return int(result.stdout)


async def test_escaped_grandchild_is_reparented_to_us_and_stopped() -> None:
    assert process_tree.enable_subreaper()
    with trio.fail_after(20):
        pid = await _start_escapee()
        assert process_tree.is_alive(pid)
        assert pid in process_tree.children(os.getpid())
        stopped = await process_tree.terminate_descendants(1.0)
    assert pid in stopped
    assert not process_tree.is_alive(pid)
    assert not _exists(pid)  # reaped, not a zombie


async def test_term_ignoring_process_is_killed_after_the_grace() -> None:
    assert process_tree.enable_subreaper()
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(300)\n"
    )
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        said = b""
        while not said.endswith(b"\n"):
            said += await proc.stdout.receive_some()
        assert said == b"ready\n"  # TERM is ignored from here on
        with process_tree.owned(proc.pid):
            await process_tree.terminate_descendants(0.2)
            assert not process_tree.is_alive(proc.pid)
            assert await proc.wait() == -9


async def test_reaper_leaves_owned_pids_to_their_owner() -> None:
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process([sys.executable, "-c", "raise SystemExit(7)"])
        with process_tree.owned(proc.pid):
            await until(lambda: not process_tree.is_alive(proc.pid))
            process_tree.reap_orphans()
            assert await proc.wait() == 7  # the exit status was not stolen


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_descendants_of_a_missing_pid_is_empty() -> None:
    assert process_tree.descendants(2**22 + 12345) == []
    assert not process_tree.is_alive(2**22 + 12345)


async def test_the_reaper_reaps_orphans_as_they_exit() -> None:
    assert process_tree.enable_subreaper()
    short_lived = ESCAPE.replace("'300'", "'0.2'")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            # A fallback far beyond the test's bound: only SIGCHLD can wake it in time.
            nursery.start_soon(process_tree.reap_forever, 3600.0)
            result = await trio.run_process(
                [sys.executable, "-c", short_lived], capture_stdout=True, check=True
            )
            pid = int(result.stdout)
            await until(lambda: not _exists(pid))  # exited and reaped: not even a zombie
            nursery.cancel_scope.cancel()
