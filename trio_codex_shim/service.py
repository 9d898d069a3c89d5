"""The Trio driver: one nursery that wires the core to the stream and to Codex.

Tasks, all in one nursery: the command receiver, the event writer, the stats
ticker, the executor (the single task that runs turns, one at a time, in the
order the core's drop-oldest queue hands them out), the orphan reaper, and
the signal watcher.  The core decides; these tasks only move data and carry
out its actions.  :func:`serve` returns only when every process it started
is gone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from typing import Final

import trio

from . import process_tree
from .codex.backend import Backend, SteerableBackend
from .codex.events import CodexEvent, OutputProduced, TurnOutcome
from .core.actions import Exit, StartTurn, SteerTurn, StopTurn
from .core.machine import EXIT_TRANSPORT, CoreConfig, Output, ShimCore
from .framing import FrameError, FrameReader
from .options import OnBusy, ShimOptions
from .outbox import Outbox, PeerStuck
from .preserve import preserve_work
from .protocol import BadMessage, Event, decode_command

log = logging.getLogger(__name__)

_EXIT_STOP_BOUND: Final = 10.0
"""Longest the final sweep of leftover processes may take."""


class TrioClock:
    """The core's clock: Trio's (so tests can use ``autojump_clock``) and the epoch."""

    def monotonic(self) -> float:
        return trio.current_time()

    def epoch(self) -> float:
        return time.time()


def core_config(options: ShimOptions) -> CoreConfig:
    """The part of the options the core's rules depend on."""
    return CoreConfig(
        queue_depth=options.queue_depth,
        model=options.model,
        context_limit_tokens=options.context_limit_tokens,
        context_warn_pct=options.context_warn_pct,
        preserve_work=options.preserve_work,
        turn_timeout_secs=options.turn_timeout_secs,
        stop_grace_secs=options.stop_grace_secs,
        on_busy="steer" if options.on_busy is OnBusy.STEER else "queue",
    )


class _Service:
    def __init__(self, stream: trio.abc.Stream, options: ShimOptions, backend: Backend) -> None:
        self.stream = stream
        self.options = options
        self.backend = backend
        self.core = ShimCore(core_config(options), TrioClock())
        self.outbox = Outbox()
        self.turn_send, self.turn_recv = trio.open_memory_channel[StartTurn](1)
        self.turn_scope: tuple[int, trio.CancelScope] | None = None
        self.pending_stops: dict[int, float] = {}
        self.turn_nursery: tuple[int, trio.Nursery] | None = None
        self.pending_steers: list[SteerTurn] = []
        self.exit: Exit | None = None
        self.exit_event = trio.Event()
        self.last_activity = 0.0
        self.trace = log.isEnabledFor(logging.DEBUG)
        """Log every command and event (``--log-level debug``); checked once, not per frame."""

    # -- carrying out the core's outputs ---------------------------------------

    def dispatch(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, Event):
                if self.trace:
                    log.debug("event: %r", out)
                self.outbox.put(out)
            elif isinstance(out, StartTurn):
                self.turn_send.send_nowait(out)
            elif isinstance(out, StopTurn):
                self._stop_turn(out)
            elif isinstance(out, SteerTurn):
                self._steer_turn(out)
            else:
                self.exit = out
                self.exit_event.set()

    def _stop_turn(self, stop: StopTurn) -> None:
        deadline = trio.current_time() + stop.grace_secs
        if self.turn_scope is not None and self.turn_scope[0] == stop.turn_id:
            scope = self.turn_scope[1]
            scope.deadline = min(scope.deadline, deadline)
        else:
            self.pending_stops[stop.turn_id] = deadline

    def _steer_turn(self, steer: SteerTurn) -> None:
        if self.turn_nursery is not None and self.turn_nursery[0] == steer.turn_id:
            self.turn_nursery[1].start_soon(self._run_steer, steer)
        else:  # the turn has not reached the executor yet
            self.pending_steers.append(steer)

    async def _run_steer(self, steer: SteerTurn) -> None:
        """Ask the backend to steer; the core hears the answer before the turn's end.

        Shielded so the turn's nursery waits for it; the backend bounds it.
        """
        backend = self.backend
        with trio.CancelScope(shield=True):
            if isinstance(backend, SteerableBackend):
                error = await backend.steer_turn(steer.turn_id, steer.prompt)
            else:
                error = "this backend cannot steer a running turn"
        self.dispatch(self.core.steered(steer.steer_id, error))

    # -- tasks ------------------------------------------------------------------

    async def receive_commands(self) -> None:
        reader = FrameReader(self.stream)
        grace = self.options.eof_grace_secs
        while not self.core.exited:
            try:
                payloads = await reader.receive_many()
            except FrameError as exc:
                log.error("closing the connection: %s", exc)
                self.dispatch(self.core.bad_message(BadMessage("unknown", str(exc))))
                self.dispatch(self.core.peer_lost(EXIT_TRANSPORT, grace))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.error("connection lost: %r", exc)
                self.dispatch(self.core.peer_lost(EXIT_TRANSPORT, grace))
                return
            if not payloads:
                log.info("orchestrator closed the stream")
                self.dispatch(self.core.peer_lost(0, grace))
                return
            outputs: list[Output] = []
            for payload in payloads:  # every frame one read brought, in order
                try:
                    command = decode_command(payload)
                except BadMessage as exc:
                    log.warning("bad message: %s", exc)
                    outputs += self.core.bad_message(exc)
                else:
                    if self.trace:
                        log.debug("command: %r", command)
                    outputs += self.core.command(command)
                if self.core.exited:
                    break
            self.dispatch(outputs)
            if self.core.exited:
                return
            # Once a read, not once a frame (an await per frame): the outbox can
            # pass its high water by the answers to one read's frames, at most
            # ~3,400 for a 64 KiB read of Pings.
            await self.outbox.wait_for_room()

    async def write_events(self) -> None:
        try:
            await self.outbox.write_forever(self.stream, self.options.send_timeout_secs)
        except (PeerStuck, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.error("cannot send events, treating the orchestrator as gone: %s", exc)
            self.outbox.close()
            self.dispatch(self.core.peer_lost(EXIT_TRANSPORT, 0.0))

    async def tick_stats(self) -> None:
        while True:
            await trio.sleep(self.options.stats_interval_secs)
            self.dispatch(self.core.tick())

    async def watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.warning("received %s, shutting down", signal.Signals(signum).name)
                self.dispatch(self.core.peer_lost(128 + signum, self.options.eof_grace_secs))

    async def execute_turns(self) -> None:
        async for turn in self.turn_recv:
            outcome = await self._run_turn(turn)
            self.dispatch(self.core.turn_ended(turn.turn_id, outcome))

    async def _run_turn(self, turn: StartTurn) -> TurnOutcome:
        timeout = self.options.turn_timeout_secs
        deadline = trio.current_time() + timeout if timeout else math.inf
        deadline = min(deadline, self.pending_stops.pop(turn.turn_id, math.inf))
        scope = trio.CancelScope(deadline=deadline)
        self.turn_scope = (turn.turn_id, scope)
        self.last_activity = trio.current_time()

        def sink(event: CodexEvent) -> None:
            # Every other event is read from some output, which came first.
            if type(event) is OutputProduced:
                self.last_activity = trio.current_time()
            if outputs := self.core.codex_event(turn.turn_id, event):
                self.dispatch(outputs)

        try:
            async with trio.open_nursery() as nursery:
                self.turn_nursery = (turn.turn_id, nursery)
                steers, self.pending_steers = self.pending_steers, []
                for steer in steers:
                    if steer.turn_id == turn.turn_id:
                        nursery.start_soon(self._run_steer, steer)
                    else:  # its turn is over and the core has queued the message
                        self.dispatch(self.core.steered(steer.steer_id, "the turn is over"))
                if self.options.stall_warn_secs:
                    nursery.start_soon(self._warn_on_stall, turn.turn_id)
                outcome = await self.backend.run_turn(turn, sink, scope)
                self.turn_nursery = None
                nursery.cancel_scope.cancel()
        finally:
            self.turn_scope = None
            self.turn_nursery = None
        return outcome

    async def _warn_on_stall(self, turn_id: int) -> None:
        """A ``Warning{idle_secs}`` for every ``--stall-warn`` seconds Codex stays silent."""
        limit = self.options.stall_warn_secs
        assert limit
        next_check = self.last_activity + limit
        while True:
            await trio.sleep_until(next_check)
            now = trio.current_time()
            silent = now - self.last_activity
            if silent >= limit:
                self.dispatch(self.core.stalled(turn_id, int(silent)))
                next_check = now + limit
            else:
                next_check = self.last_activity + limit

    # -- the whole life ---------------------------------------------------------

    async def run(self, *, handle_signals: bool) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.write_events)
            nursery.start_soon(self.receive_commands)
            nursery.start_soon(self.tick_stats)
            nursery.start_soon(self.execute_turns)
            nursery.start_soon(process_tree.reap_forever)
            nursery.start_soon(self.backend.run)
            if handle_signals:
                nursery.start_soon(self.watch_signals)
            self.dispatch(self.core.start())
            log.info("ready")
            await self.exit_event.wait()
            assert self.exit is not None
            if self.exit.preserve_work:
                await preserve_work(self.options.cwd, self.options.preserve_work_timeout_secs)
            if not await self.outbox.flush(self.options.send_timeout_secs):
                log.warning("exiting with %d event(s) unsent", len(self.outbox))
            nursery.cancel_scope.cancel()
        log.info("exiting with code %d", self.exit.code)
        return self.exit.code


async def serve(
    stream: trio.abc.Stream,
    options: ShimOptions,
    backend: Backend,
    *,
    handle_signals: bool = False,
) -> int:
    """Serve one orchestrator on ``stream`` until told to stop; the exit code.

    Sends ``Ready`` at once.  Returns after Shutdown, Kill, the end of the
    stream, a broken stream or (with ``handle_signals``) SIGTERM/SIGINT, and
    only once no process the shim started is left.  On cancellation every
    such process is stopped too.
    """
    process_tree.enable_subreaper()
    service = _Service(stream, options, backend)
    try:
        return await service.run(handle_signals=handle_signals)
    finally:
        # A second SIGTERM during the final sweep must not kill the shim before
        # a TERM-ignoring descendant got its KILL: hold signals until done.
        held = (
            trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT)
            if handle_signals
            else contextlib.nullcontext()
        )
        with held, trio.CancelScope(shield=True), trio.move_on_after(_EXIT_STOP_BOUND):
            await process_tree.terminate_descendants(options.stop_grace_secs)
