"""The ``trio-codex-shim`` command line.

Also accepts batty's own invocation (``shim --id X --agent-type codex --cmd …
--sdk-mode --pty-log-path P …``) so batty's daemon can launch this shim
unchanged.  Exit codes: 0 after Shutdown, Kill or the orchestrator closing
the stream; 2 for bad usage; 3 when the stream broke or could not be opened;
128+N after signal N.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from .codex.backend import Backend
from .codex.exec_backend import ExecBackend
from .codex.launcher import ResolvedCodex, resolve_codex
from .core.machine import EXIT_TRANSPORT
from .options import BackendKind, OnBusy, Sandbox, ShimOptions
from .service import serve
from .transcript import Transcript
from .transport import (
    InheritedSocket,
    Stdio,
    Transport,
    TransportError,
    UnixSocketPath,
    open_transport,
)

log = logging.getLogger("trio_codex_shim")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value


def _nonneg(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _depth(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-codex-shim",
        description="Run the Codex CLI as a message-driven agent behind batty's shim protocol.",
    )
    where = parser.add_argument_group("connection (pick one; default --fd 3)")
    ex = where.add_mutually_exclusive_group()
    ex.add_argument("--fd", type=int, metavar="N", help="inherited connected socket (default 3)")
    ex.add_argument("--socket", metavar="PATH", help="connect to a Unix stream socket")
    ex.add_argument("--stdio", action="store_true", help="frames on stdin/stdout, logs on stderr")

    agent = parser.add_argument_group("agent")
    agent.add_argument(
        "--id", dest="shim_id", default="codex", help="shim id, prefixes every log line"
    )
    agent.add_argument("--cwd", type=Path, default=Path("."), help="Codex's working directory")
    agent.add_argument("--codex", metavar="PROGRAM", help="the Codex CLI (default: codex)")
    agent.add_argument(
        "--no-native-codex",
        dest="native_codex",
        action="store_false",
        help="run --codex as given even when it is the npm package's Node launcher",
    )
    agent.add_argument("--model", default="gpt-5.5")
    agent.add_argument("--reasoning-effort", default="high", help="'' to leave Codex's default")
    agent.add_argument(
        "--sandbox",
        type=Sandbox,
        choices=list(Sandbox),
        default=Sandbox.BYPASS,
        help="bypass (default) runs Codex without approvals or sandbox: only for "
        "workspaces sandboxed from outside",
    )
    agent.add_argument(
        "--codex-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for Codex (repeatable)",
    )
    agent.add_argument(
        "--codex-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to Codex as -c KEY=VALUE (repeatable)",
    )
    agent.add_argument(
        "--backend",
        type=BackendKind,
        choices=list(BackendKind),
        default=BackendKind.EXEC,
        help="exec (default): one `codex exec` per message; app-server: one persistent "
        "`codex app-server` for the shim's life",
    )
    agent.add_argument(
        "--on-busy",
        type=OnBusy,
        choices=list(OnBusy),
        default=OnBusy.QUEUE,
        help="a message arriving during a turn: queue (default) it, or steer it into the "
        "running turn (needs --backend app-server)",
    )
    agent.add_argument(
        "--env-drop",
        action="append",
        default=[],
        metavar="NAME",
        help="do not pass this variable to Codex (repeatable)",
    )
    agent.add_argument(
        "--env-allow",
        action="append",
        default=None,
        metavar="NAME",
        help="pass only the named variables to Codex (repeatable)",
    )

    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument("--queue-depth", type=_depth, default=16)
    behaviour.add_argument("--stats-interval", type=_positive, default=10.0, metavar="SECS")
    behaviour.add_argument("--context-limit-tokens", type=int, metavar="N")
    behaviour.add_argument("--context-warn-pct", type=int, default=80, metavar="PCT")
    behaviour.add_argument(
        "--preserve-work", action="store_true", help="commit a dirty work tree before stopping"
    )
    behaviour.add_argument("--transcript", type=Path, metavar="PATH")
    behaviour.add_argument("--transcript-max-bytes", type=int, default=10 * 1024 * 1024)
    behaviour.add_argument("--stall-warn", type=_positive, metavar="SECS")
    behaviour.add_argument("--turn-timeout", type=_positive, metavar="SECS")
    behaviour.add_argument("--send-timeout", type=_positive, default=30.0, metavar="SECS")
    behaviour.add_argument(
        "--stop-grace",
        type=_nonneg,
        default=2.0,
        metavar="SECS",
        help="between TERM and KILL when stopping a turn",
    )
    behaviour.add_argument(
        "--eof-grace",
        type=_nonneg,
        default=5.0,
        metavar="SECS",
        help="how long a turn may finish after the orchestrator leaves",
    )
    behaviour.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )

    batty = parser.add_argument_group("batty compatibility")
    batty.add_argument("--agent-type", help="must be codex")
    batty.add_argument("--cmd", help="agent command; its first word is the Codex program")
    batty.add_argument("--sdk-mode", action="store_true", help="accepted, always on")
    batty.add_argument("--pty-log-path", type=Path, help="same as --transcript")
    batty.add_argument(
        "--graceful-shutdown-timeout-secs", type=_nonneg, metavar="N", help="same as --eof-grace"
    )
    batty.add_argument(
        "--auto-commit-on-restart", type=_bool, metavar="BOOL", help="same as --preserve-work"
    )
    batty.add_argument("--rows", type=int, help="ignored (no terminal)")
    batty.add_argument("--cols", type=int, help="ignored (no terminal)")
    return parser


def parse(argv: Sequence[str]) -> tuple[ShimOptions, Transport, str]:
    """Options, transport and log level from a command line (batty's form too)."""
    args = list(argv)
    if args and args[0] == "shim":
        args = args[1:]
    parser = build_parser()
    ns = parser.parse_args(args)
    if ns.agent_type is not None and ns.agent_type != "codex":
        parser.error(f"--agent-type {ns.agent_type}: this shim only runs codex")
    if ns.on_busy is OnBusy.STEER and ns.backend is not BackendKind.APP_SERVER:
        parser.error("--on-busy steer needs --backend app-server (codex exec cannot steer)")
    program = ns.codex
    if program is None and ns.cmd:
        words = shlex.split(ns.cmd)
        program = words[0] if words else None
    transport: Transport
    if ns.socket:
        transport = UnixSocketPath(ns.socket)
    elif ns.stdio:
        transport = Stdio()
    else:
        transport = InheritedSocket(3 if ns.fd is None else ns.fd)
    options = ShimOptions(
        shim_id=ns.shim_id,
        cwd=ns.cwd.resolve(),
        codex=program or "codex",
        native_codex=ns.native_codex,
        model=ns.model,
        reasoning_effort=ns.reasoning_effort or None,
        sandbox=ns.sandbox,
        backend=ns.backend,
        on_busy=ns.on_busy,
        codex_args=tuple(ns.codex_arg),
        codex_config=tuple(ns.codex_config),
        queue_depth=ns.queue_depth,
        stats_interval_secs=ns.stats_interval,
        context_limit_tokens=ns.context_limit_tokens,
        context_warn_pct=ns.context_warn_pct,
        preserve_work=ns.preserve_work or bool(ns.auto_commit_on_restart),
        transcript=ns.transcript or ns.pty_log_path,
        transcript_max_bytes=ns.transcript_max_bytes,
        stall_warn_secs=ns.stall_warn,
        turn_timeout_secs=ns.turn_timeout,
        send_timeout_secs=ns.send_timeout,
        stop_grace_secs=ns.stop_grace,
        eof_grace_secs=(
            ns.eof_grace
            if ns.graceful_shutdown_timeout_secs is None
            else ns.graceful_shutdown_timeout_secs
        ),
        env_drop=tuple(ns.env_drop),
        env_allow=None if ns.env_allow is None else tuple(ns.env_allow),
    )
    return options, transport, ns.log_level


async def run(options: ShimOptions, transport: Transport) -> int:
    """Open the transport and serve on it; the process exit code."""
    transcript = (
        Transcript(options.transcript, options.transcript_max_bytes) if options.transcript else None
    )
    codex = resolve_codex(options.codex) if options.native_codex else ResolvedCodex(options.codex)
    if codex.native:
        log.info("running the native Codex binary %s behind %s", codex.program, options.codex)
    backend: Backend
    if options.backend is BackendKind.APP_SERVER:
        # Imported here: the exec backend's start-up need not pay for it.
        from .codex.app_server_backend import AppServerBackend

        backend = AppServerBackend(options, codex, transcript)
    else:
        backend = ExecBackend(options, codex, transcript)
    try:
        async with open_transport(transport) as stream:
            return await serve(stream, options, backend, handle_signals=True)
    except TransportError as exc:
        log.error("%s", exc)
        return EXIT_TRANSPORT
    finally:
        if transcript is not None:
            transcript.close()


def configure_logging(shim_id: str, level: str) -> None:
    """Logs on stderr, every line prefixed with the shim id for operators."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"[shim-codex {shim_id}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``trio-codex-shim`` (``trio-codex-shim schema`` prints the JSON Schema)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["schema"]:
        from .schema import main as schema_main

        sys.exit(schema_main(args[1:]))
    options, transport, level = parse(args)
    configure_logging(options.shim_id, level)
    sys.exit(trio.run(run, options, transport))
