"""Every setting of a shim, in one Struct the CLI fills and the drivers read."""

from __future__ import annotations

import enum
from pathlib import Path

import msgspec


class Sandbox(enum.StrEnum):
    """How Codex may touch the machine (``--sandbox``)."""

    BYPASS = "bypass"
    READ_ONLY = "read-only"
    WORKSPACE_WRITE = "workspace-write"
    DANGER_FULL_ACCESS = "danger-full-access"


class BackendKind(enum.StrEnum):
    """How Codex runs (``--backend``): a process per turn, or one persistent server."""

    EXEC = "exec"
    APP_SERVER = "app-server"


class OnBusy(enum.StrEnum):
    """What a message arriving during a turn does (``--on-busy``)."""

    QUEUE = "queue"
    STEER = "steer"
    """Added to the running turn (``turn/steer``); app-server backend only."""


class ShimOptions(msgspec.Struct, frozen=True, kw_only=True):
    """A shim's configuration; defaults match batty's Codex shim."""

    shim_id: str = "codex"
    cwd: Path = Path(".")
    codex: str = "codex"
    native_codex: bool = True
    model: str = "gpt-5.5"
    reasoning_effort: str | None = "high"
    sandbox: Sandbox = Sandbox.BYPASS
    backend: BackendKind = BackendKind.EXEC
    on_busy: OnBusy = OnBusy.QUEUE
    codex_args: tuple[str, ...] = ()
    codex_config: tuple[str, ...] = ()
    queue_depth: int = 16
    stats_interval_secs: float = 10.0
    context_limit_tokens: int | None = None
    context_warn_pct: int = 80
    preserve_work: bool = False
    preserve_work_timeout_secs: float = 30.0
    transcript: Path | None = None
    transcript_max_bytes: int = 10 * 1024 * 1024
    stall_warn_secs: float | None = None
    turn_timeout_secs: float | None = None
    send_timeout_secs: float = 30.0
    stop_grace_secs: float = 2.0
    eof_grace_secs: float = 5.0
    max_line_bytes: int = 16 * 1024 * 1024
    stderr_tail_bytes: int = 8192
    env_drop: tuple[str, ...] = ()
    env_allow: tuple[str, ...] | None = None
