"""A stateful fuzzer that drives a REAL shim process through the client.

:class:`ShimMachine` is a Hypothesis ``RuleBasedStateMachine``: each example
starts a shim (``python -m trio_codex_shim`` by default) with the fake Codex
CLI running a drawn script of turns — quick, slow, failing, crashing,
spawning escaped grandchildren, hanging, context/auth/quota failures — and
then sends it a drawn sequence of commands, bad frames and finally Kill,
Shutdown or a broken stream.  After every step it checks the protocol's
promises (:class:`ProtocolChecker`):

- ``Ready`` comes first, and once;
- every Ping gets a Pong;
- states change only along :data:`~trio_codex_shim.core.machine.LEGAL_EDGES`,
  each ``from`` equal to the state before, and ``State`` answers agree;
- every message id ends in exactly one terminal event (``Completion`` or
  ``DeliveryFailed``), never for an id nobody sent;
- the shim never dies from input (bad frames get an ``Error``, and it keeps
  answering);
- once it has exited, nothing it started survives (the fake records every
  pid it and its grandchildren had; ``/proc`` is checked).

Stateful rules cannot be async, and ``hypothesis-trio`` no longer imports
with current Hypothesis, so the Trio side (the shim's client) lives in a
background thread running its own ``trio.run``, reached through
``trio.from_thread`` (:class:`ShimPortal`).  The thread is forced by
Hypothesis; nothing else in the project uses threads.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import trio
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .. import process_tree
from .. import protocol as p
from ..client import ClientOptions, ShimClient, ShimGone, new_message_id, open_shim
from ..core.machine import EXIT_OK, EXIT_TRANSPORT, LEGAL_EDGES
from ..framing import frame
from . import strategies as S
from .fake_codex import (
    Emit,
    Exit,
    Hang,
    Scenario,
    Sleep,
    Spawn,
    Stderr,
    Step,
    Turn,
    answer_turn,
    fail_turn,
    read_invocations,
    read_pids,
    steps_turn,
    write_fake_codex_launcher,
)
from .hypothesis_profiles import harness_settings

T = TypeVar("T")

CALL_TIMEOUT: Final = 20.0
"""Bound on every call the machine makes into the shim."""
START_TIMEOUT: Final = 30.0
"""Bound on starting (and on stopping) one shim and its thread."""
SETTLE_TIMEOUT: Final = 20.0
"""How long outstanding messages may take to end when no turn hangs."""

# ---------------------------------------------------------------------------
# What the fake Codex does with each message
# ---------------------------------------------------------------------------


class TurnKind(enum.StrEnum):
    """One scripted ``codex exec`` run."""

    ANSWER = "answer"
    SLOW = "slow"
    SPAWN = "spawn"
    """Starts an escaped grandchild that outlives the turn."""
    NOISY = "noisy"
    """Garbage on stdout and stderr, then an answer."""
    FAIL = "fail"
    CRASH = "crash"
    """Exits 7 without a word of JSONL."""
    HANG = "hang"
    """Starts an escaped grandchild and never ends: only Kill/Shutdown stop it."""
    CONTEXT = "context"
    AUTH = "auth"
    QUOTA = "quota"


def fake_turn(kind: TurnKind, index: int) -> Turn:
    """The fake-Codex script of one :class:`TurnKind`."""
    text = f"answer {index}\nline two of {index}"
    sleeper = Spawn.of(["sleep", "300"])
    match kind:
        case TurnKind.ANSWER:
            return answer_turn(text)
        case TurnKind.SLOW:
            return answer_turn(text, steps=[Sleep(0.3)])
        case TurnKind.SPAWN:
            return answer_turn(text, steps=[sleeper, Sleep(0.05)])
        case TurnKind.NOISY:
            return answer_turn(text, steps=[Emit("not json {"), Stderr("warning: noise")])
        case TurnKind.FAIL:
            return fail_turn("something broke")
        case TurnKind.CRASH:
            return steps_turn(Stderr("panic: boom"), Exit(7))
        case TurnKind.HANG:
            return steps_turn(sleeper, Hang())
        case TurnKind.CONTEXT:
            return fail_turn("Codex ran out of room in the model's context window.")
        case TurnKind.AUTH:
            return fail_turn("401 Unauthorized: please run `codex login`")
        case TurnKind.QUOTA:
            return fail_turn("You've hit your usage limit. Try again at Sep 29th, 2099 12:55 AM.")
    raise AssertionError(kind)


def fake_shim_options(
    root: Path,
    turns: Sequence[Turn | list[Step]],
    *,
    name: str = "shim",
    argv: tuple[str, ...] | None = None,
    extra_args: Sequence[str] = (),
    **client_options: Any,
) -> ClientOptions:
    """Options for a shim whose Codex is the fake CLI playing ``turns``.

    Writes ``{name}.scenario.json`` and the ``{name}-codex`` launcher in
    ``root``, makes the workspace ``root/name``, and logs the shim to
    ``{name}.log``.  The scenario's records (spawned pids, invocations) are
    read with :func:`scenario_path`.  Quick stops: ``--stop-grace 0.5``,
    ``--eof-grace 1``.
    """
    Scenario(turns=list(turns)).write(scenario_path(root, name))
    codex = write_fake_codex_launcher(root / f"{name}-codex", scenario_path(root, name))
    work = root / name
    work.mkdir(exist_ok=True)
    args = (
        *("--codex", str(codex), "--cwd", str(work), "--id", name),
        *("--stop-grace", "0.5", "--eof-grace", "1", "--log-level", "info"),
        *extra_args,
    )
    fields: dict[str, Any] = {"args": args, "log_path": root / f"{name}.log", **client_options}
    if argv is not None:
        fields["argv"] = argv
    return ClientOptions(**fields)


def scenario_path(root: Path, name: str = "shim") -> Path:
    """Where :func:`fake_shim_options` put the scenario of shim ``name``."""
    return root / f"{name}.scenario.json"


def started_pids(scenario: Path) -> list[int]:
    """Every pid the fake Codex ran as, and every grandchild it spawned."""
    pids = set(read_pids(scenario))
    pids.update(inv.pid for inv in read_invocations(scenario))
    return sorted(pids)


def survivors(scenario: Path) -> list[int]:
    """The :func:`started_pids` still alive (zombies count as gone)."""
    return [pid for pid in started_pids(scenario) if process_tree.is_alive(pid)]


def turn_kinds() -> st.SearchStrategy[TurnKind]:
    """Turn kinds, the benign ones more often than those that end the agent's usefulness."""
    common = st.sampled_from(
        [TurnKind.ANSWER, TurnKind.SLOW, TurnKind.SPAWN, TurnKind.NOISY, TurnKind.FAIL]
    )
    rare = st.sampled_from(
        [TurnKind.CRASH, TurnKind.HANG, TurnKind.CONTEXT, TurnKind.AUTH, TurnKind.QUOTA]
    )
    return st.one_of(common, common, common, rare)


# ---------------------------------------------------------------------------
# Checking the event stream
# ---------------------------------------------------------------------------


class ProtocolChecker:
    """The protocol's promises, checked on the event stream as it arrives.

    :meth:`feed` runs on the client's reader task (the Trio thread), the
    ``note_*`` methods and reads on the machine's thread: a lock keeps them
    apart.  Violations are collected, not raised, so the reader never breaks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[p.AnyEvent] = []
        self.violations: list[str] = []
        self.state: p.ShimState | None = None
        self.sent: set[str] = set()
        self.delivered: set[str] = set()
        self.terminals: Counter[str] = Counter()
        self.pings = 0
        self.counts: Counter[str] = Counter()
        self.bad_message_errors = 0

    def note_sent(self, message_id: str) -> None:
        with self._lock:
            self.sent.add(message_id)

    def note_pings(self, n: int = 1) -> None:
        with self._lock:
            self.pings += n

    def feed(self, event: p.AnyEvent) -> None:
        with self._lock:
            self._feed(event)

    def _bad(self, why: str) -> None:
        self.violations.append(f"event #{len(self.events)}: {why}")

    def _feed(self, event: p.AnyEvent) -> None:
        name = type(event).__name__
        if not self.events and not isinstance(event, p.Ready):
            self._bad(f"the first event is {name}, not Ready")
        self.events.append(event)
        self.counts[name] += 1
        match event:
            case p.Ready():
                if self.counts[name] > 1:
                    self._bad("a second Ready")
                self.state = p.ShimState.IDLE
            case p.StateChanged(from_state=old, to=new):
                if (old, new) not in LEGAL_EDGES:
                    self._bad(f"illegal state change {old} -> {new}")
                if old != self.state:
                    self._bad(f"StateChanged from {old}, but the state was {self.state}")
                self.state = new
            case p.State(state=state):
                if state != self.state:
                    self._bad(f"State says {state}, but the state was {self.state}")
            case p.MessageDelivered(id=mid):
                if mid not in self.sent:
                    self._bad(f"MessageDelivered for {mid!r}, which nobody sent")
                if mid in self.delivered or self.terminals[mid]:
                    self._bad(f"MessageDelivered for {mid!r} again or after its outcome")
                self.delivered.add(mid)
            case p.Completion(message_id=mid) | p.DeliveryFailed(id=mid):
                if mid is not None:
                    if mid not in self.sent:
                        self._bad(f"{name} for {mid!r}, which nobody sent")
                    self.terminals[mid] += 1
                    if self.terminals[mid] > 1:
                        self._bad(f"a second terminal event ({name}) for {mid!r}")
            case p.ScreenCapture(cursor_row=row, cursor_col=col):
                if (row, col) != (0, 0):
                    self._bad(f"ScreenCapture cursor at {row},{col}, not 0,0")
            case p.Error(reason=reason):
                if reason.startswith("bad message"):
                    self.bad_message_errors += 1
            case _:
                pass

    def pongs(self) -> int:
        with self._lock:
            return self.counts["Pong"]

    def unresolved(self) -> list[str]:
        """Sent ids without a terminal event yet."""
        with self._lock:
            return sorted(mid for mid in self.sent if not self.terminals[mid])

    def check_final(self) -> list[str]:
        """Promises that hold once the shim has exited; the broken ones."""
        with self._lock:
            problems = list(self.violations)
            for mid in sorted(self.sent):
                if self.terminals[mid] != 1:
                    problems.append(f"{mid!r} ended in {self.terminals[mid]} terminal events")
            if self.counts["Pong"] != self.pings:
                problems.append(f"{self.pings} Pings but {self.counts['Pong']} Pongs")
            return problems

    def tail(self, n: int = 12) -> str:
        with self._lock:
            return "\n".join(f"  {e!r}" for e in self.events[-n:])


# ---------------------------------------------------------------------------
# The Trio side, in a thread
# ---------------------------------------------------------------------------


class ShimPortal:
    """One shim (via :func:`~trio_codex_shim.client.open_shim`) in a Trio loop on
    a background thread, driven from synchronous code.

    :meth:`call` runs a coroutine function in that loop, bounded by
    ``CALL_TIMEOUT``.  :meth:`close` stops the shim (as ``open_shim`` does on
    exit) and joins the thread, bounded by ``START_TIMEOUT``.
    """

    def __init__(
        self, options: ClientOptions, on_event: Callable[[p.AnyEvent], object] | None
    ) -> None:
        self._options = options
        self._on_event = on_event
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._client: ShimClient | None = None
        self._thread = threading.Thread(target=self._thread_main, name="shim-portal", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise TimeoutError(f"the shim did not start within {START_TIMEOUT:g}s")
        if self._error is not None:
            raise self._error

    @property
    def client(self) -> ShimClient:
        assert self._client is not None
        return self._client

    def _thread_main(self) -> None:
        try:
            trio.run(self._serve)
        except Exception as exc:  # handed to the caller of the constructor or close()
            self._error = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_shim(self._options, on_event=self._on_event) as client:
            self._client = client
            self._started.set()
            await self._stop.wait()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` in the shim's loop, bounded by ``CALL_TIMEOUT``."""

        async def bounded() -> T:
            with trio.fail_after(CALL_TIMEOUT):
                return await fn(*args, **kwargs)

        return trio.from_thread.run(bounded, trio_token=self._token)

    def run_sync(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the shim's loop (to read Trio-owned state safely)."""
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def close(self) -> None:
        """Stop the shim and the thread.  Idempotent; bounded by ``START_TIMEOUT``."""
        if self._thread.is_alive() and self._stop is not None:
            stop = self._stop
            with suppress(trio.RunFinishedError):
                self.run_sync(stop.set)
        self._thread.join(START_TIMEOUT)
        if self._thread.is_alive():
            raise TimeoutError("the shim's thread did not finish")
        if self._error is not None and self._client is not None:
            raise self._error  # it failed after starting (errors before were raised already)


# ---------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------


_live = precondition(lambda self: not self.stopped)
"""The rules that need a running shim."""


class EndKind(enum.Enum):
    """How the ``end`` rule stops the shim."""

    KILL = "kill"
    SHUTDOWN = "shutdown"
    OVER_CAP = "over_cap"
    """A length prefix one byte over the cap: the shim must close and exit 3."""
    TRUNCATED = "truncated"
    """Half a frame, then end of stream: the shim must close and exit 3."""


class ShimMachine(RuleBasedStateMachine):
    """Drives a real shim; see the module docstring.  Subclass (or use
    :func:`make_shim_machine`) to point it at another shim command."""

    shim_argv: ClassVar[tuple[str, ...]] = ClientOptions().argv
    extra_args: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="shim-fuzz-"))
        self.scenario_path = scenario_path(self.root)
        self.checker = ProtocolChecker()
        self.portal: ShimPortal | None = None
        self.kinds: list[TurnKind] = []
        self.stopped = False
        self.expected_exit: int | None = None

    # -- set-up and tear-down ---------------------------------------------------

    @initialize(kinds=st.lists(turn_kinds(), min_size=1, max_size=8))
    def start_shim(self, kinds: list[TurnKind]) -> None:
        self.kinds = kinds
        options = fake_shim_options(
            self.root,
            [fake_turn(k, i) for i, k in enumerate(kinds)],
            argv=self.shim_argv,
            extra_args=("--queue-depth", "3", "--log-level", "warning", *self.extra_args),
            ready_timeout_secs=START_TIMEOUT,
            kill_timeout_secs=10.0,
        )
        self.portal = ShimPortal(options, self.checker.feed)

    def teardown(self) -> None:
        try:
            if self.portal is not None and not self.stopped:
                self.kill()
        finally:
            try:
                if self.portal is not None:
                    self.portal.close()
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------

    @property
    def client(self) -> ShimClient:
        assert self.portal is not None
        return self.portal.client

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        assert self.portal is not None
        return self.portal.call(fn, *args, **kwargs)

    def ping(self) -> None:
        """A Ping that must be answered (after everything sent before it)."""
        self.checker.note_pings()
        self.call(self.client.ping, CALL_TIMEOUT)

    def _returncode(self) -> int | None:
        assert self.portal is not None
        process = self.client.process
        assert process is not None
        return self.portal.run_sync(lambda: process.returncode)

    def _after_exit(self) -> None:
        """The shim has exited: every promise that needs the whole stream."""
        self.stopped = True
        code = self._returncode()
        assert code is not None, "the shim is still running"
        if self.expected_exit is not None:
            assert code == self.expected_exit, f"exit code {code}, not {self.expected_exit}"
        problems = self.checker.check_final()
        assert not problems, "\n".join(problems) + "\nlast events:\n" + self.checker.tail()
        alive = survivors(self.scenario_path)
        assert not alive, f"processes the shim started survive it: {alive}"

    # -- rules: commands ----------------------------------------------------------

    @_live
    @rule(
        body=S.texts(40),
        sender=st.sampled_from(["manager", "architect", "human"]),
        with_id=st.booleans(),
    )
    def send_message(self, body: str, sender: str, with_id: bool) -> None:
        if with_id:
            mid = new_message_id()
            self.checker.note_sent(mid)
            self.call(self.client.send, body, sender=sender, message_id=mid)
        else:
            cmd = p.SendMessage(sender=sender, body=body, message_id=None)
            self.call(self.client.send_command, cmd)

    @_live
    @rule(bodies=st.lists(S.texts(12), min_size=2, max_size=8))
    def send_burst(self, bodies: list[str]) -> None:
        """Several messages at once: they queue behind a running turn, and with
        the harness's ``--queue-depth 3`` the oldest queued ones get dropped."""
        for body in bodies:
            mid = new_message_id()
            self.checker.note_sent(mid)
            self.call(self.client.send, body, message_id=mid)

    @_live
    @rule()
    def ping_pong(self) -> None:
        self.ping()

    @_live
    @rule()
    def get_state(self) -> None:
        self.call(self.client.get_state, CALL_TIMEOUT)

    @_live
    @rule(
        last_n_lines=st.none()
        | st.integers(0, 20)
        | S.messages_of(p.CaptureScreen).map(lambda c: c.last_n_lines)  # up to its bound
    )
    def capture(self, last_n_lines: int | None) -> None:
        self.call(self.client.capture, last_n_lines, CALL_TIMEOUT)

    @_live
    @rule(rows=st.integers(0, 65535), cols=st.integers(0, 65535))
    def resize(self, rows: int, cols: int) -> None:
        self.call(self.client.resize, rows, cols)

    # -- rules: bad input -----------------------------------------------------------

    @_live
    @rule(payload=S.malformed_payloads("cmd"))
    def bad_frame(self, payload: bytes) -> None:
        before = self.checker.bad_message_errors
        self.call(self.client.send_raw, frame(payload))
        self.ping()  # answered after the Error, in order
        assert self.checker.bad_message_errors == before + 1, f"no Error for {payload!r}"

    @_live
    @rule(kind=st.sampled_from([S.CapFrame.PING_AT_CAP, S.CapFrame.GARBAGE_AT_CAP]))
    def cap_sized_frame(self, kind: S.CapFrame) -> None:
        before = self.checker.bad_message_errors
        answer = None
        if kind is S.CapFrame.PING_AT_CAP:
            self.checker.note_pings()
            answer = p.Pong
        self.call(self.client.send_raw, S.cap_frame(kind), answered_by=answer)
        self.ping()
        if kind is S.CapFrame.GARBAGE_AT_CAP:
            assert self.checker.bad_message_errors == before + 1

    # -- rules: waiting ---------------------------------------------------------------

    @_live
    @precondition(lambda self: TurnKind.HANG not in self.kinds)
    @rule()
    def settle(self) -> None:
        """Without hanging turns, every message ends on its own."""
        self.call(self._wait_unresolved, SETTLE_TIMEOUT)

    async def _wait_unresolved(self, limit: float) -> None:
        with trio.fail_after(limit), self.client.events() as events:
            while self.checker.unresolved():
                await events.receive(limit)

    # -- rules: the end ---------------------------------------------------------------

    @_live
    @rule(how=st.sampled_from(EndKind), timeout_secs=st.integers(0, 2), cut=S.truncated_frames())
    def end(self, how: EndKind, timeout_secs: int, cut: bytes) -> None:
        """Stop the shim one way or another (one rule, so runs are not cut short
        too often); teardown sends Kill to a shim still running."""
        self.stopped = True  # even if this step fails: teardown then only cleans up
        match how:
            case EndKind.KILL:
                self.kill()
            case EndKind.SHUTDOWN:
                self.expected_exit = EXIT_OK
                self.call(self.client.shutdown, timeout_secs)
                self._after_exit()
            case EndKind.OVER_CAP | EndKind.TRUNCATED:
                self.expected_exit = EXIT_TRANSPORT
                # The shim may close before it has read all of it: the write can fail.
                with suppress(ShimGone):
                    if how is EndKind.OVER_CAP:
                        self.call(self.client.send_raw, S.over_cap_header())
                    else:
                        self.call(self.client.send_raw, cut)
                        self.call(self.client.send_eof)
                self.call(self.client.wait_closed, CALL_TIMEOUT / 2)
                process = self.client.process
                assert process is not None
                self.call(process.wait)
                self._after_exit()

    def kill(self) -> None:
        self.expected_exit = EXIT_OK
        self.call(self.client.kill, CALL_TIMEOUT / 2)
        self._after_exit()

    @precondition(lambda self: self.stopped)
    @rule()
    def nothing_left(self) -> None:
        """After the end only this runs: the shim stays gone, and so do its children."""
        assert not survivors(self.scenario_path)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def promises_kept(self) -> None:
        if self.portal is None:
            return
        assert not self.checker.violations, (
            "\n".join(self.checker.violations) + "\nlast events:\n" + self.checker.tail()
        )

    @invariant()
    def alive_unless_stopped(self) -> None:
        if self.portal is None or self.stopped:
            return
        assert not self.client.closed, f"the shim went away: {self.client.close_reason}"
        assert self._returncode() is None, "the shim exited on its own"


def make_shim_machine(
    argv: tuple[str, ...] | None = None, extra_args: tuple[str, ...] = ()
) -> type[ShimMachine]:
    """A :class:`ShimMachine` for the shim started by ``argv`` (default: this
    package's) with ``extra_args`` after the harness's own."""
    attrs = {"extra_args": tuple(extra_args)}
    if argv is not None:
        attrs["shim_argv"] = tuple(argv)
    return type("CustomShimMachine", (ShimMachine,), attrs)


def run_shim_machine(
    machine: type[ShimMachine] = ShimMachine,
    *,
    max_examples: int | None = None,
    steps: int | None = None,
) -> None:
    """Run ``machine`` as a test under the active profile's harness settings
    (overridden by ``max_examples`` and ``steps``); raises on the first
    (shrunk) failure, after printing how to reproduce it."""
    run_state_machine_as_test(
        machine,
        settings=harness_settings(max_examples=max_examples, stateful_step_count=steps),
    )
