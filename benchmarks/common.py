"""What every figure shares: the result row, progress lines, statistics, shim set-up."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec
import trio

from trio_codex_shim.client import ClientOptions

REPO: Final = Path(__file__).resolve().parent.parent
PINNED_CODEX: Final = REPO / ".codex-cli" / "node_modules" / ".bin" / "codex"
_T0: Final = time.monotonic()


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the table."""

    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    met: bool | None
    """``None``: not measured (say why in ``note``)."""
    note: str = ""


def progress(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def codex_program() -> Path:
    """The real Codex CLI: ``$CODEX_BIN`` or the pinned one in ``.codex-cli``."""
    return Path(os.environ.get("CODEX_BIN") or PINNED_CODEX)


def shim_options(
    codex: Path,
    workspace: Path,
    *args: str,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> ClientOptions:
    """A shim on ``codex`` in ``workspace`` with production defaults (log level info)."""
    return ClientOptions(
        args=("--codex", os.fspath(codex), "--cwd", os.fspath(workspace), *args),
        env=env,
        log_path=log_path,
        ready_timeout_secs=30.0,
    )


async def spawn_on_socketpair(
    argv: list[str], *, env: dict[str, str] | None = None, stderr: int | None = None
) -> tuple[trio.Process, trio.SocketStream]:
    """Start ``argv`` with one end of a fresh socketpair; ``{fd}`` in it is that end's number.

    Returns the process and a stream on our end.  The child's stdin and
    stdout are ``/dev/null``; its stderr is ``stderr`` (default: ours).
    """
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = child.fileno()
    try:
        process = await trio.lowlevel.open_process(
            [arg.replace("{fd}", str(fd)) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            pass_fds=(fd,),
            start_new_session=True,
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return process, trio.SocketStream(trio.socket.from_stdlib_socket(parent))


async def stop_process(process: trio.Process, stream: trio.abc.Stream | None = None) -> None:
    """Close ``stream`` (a shim takes that as Shutdown), then make sure ``process`` is gone."""
    with trio.CancelScope(shield=True):
        if stream is not None:
            await stream.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def shim_argv(*args: str) -> list[str]:
    """The shim's own command line on socketpair fd ``{fd}``."""
    return [sys.executable, "-m", "trio_codex_shim", "--fd", "{fd}", *args]
