"""The ``app-server`` backend: one persistent ``codex app-server`` for the shim's life.

The server is started by :meth:`AppServerBackend.run` when the shim starts
(``Ready`` never waits on it), initialised, and then keeps one Codex thread:
``thread/start`` on first use, ``turn/start`` for every message.  A server
that dies is replaced when the next message arrives, and the thread is
``thread/resume``d there; a thread Codex no longer knows is reported as
:attr:`FailureKind.THREAD_NOT_FOUND`, which makes the core start a fresh one.

Process ownership: the server (and the npm launcher in front of it, when
there is one) belongs to the :meth:`run` task and dies with it, whole tree.
A turn that is stopped is first interrupted (``turn/interrupt``), then every
process the shim has besides the server itself is stopped: Codex does not
stop the commands a turn started when the turn is interrupted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import msgspec
import trio

from .. import process_tree
from ..core.actions import StartTurn
from ..options import Sandbox, ShimOptions
from ..transcript import Transcript
from .app_server_events import TurnTranslator, answer_server_request, classify_rpc_error
from .app_server_rpc import (
    ERROR_METHOD_NOT_FOUND,
    ClientInfo,
    Ignored,
    Incoming,
    InitializeParams,
    RpcConnection,
    RpcError,
    RpcRemoteError,
    SteerResult,
    TextInput,
    ThreadResult,
    ThreadResumeParams,
    ThreadStartParams,
    TurnInterruptParams,
    TurnResult,
    TurnStartParams,
    TurnSteerParams,
)
from .events import (
    AgentMessage,
    CodexEvent,
    EventSink,
    Failure,
    FailureKind,
    Notice,
    OutputProduced,
    ThreadStarted,
    TurnFailed,
    TurnOutcome,
)
from .exec_argv import config_args
from .launcher import ResolvedCodex
from .lines import LineSplitter
from .spawn import PIPE_BYTES, codex_env, open_codex
from .stderr_tail import Tail
from .thread_id import is_valid_thread_id

log = logging.getLogger(__name__)

_DRAIN_SECS: Final = 1.0
"""After the server exits, how long its stdout may stay open (held by its children)."""
CLIENT_NAME: Final = "trio-codex-shim"
CLIENT_VERSION: Final = "0.1.0"


def app_server_argv(options: ShimOptions, program: str) -> list[str]:
    """``PROGRAM app-server [-c KEY=VALUE …] [codex args …]``.

    The model, cwd and sandbox go in ``thread/start`` instead; the reasoning
    effort goes both in ``-c`` (the thread's default) and in every ``turn/start``.
    """
    return [program, "app-server", *config_args(options), *options.codex_args]


def thread_settings(options: ShimOptions) -> tuple[str, str]:
    """``(approvalPolicy, sandbox)`` for ``options.sandbox``.

    Nobody can answer an approval in an unattended shim, so the policy is
    always ``never``; ``bypass`` means no sandbox at all.
    """
    if options.sandbox is Sandbox.BYPASS:
        return "never", Sandbox.DANGER_FULL_ACCESS.value
    return "never", options.sandbox.value


def server_chain(root: int) -> set[int]:
    """``root`` and the ``app-server`` processes under it (the native binary
    behind the npm launcher): the pids a turn stop must spare."""
    chain = {root}
    frontier = [root]
    while frontier:
        for kid in process_tree.children(frontier.pop()):
            if kid not in chain and _is_app_server(kid):
                chain.add(kid)
                frontier.append(kid)
    return chain


def _is_app_server(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"app-server" in argv


class AppServerUnavailable(Exception):
    """The server could not be started or initialised."""


class _Server:
    """One running ``codex app-server`` and the connection to it."""

    def __init__(self, proc: trio.Process, rpc: RpcConnection, stderr: Tail) -> None:
        self.proc = proc
        self.rpc = rpc
        self.stderr = stderr
        self.thread_id: str | None = None
        """The thread loaded in this server (started or resumed here)."""
        self.exited = trio.Event()
        self.cancel_scope = trio.CancelScope()

    @property
    def alive(self) -> bool:
        return not self.exited.is_set() and not self.rpc.closed and self.proc.returncode is None

    def describe_exit(self) -> str:
        code = self.proc.returncode
        tail = self.stderr.text().strip()
        status = "still running" if code is None else f"status {code}"
        return f"codex app-server exited ({status})" + (f": {tail[-2000:]}" if tail else "")


class _ActiveTurn:
    """The turn in flight: where its events go and what Codex calls it."""

    def __init__(
        self, turn_id: int, server: _Server, translator: TurnTranslator, sink: EventSink
    ) -> None:
        self.turn_id = turn_id
        self.server = server
        self.translator = translator
        self.sink = sink
        self.started = trio.Event()
        """``turn/start`` was answered (or the turn is over)."""
        self.over = trio.Event()
        """``turn/completed`` arrived, or the server is gone."""

    @property
    def codex_turn_id(self) -> str | None:
        return self.translator.turn_id


class _TurnSlot:
    """The shim's turn from :meth:`AppServerBackend.run_turn`'s start to its end."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self.active: _ActiveTurn | None = None
        self.settled = trio.Event()
        """Codex took the turn (``turn/start`` answered), or the run is over."""


class AppServerBackend:
    """Runs every turn on one long-lived ``codex app-server`` in ``options.cwd``."""

    def __init__(
        self,
        options: ShimOptions,
        codex: ResolvedCodex,
        transcript: Transcript | None = None,
        *,
        start_timeout_secs: float = 60.0,
        request_timeout_secs: float = 60.0,
        interrupt_timeout_secs: float | None = None,
    ) -> None:
        self._options = options
        self._program = codex.program
        self._transcript = transcript
        self._env = codex_env(options, codex)
        self._start_timeout = start_timeout_secs
        self._request_timeout = request_timeout_secs
        self._interrupt_timeout = (
            max(1.0, options.stop_grace_secs)
            if interrupt_timeout_secs is None
            else interrupt_timeout_secs
        )
        """How long a stopped turn waits for Codex to confirm ``turn/interrupt``."""
        self._nursery: trio.Nursery | None = None
        self._nursery_ready = trio.Event()
        self._start_lock = trio.Lock()
        self._server: _Server | None = None
        self._previous: _Server | None = None
        self._starting: _Server | None = None
        self._active: _ActiveTurn | None = None
        self._slot: _TurnSlot | None = None
        self._stale_turns: set[str] = set()
        self.servers_started = 0

    # -- the lifetime task ------------------------------------------------------

    async def run(self) -> None:
        """Start the server at once, and own every server until cancelled.

        On cancellation (the shim exits) the server's whole process tree is
        stopped before this returns.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._nursery_ready.set()
            try:
                await self._ensure_server()
            except (AppServerUnavailable, OSError) as exc:
                log.error(
                    "codex app-server did not start (will retry with the next message): %s", exc
                )
            await trio.sleep_forever()

    async def _ensure_server(self) -> _Server:
        """The live server, starting one (in :meth:`run`'s nursery) when there is none."""
        await self._nursery_ready.wait()
        assert self._nursery is not None
        async with self._start_lock:
            server = self._server
            if server is not None and server.alive:
                return server
            previous = self._previous
            if previous is not None and not previous.exited.is_set():
                # Its teardown stops every process it left: never let it meet the new one.
                previous.cancel_scope.cancel()
                with trio.move_on_after(self._options.stop_grace_secs + 10):
                    await previous.exited.wait()
            started: _Server = await self._nursery.start(self._serve)
            self._previous = started
            return started

    async def _serve(self, *, task_status: trio.TaskStatus[_Server]) -> None:
        """Run one server: start, initialise, report it, relay it until it exits."""
        opts = self._options
        argv = app_server_argv(opts, self._program)
        log.debug("starting %s", argv)
        proc = await open_codex(argv, opts, self._env)
        assert proc.stdin is not None
        server = _Server(proc, RpcConnection(proc.stdin), Tail(opts.stderr_tail_bytes))
        self.servers_started += 1
        log.info("codex app-server started (pid %d)", proc.pid)
        stdout_done = trio.Event()
        failed: AppServerUnavailable | None = None
        with process_tree.owned(proc.pid):
            try:
                with server.cancel_scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._relay_stdout, server, stdout_done)
                        nursery.start_soon(self._relay_stderr, server)
                        nursery.start_soon(_eof_after_exit, proc, stdout_done)
                        self._starting = server
                        try:
                            await self._initialize(server)
                        except AppServerUnavailable as exc:
                            failed = exc  # raised below, after the teardown, unwrapped
                        else:
                            self._server = server
                            self._starting = None
                            task_status.started(server)
                            await stdout_done.wait()
                            with trio.move_on_after(_DRAIN_SECS):
                                await proc.wait()
                        nursery.cancel_scope.cancel()
            finally:
                if self._starting is server:
                    self._starting = None
                server.rpc.close("codex app-server is gone")
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        log.info("stopping codex app-server (pid %d) and its tree", proc.pid)
                        await process_tree.terminate_descendants(opts.stop_grace_secs)
                        with trio.move_on_after(opts.stop_grace_secs + 5):
                            await proc.wait()
                if self._server is server:
                    self._server = None
                server.exited.set()
                active = self._active
                if active is not None and active.server is server:
                    active.started.set()
                    active.over.set()
                log.info("%s", server.describe_exit())
        if failed is not None:
            raise failed

    async def _initialize(self, server: _Server) -> None:
        params = InitializeParams(ClientInfo(CLIENT_NAME, CLIENT_VERSION))
        try:
            await server.rpc.request(
                "initialize", params, Ignored, timeout_secs=self._start_timeout
            )
            await server.rpc.notify("initialized")
        except RpcError as exc:
            error = str(exc)
        else:
            return
        with trio.move_on_after(_DRAIN_SECS):  # let its exit status and stderr arrive
            await server.proc.wait()
        raise AppServerUnavailable(f"{error}; {server.describe_exit()}")

    # -- reading the server ---------------------------------------------------------

    async def _relay_stdout(self, server: _Server, done: trio.Event) -> None:
        proc = server.proc
        assert proc.stdout is not None
        splitter = LineSplitter(self._options.max_line_bytes)
        try:
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(PIPE_BYTES):
                    active = self._active
                    if active is not None and active.server is server:
                        active.sink(OutputProduced(len(chunk)))
                    for line in splitter.feed(bytes(chunk)):
                        await self._handle_line(server, line)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("lost codex app-server stdout: %r", exc)
        if splitter.skipped:
            log.warning("skipped %d app-server line(s) over the line cap", splitter.skipped)
        server.rpc.close("codex app-server closed its stdout")  # fail every waiting request
        done.set()

    async def _handle_line(self, server: _Server, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = server.rpc.codec.decode(line)
        except (ValueError, RecursionError) as exc:  # DecodeError, bad UTF-8, deep nesting
            log.warning("skipping an app-server line that is not JSON-RPC (%s): %.200r", exc, line)
            return
        kind = message.kind
        if kind == "response":
            server.rpc.deliver(message)
        elif kind == "notification":
            assert message.method is not None
            self._notification(server, message.method, message.params)
        elif kind == "request":
            await self._answer(server, message)
        else:
            log.warning("skipping an app-server message of no known kind: %.200r", line)

    def _notification(self, server: _Server, method: str, params: msgspec.Raw) -> None:
        active = self._active
        if active is None or active.server is not server:
            log.debug("notification between turns: %s", method)
            return
        for event in active.translator.feed(method, params):
            self._emit(active, event)
        if active.translator.done:
            active.started.set()
            active.over.set()

    async def _answer(self, server: _Server, message: Incoming) -> None:
        """Answer a request from the server at once; it never waits on the shim."""
        assert message.method is not None
        assert message.id is not None
        answer = answer_server_request(message.method)
        log.warning("%s", answer.notice)
        active = self._active
        if active is not None and active.server is server:
            self._emit(active, Notice(answer.notice))
        try:
            if answer.result is not None:
                await server.rpc.respond(message.id, answer.result)
            else:
                await server.rpc.respond_error(
                    message.id, ERROR_METHOD_NOT_FOUND, f"{CLIENT_NAME} cannot answer this"
                )
        except RpcError as exc:
            log.warning("could not answer %s: %s", message.method, exc)

    def _emit(self, active: _ActiveTurn, event: CodexEvent) -> None:
        active.sink(event)
        if self._transcript is not None and isinstance(event, AgentMessage):
            self._transcript.write(event.text)

    async def _relay_stderr(self, server: _Server) -> None:
        proc = server.proc
        assert proc.stderr is not None
        try:
            async with proc.stderr:
                while chunk := await proc.stderr.receive_some(PIPE_BYTES):
                    server.stderr.feed(bytes(chunk))
                    text = chunk.decode("utf-8", errors="replace").rstrip("\n")
                    log.debug("codex app-server stderr: %s", text[:2000])
                    active = self._active
                    if active is not None and active.server is server:
                        active.sink(OutputProduced(len(chunk)))
                    if self._transcript is not None:
                        self._transcript.write("[stderr] " + text.replace("\n", "\n[stderr] "))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("lost codex app-server stderr: %r", exc)

    # -- turns ------------------------------------------------------------------------

    async def run_turn(
        self, turn: StartTurn, sink: EventSink, stop: trio.CancelScope
    ) -> TurnOutcome:
        """See :meth:`Backend.run_turn`.

        On a stop: ``turn/interrupt`` (bounded), then every process but the
        server is stopped; a server that does not confirm the interrupt is
        replaced.  A server that dies during the turn ends it with a
        :class:`TurnFailed`; its orphans are stopped.
        """
        slot = self._slot = _TurnSlot(turn.turn_id)
        outcome = TurnOutcome()
        try:
            with stop:
                outcome = await self._run_turn(turn, sink, slot)
        finally:
            slot.settled.set()
            if self._slot is slot:
                self._slot = None
            active = slot.active
            with trio.CancelScope(shield=True):
                if stop.cancelled_caught:
                    await self._stop_turn(active)
                elif active is not None and not active.translator.done:
                    await self._stop_turn_processes()  # the server died under the turn
            if self._active is active:
                self._active = None
        if stop.cancelled_caught:
            return TurnOutcome(stopped=True)
        return outcome

    async def _run_turn(self, turn: StartTurn, sink: EventSink, slot: _TurnSlot) -> TurnOutcome:
        thread_hint = turn.thread_id
        for attempt in (1, 2):
            try:
                server = await self._ensure_server()
            except OSError as exc:
                return TurnOutcome(spawn_error=f"{self._program}: {exc.strerror or exc}")
            except AppServerUnavailable as exc:
                failure = Failure(FailureKind.OTHER, f"codex app-server unavailable: {exc}")
                sink(TurnFailed(failure))
                return TurnOutcome()
            try:
                thread_hint = await self._ensure_thread(server, thread_hint, sink)
                active = await self._start_turn(server, thread_hint, turn, sink, slot)
            except RpcRemoteError as exc:
                sink(TurnFailed(classify_rpc_error(exc)))
                return TurnOutcome()
            except RpcError as exc:
                if attempt == 1:
                    # Gone before Codex took the turn: nothing ran, so a new server may run it.
                    log.warning("codex app-server lost before the turn started (%s); retrying", exc)
                    self._abandon(server)
                    continue
                return self._lost(server, sink, str(exc))
            break
        slot.settled.set()
        translator = active.translator
        await active.over.wait()
        if not translator.done:
            return self._lost(server, sink, "the turn was in progress")
        if translator.status == "completed":
            return TurnOutcome(completed=True)
        if translator.status == "interrupted":
            sink(TurnFailed(Failure(FailureKind.OTHER, "codex interrupted the turn")))
        return TurnOutcome()

    async def _start_turn(
        self,
        server: _Server,
        thread_id: str,
        turn: StartTurn,
        sink: EventSink,
        slot: _TurnSlot,
    ) -> _ActiveTurn:
        """``turn/start``; the turn is active (its notifications routed) from before the call."""
        translator = TurnTranslator(thread_id, stale=frozenset(self._stale_turns))
        active = _ActiveTurn(turn.turn_id, server, translator, sink)
        slot.active = active
        self._active = active
        params = turn_start_params(self._options, thread_id, turn.prompt)
        try:
            result = await server.rpc.request(
                "turn/start", params, TurnResult, timeout_secs=self._request_timeout
            )
        finally:
            active.started.set()
        if translator.turn_id is None:
            translator.started(result.turn.id)
        log.info("turn %d: codex turn %s on thread %s", turn.turn_id, result.turn.id, thread_id)
        return active

    def _abandon(self, server: _Server) -> None:
        """Give up on ``server``: the next :meth:`_ensure_server` replaces it."""
        server.rpc.close("abandoned by the shim")
        server.cancel_scope.cancel()

    def _lost(self, server: _Server, sink: EventSink, what: str) -> TurnOutcome:
        """The server went away (or stopped answering) while a turn needed it."""
        message = f"{server.describe_exit()} ({what})"
        sink(TurnFailed(Failure(FailureKind.OTHER, message)))
        self._abandon(server)  # a server that stopped answering is replaced
        return TurnOutcome(exit_code=server.proc.returncode, stderr_tail=server.stderr.text())

    async def _ensure_thread(self, server: _Server, wanted: str | None, sink: EventSink) -> str:
        """Thread ``wanted`` loaded in ``server`` (resumed, or already there), or a new one."""
        if wanted is not None and server.thread_id == wanted:
            return wanted
        opts = self._options
        approval, sandbox = thread_settings(opts)
        cwd = str(opts.cwd)
        if wanted is None:
            started = await server.rpc.request(
                "thread/start",
                ThreadStartParams(
                    cwd=cwd, model=opts.model, approval_policy=approval, sandbox=sandbox
                ),
                ThreadResult,
                timeout_secs=self._request_timeout,
            )
            thread_id = started.thread.id
            if not is_valid_thread_id(thread_id):
                raise RpcRemoteError("thread/start", 0, f"malformed thread id {thread_id[:80]!r}")
            server.thread_id = thread_id
            sink(ThreadStarted(thread_id))
            return thread_id
        if not is_valid_thread_id(wanted):
            raise RpcRemoteError("thread/resume", 0, f"refusing a malformed thread id {wanted!r}")
        resumed = await server.rpc.request(
            "thread/resume",
            ThreadResumeParams(
                thread_id=wanted,
                cwd=cwd,
                model=opts.model,
                approval_policy=approval,
                sandbox=sandbox,
            ),
            ThreadResult,
            timeout_secs=self._request_timeout,
        )
        server.thread_id = resumed.thread.id
        log.info("resumed thread %s in app-server pid %d", wanted, server.proc.pid)
        return wanted

    # -- stopping -----------------------------------------------------------------------

    async def _stop_turn(self, active: _ActiveTurn | None) -> None:
        """Interrupt the turn (bounded), then stop every process but the server."""
        if active is not None and active.server.alive and not active.over.is_set():
            confirmed = False
            with trio.move_on_after(self._interrupt_timeout):
                await active.started.wait()
                turn_id = active.codex_turn_id
                if turn_id is not None and not active.over.is_set():
                    try:
                        await active.server.rpc.request(
                            "turn/interrupt",
                            TurnInterruptParams(active.translator.thread_id, turn_id),
                            Ignored,
                            timeout_secs=self._interrupt_timeout,
                        )
                    except RpcError as exc:
                        log.warning("turn/interrupt failed: %s", exc)
                    else:
                        await active.over.wait()
                confirmed = active.over.is_set()
            if not confirmed:
                if active.codex_turn_id is not None:
                    self._stale_turns.add(active.codex_turn_id)
                log.warning("codex did not confirm the interrupt: replacing the app-server")
                active.server.cancel_scope.cancel()
                with trio.move_on_after(self._options.stop_grace_secs + 5):
                    await active.server.exited.wait()
        await self._stop_turn_processes()

    async def _stop_turn_processes(self) -> None:
        spared: set[int] = set()
        for server in (self._server, self._starting):
            if server is not None and server.alive:
                spared |= server_chain(server.proc.pid)
        stopped = await process_tree.terminate_descendants(
            self._options.stop_grace_secs, exclude=spared
        )
        if stopped:
            log.info("stopped %d process(es) of the turn: %s", len(stopped), stopped)

    # -- steering ------------------------------------------------------------------------

    async def steer_turn(self, turn_id: int, prompt: str) -> str | None:
        """Add ``prompt`` to the running turn ``turn_id``; ``None`` when Codex took it,
        else why not (the caller then queues the message)."""
        slot = self._slot
        if slot is None or slot.turn_id != turn_id:
            return "no codex turn is running"
        # The turn may still be waiting for its server, thread and turn/start.
        with trio.move_on_after(self._start_timeout + 3 * self._request_timeout):
            await slot.settled.wait()
        active = slot.active
        codex_turn = None if active is None else active.codex_turn_id
        if active is None or codex_turn is None or active.over.is_set():
            return "the turn is already over"
        try:
            result = await active.server.rpc.request(
                "turn/steer",
                TurnSteerParams(active.translator.thread_id, codex_turn, (TextInput(prompt),)),
                SteerResult,
                timeout_secs=self._request_timeout,
            )
        except RpcError as exc:
            return str(exc)
        log.info("steered codex turn %s", result.turn_id or codex_turn)
        return None


def turn_start_params(options: ShimOptions, thread_id: str, prompt: str) -> TurnStartParams:
    """``turn/start`` for ``prompt``: text input, the configured reasoning effort."""
    return TurnStartParams(
        thread_id=thread_id, input=(TextInput(prompt),), effort=options.reasoning_effort
    )


async def _eof_after_exit(proc: trio.Process, stdout_done: trio.Event) -> None:
    """Treat stdout as ended shortly after the server exits, even if a child holds it."""
    await proc.wait()
    with trio.move_on_after(_DRAIN_SECS):
        await stdout_done.wait()
    stdout_done.set()
