"""The ``exec`` backend: one ``codex exec --json`` process per turn (batty's way)."""

from __future__ import annotations

import logging
from typing import Final

import trio

from .. import process_tree
from ..core.actions import StartTurn
from ..options import ShimOptions
from ..transcript import Transcript
from .events import AgentMessage, EventSink, OutputProduced, TurnOutcome
from .exec_argv import exec_argv
from .exec_jsonl import ExecTranslator
from .launcher import ResolvedCodex
from .lines import LineSplitter
from .spawn import MAX_READ, PIPE_BYTES, codex_env, open_codex, widen_pipe
from .stderr_tail import Tail

log = logging.getLogger(__name__)

_STDOUT_PIPE: Final = 128 * 1024
"""Codex's stdout pipe is widened to this and read ~that much at a time: a
busy turn's JSONL relays with ~15% less CPU a line than through a 64 KiB pipe
(median of eleven side-by-side runs, 0-26%; each read costs Trio ~20 us).
Only the reads count: a 128 KiB pipe read 64 KiB at a time gained nothing;
256 KiB reads from a 1 MiB pipe were slower."""
_DRAIN_SECS: Final = 1.0
"""After Codex exits, how long its pipes may stay open (held by its children)."""


class ExecBackend:
    """Runs each turn as ``codex exec --json [resume ID] -`` in ``options.cwd``."""

    def __init__(
        self, options: ShimOptions, codex: ResolvedCodex, transcript: Transcript | None = None
    ) -> None:
        self._options = options
        self._program = codex.program
        self._transcript = transcript
        self._env = codex_env(options, codex)

    async def run(self) -> None:
        """Nothing lives between turns: every turn starts its own process."""

    async def run_turn(
        self, turn: StartTurn, sink: EventSink, stop: trio.CancelScope
    ) -> TurnOutcome:
        """See :meth:`Backend.run_turn`."""
        opts = self._options
        argv = exec_argv(opts, self._program, turn.thread_id)
        log.debug("turn %d: %s", turn.turn_id, argv)
        try:
            proc = await open_codex(argv, opts, self._env)
        except OSError as exc:
            return TurnOutcome(spawn_error=f"{argv[0]}: {exc.strerror or exc}")
        log.info("turn %d: codex exec started (pid %d)", turn.turn_id, proc.pid)
        translator = ExecTranslator(resuming=turn.thread_id)
        stderr = Tail(opts.stderr_tail_bytes)
        with process_tree.owned(proc.pid):
            try:
                with stop:
                    await self._pump(proc, turn.prompt, translator, stderr, sink)
            finally:
                if stop.cancelled_caught or proc.returncode is None:
                    with trio.CancelScope(shield=True):
                        await process_tree.terminate_descendants(opts.stop_grace_secs)
                        with trio.move_on_after(opts.stop_grace_secs + 5):
                            await proc.wait()
        code = proc.returncode
        log.info("turn %d: codex exec exited (code %s)", turn.turn_id, code)
        if stop.cancelled_caught:
            return TurnOutcome(stopped=True, exit_code=code, stderr_tail=stderr.text())
        for event in translator.finish(code, stderr.text()):
            sink(event)
        return TurnOutcome(
            exit_code=code, stderr_tail=stderr.text(), completed=translator.completed
        )

    async def _pump(
        self,
        proc: trio.Process,
        prompt: str,
        translator: ExecTranslator,
        stderr: Tail,
        sink: EventSink,
    ) -> None:
        """Feed the prompt, relay stdout and stderr, and wait for Codex to exit."""
        stdout_done = trio.Event()
        stderr_done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_prompt, proc, prompt)
            nursery.start_soon(self._relay_stdout, proc, translator, sink, stdout_done)
            nursery.start_soon(self._relay_stderr, proc, stderr, sink, stderr_done)
            await proc.wait()
            with trio.move_on_after(_DRAIN_SECS):
                await stdout_done.wait()
                await stderr_done.wait()
            nursery.cancel_scope.cancel()

    async def _relay_stdout(
        self,
        proc: trio.Process,
        translator: ExecTranslator,
        sink: EventSink,
        done: trio.Event,
    ) -> None:
        assert proc.stdout is not None
        splitter = LineSplitter(self._options.max_line_bytes)
        transcript = self._transcript
        read_size = PIPE_BYTES
        if isinstance(proc.stdout, trio.lowlevel.FdStream):
            read_size = min(widen_pipe(proc.stdout.fileno(), _STDOUT_PIPE), MAX_READ)
        async with proc.stdout:
            while chunk := await proc.stdout.receive_some(read_size):
                sink(OutputProduced(len(chunk)))
                block = splitter.feed_block(bytes(chunk))
                if block is None:
                    continue
                for event in translator.feed_block(block):
                    sink(event)
                    if transcript is not None and isinstance(event, AgentMessage):
                        transcript.write(event.text)
        if splitter.skipped:
            log.warning("skipped %d codex stdout line(s) over the line cap", splitter.skipped)
        done.set()

    async def _relay_stderr(
        self, proc: trio.Process, tail: Tail, sink: EventSink, done: trio.Event
    ) -> None:
        assert proc.stderr is not None
        transcript = self._transcript
        async with proc.stderr:
            while chunk := await proc.stderr.receive_some(PIPE_BYTES):
                sink(OutputProduced(len(chunk)))
                tail.feed(bytes(chunk))
                text = chunk.decode("utf-8", errors="replace").rstrip("\n")
                log.debug("codex stderr: %s", text[:2000])
                if transcript is not None:
                    transcript.write("[stderr] " + text.replace("\n", "\n[stderr] "))
        done.set()


async def _write_prompt(proc: trio.Process, prompt: str) -> None:
    """Write the prompt to Codex's stdin and close it (Codex reads to EOF)."""
    assert proc.stdin is not None
    async with proc.stdin:
        try:
            await proc.stdin.send_all(prompt.encode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("codex closed stdin before reading the whole prompt")
