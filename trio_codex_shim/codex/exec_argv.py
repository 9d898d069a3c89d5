"""The ``codex exec --json`` command line for one turn."""

from __future__ import annotations

from ..options import Sandbox, ShimOptions
from .thread_id import is_valid_thread_id


def sandbox_args(sandbox: Sandbox) -> list[str]:
    """Codex's flags for ``sandbox`` (``bypass`` is batty's default)."""
    if sandbox is Sandbox.BYPASS:
        return ["--dangerously-bypass-approvals-and-sandbox"]
    return ["--sandbox", sandbox.value]


def config_args(options: ShimOptions) -> list[str]:
    """``-c KEY=VALUE`` pairs: reasoning effort, then every ``--codex-config``."""
    args: list[str] = []
    if options.reasoning_effort:
        args += ["-c", f'model_reasoning_effort="{options.reasoning_effort}"']
    for setting in options.codex_config:
        args += ["-c", setting]
    return args


def exec_argv(options: ShimOptions, program: str, thread_id: str | None) -> list[str]:
    """``PROGRAM exec --json [-m M] [-c ...] <sandbox> <codex args> [resume ID] -``.

    The prompt always goes on stdin (the final ``-``), never on argv.  A
    thread id that does not look like one is refused here, so nothing Codex
    printed can become an option.
    """
    argv = [program, "exec", "--json"]
    if options.model:
        argv += ["-m", options.model]
    argv += config_args(options)
    argv += sandbox_args(options.sandbox)
    argv += options.codex_args
    if thread_id is not None:
        if not is_valid_thread_id(thread_id):
            raise ValueError(f"refusing to resume a malformed thread id {thread_id!r}")
        argv += ["resume", thread_id]
    argv.append("-")
    return argv
