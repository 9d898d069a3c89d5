"""A scriptable stand-in for the ``codex`` binary, for fast deterministic tests.

Run it as ``python -m trio_codex_shim.testing.fake_codex --scenario FILE ARGS...``
or through a launcher written by :func:`write_fake_codex_launcher`, which a
shim can be given in place of the real ``codex``. The module imports only the
standard library and msgspec, because a shim starts it once per message.

Scenario file
=============

A JSON file holding a :class:`Scenario`::

    {
      "turns": [
        {"thread_id": "thr-1", "answer": "Hello", "usage": {"input_tokens": 100,
                                                            "output_tokens": 3}},
        [{"emit": {"type": "thread.started", "thread_id": "thr-2"}},
         {"emit": "not json at all"},
         {"emit_bytes_hex": "ff fe 0a"},
         {"stderr": "warning: something"},
         {"sleep": 0.1},
         {"exit": 7}],
        {"fail": "You've hit your usage limit.", "as": "both"}
      ],
      "when_exhausted": "repeat_last",
      "known_threads": null,
      "pids_file": "spawned.pids"
    }

Every ``codex exec`` run that passes the argument, prompt and
``require_git_repo`` checks consumes exactly one turn, in order, whatever
happens next (an unknown resume id, a crash, ...). The counter lives in a
state file next to the scenario (``<scenario>.state.json``, updated under an
``flock`` on ``<scenario>.lock`` and replaced atomically), so parallel runs
claim distinct turns. When the turns are used up, ``when_exhausted`` decides:
``"repeat_last"`` (the default) replays the last turn, ``"default_answer"``
answers ``default_answer`` in a fresh thread, ``"error"`` prints an error on
stderr and exits 3. A scenario without turns always gives the default answer.
:meth:`Scenario.write` resets the counter and removes old records.

A turn is either a JSON list of steps, or an object (:class:`Turn`) with
``steps`` and optional high-level fields. Steps run in order; each is an
object with exactly one key:

``{"emit": OBJ_OR_STR}``
    one stdout line: objects are JSON-encoded, strings are written as they are
    (so garbage lines are possible). ``$THREAD_ID`` in strings is replaced by
    the current thread id, and in app-server mode ``$TURN_ID`` by the turn id.
``{"emit_bytes_hex": "ff0a"}``
    exactly these bytes (no newline is added; spaces are ignored).
``{"emit_many": {"line": OBJ_OR_STR, "count": N}}``
    N copies of one line, written in ~1 MiB chunks.
``{"big_line": N}`` or ``{"big_line": {"size": N, "prefix": "", "suffix": "", "fill": "x"}}``
    one line of exactly N bytes plus ``\\n``, written in chunks, never held whole
    in memory. With prefix/suffix it can be valid JSON (a huge agent message).
``{"stderr": "text"}``
    text on stderr (a newline is added unless present).
``{"sleep": SECS}``, ``{"hang": true}``
    wait; ``hang`` waits forever (in app-server mode both end early on
    ``turn/interrupt``).
``{"exit": CODE}``
    exit at once with CODE.
``{"close_stdout": true}``
    close our end of stdout (fd 1 is pointed at /dev/null) and go on.
``{"spawn": {"argv": [...], "setsid": true, "keep_stdout": false, "keep_stderr": false}}``
    start a grandchild, in a new session by default (like Codex's tool
    commands), and append its pid to the pids file. ``keep_stdout`` lets it
    inherit our stdout, so the pipe stays open after we exit.
``{"kill_self": "SIGKILL"}``
    send ourselves a signal (a name or a number) mid-turn.

High-level :class:`Turn` fields (a turn with any of ``thread_id``, ``answer``,
``reasoning`` or ``fail``, or with ``"header": true``, is *expanded*):

* exec mode prints ``thread.started`` (with the resumed id when the argv has
  ``resume ID``: the real Codex 0.169 does print ``thread.started`` on resume,
  checked) and ``turn.started``, then ``reasoning`` as an item, then the steps,
  then for ``answer`` an ``agent_message`` item and ``turn.completed`` with
  ``usage``, or for ``fail`` the failure lines (``"as": "both"`` prints
  ``error`` then ``turn.failed`` as the real CLI does; ``"error"`` or
  ``"turn.failed"`` prints only that one). Exit status: ``exit_code``, else 1
  for ``fail`` and 0 otherwise.
* ``usage`` is this turn's; by default (``cumulative_usage``) the fake reports
  the thread's running total in ``turn.completed`` like Codex 0.169 does
  (checked: two resumed turns of 100 input tokens report 100, then 200).
  Totals are kept per thread id in the state file. Missing usage means
  100 input and 10 output tokens.
* ``resume_unknown: true`` makes a ``resume`` run fail as for an unknown id.

Argument checks follow ``codex exec`` 0.169: unknown options, options given
to ``resume`` that only ``exec`` takes (``-C``, ``-s``, ...), a missing value,
a repeated single option, a bad ``--sandbox``/``--color`` value or an extra
positional print a clap-style error and exit 2. ``--json`` is required (exit
2). A prompt comes from the positional argument or, for ``-``/none, from
stdin; an empty stdin prints ``No prompt provided via stdin.`` and exits 1.
Resuming an id that is not known prints, like the real CLI, no JSONL and
``Error: thread/resume: thread/resume failed: no rollout found for thread id
ID (code -32600)`` on stderr, and exits 1. Known ids are all ids when
``known_threads`` is null (the default), else that list plus every thread id
this fake reported before (per state file). ``resume --last`` takes the most
recently used thread. ``-o FILE`` gets the answer. With ``require_git_repo``
a run outside a Git work tree without ``--skip-git-repo-check`` fails like
the real one. ``codex --version`` prints ``codex-cli 0.169.0``.

Records
=======

Each run appends one JSON line (an :class:`Invocation`) to the invocations
file (``<scenario>.invocations.jsonl`` unless ``invocations_file`` is set):
argv, cwd, pid, stdin text, positional prompt, effective prompt, resume id,
thread id, model, ``-c`` values, other options and flags, the values of the
variables in ``record_env`` (null when unset) and the names of all environment
variables. Runs rejected before a turn (arguments, empty prompt, Git check)
are recorded too, with ``error`` set and ``index`` null. Read them with
:func:`read_invocations`; spawned pids with :func:`read_pids`. Relative file
names in a scenario are relative to the scenario's directory.

App-server mode
===============

``codex app-server`` speaks line-delimited JSON-RPC (no ``"jsonrpc"`` member)
on stdin/stdout: ``initialize``, ``thread/start`` (the new thread takes the
next turn's ``thread_id`` if it has one), ``thread/resume`` (JSON-RPC error
-32600 ``no rollout found for thread id ...`` for unknown ids, as above),
``turn/start``, ``turn/interrupt``, ``turn/steer`` and
``account/rateLimits/read``; other methods get error -32600. Every
``turn/start`` consumes a turn, answered with ``{"turn": {... "inProgress"}}``
and then, from a worker thread: ``turn/started``, the ``userMessage`` item,
the turn's raw ``app_server_notifications`` (with ``$THREAD_ID``/``$TURN_ID``
replaced), reasoning, the steps (``emit`` lines go to stdout as they are),
then ``agentMessage`` item, ``thread/tokenUsage/updated`` (``total`` per
thread, ``last`` for this turn) and ``turn/completed``; or for ``fail`` an
``error`` notification and ``turn/completed`` with status ``failed`` and
``codex_error_info`` as ``codexErrorInfo``; or after ``turn/interrupt``
(which ends ``sleep``/``hang`` steps, unless the turn has
``ignore_interrupt``: then it is answered and the turn runs on, like a hung
server) status ``interrupted``. A turn whose
notifications already contain ``turn/completed`` gets no second one. With
``exit_code`` set the server exits with it after the turn. Every request and
every client response is recorded. Limits: one turn at a time per server
(a second ``turn/start`` is an error), no ``initialize`` ordering checks, no
server-to-client requests other than raw ones in ``app_server_notifications``,
no history in ``thread/resume`` results, ``turn/steer`` is answered and
recorded but does not change the script, and stdin EOF exits at once with 0.

Output goes out with unbuffered ``os.write``; once the reader has gone
(EPIPE) or stdout was closed, further output is dropped and the script runs
on, so exit codes stay as scripted.
"""

import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

import msgspec

__all__ = [
    "CODEX_VERSION",
    "DEFAULT_RECORD_ENV",
    "DEFAULT_USAGE",
    "FAKE_ERROR_EXIT",
    "BigLine",
    "BigLineArgs",
    "CloseStdout",
    "Emit",
    "EmitBytesHex",
    "EmitMany",
    "EmitManyArgs",
    "Exit",
    "Hang",
    "Invocation",
    "KillSelf",
    "Scenario",
    "ScenarioFiles",
    "Sleep",
    "Spawn",
    "SpawnArgs",
    "Stderr",
    "Step",
    "Turn",
    "Usage",
    "agent_message_event",
    "answer_turn",
    "command_execution_event",
    "error_event",
    "fail_turn",
    "main",
    "read_invocations",
    "read_pids",
    "reasoning_event",
    "scenario_files",
    "steps_turn",
    "thread_started_event",
    "turn_completed_event",
    "turn_failed_event",
    "turn_started_event",
    "write_fake_codex_launcher",
]

CODEX_VERSION = "0.169.0"
MODULE = "trio_codex_shim.testing.fake_codex"
FAKE_ERROR_EXIT = 3
"""Exit status for problems of the fake itself (bad scenario, exhausted turns)."""

_CHUNK = 1 << 20

# --------------------------------------------------------------------------- steps


class Step:
    """Base of the step Structs. Not a Struct itself: a step is an object with a
    single key, and the decoder picks the concrete class from that key."""

    __slots__ = ()


class Emit(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """One stdout line: an object is JSON-encoded, a string is written as is."""

    emit: Any


class EmitBytesHex(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Exactly these bytes on stdout (hex, spaces ignored); no newline is added."""

    emit_bytes_hex: str

    def __post_init__(self) -> None:
        bytes.fromhex(self.emit_bytes_hex)


class EmitManyArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    line: Any
    count: int

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")


class EmitMany(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """``count`` copies of one line, written in large chunks."""

    emit_many: EmitManyArgs

    @classmethod
    def of(cls, line: Any, count: int) -> Self:
        return cls(EmitManyArgs(line=line, count=count))


class BigLineArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    size: int
    prefix: str = ""
    suffix: str = ""
    fill: str = "x"

    def __post_init__(self) -> None:
        if len(self.fill.encode()) != 1:
            raise ValueError("fill must be one byte")
        if self.size < len(self.prefix.encode()) + len(self.suffix.encode()):
            raise ValueError("size is smaller than prefix + suffix")


class BigLine(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """One line of exactly ``size`` bytes (then ``\\n``), written in chunks."""

    big_line: int | BigLineArgs

    def __post_init__(self) -> None:
        if isinstance(self.big_line, int) and self.big_line < 0:
            raise ValueError("big_line must be >= 0")

    @classmethod
    def of(cls, size: int, *, prefix: str = "", suffix: str = "", fill: str = "x") -> Self:
        return cls(BigLineArgs(size=size, prefix=prefix, suffix=suffix, fill=fill))


class Stderr(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Text on stderr; a newline is added unless it ends with one."""

    stderr: str


class Sleep(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    sleep: float


class Exit(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Exit at once with this status."""

    exit: int


class CloseStdout(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Close our end of stdout and keep running (``false`` does nothing)."""

    close_stdout: bool = True


class SpawnArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    argv: list[str]
    setsid: bool = True
    keep_stdout: bool = False
    keep_stderr: bool = False


class Spawn(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Start a grandchild (never waited for); its pid goes to the pids file."""

    spawn: SpawnArgs

    @classmethod
    def of(
        cls,
        argv: list[str],
        *,
        setsid: bool = True,
        keep_stdout: bool = False,
        keep_stderr: bool = False,
    ) -> Self:
        return cls(
            SpawnArgs(argv=argv, setsid=setsid, keep_stdout=keep_stdout, keep_stderr=keep_stderr)
        )


class KillSelf(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Send ourselves a signal, by name (``"SIGKILL"``, ``"TERM"``) or number."""

    kill_self: str | int = "SIGKILL"

    def signum(self) -> int:
        if isinstance(self.kill_self, int):
            return self.kill_self
        name = self.kill_self.upper()
        return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])

    def __post_init__(self) -> None:
        self.signum()


class Hang(msgspec.Struct, Step, frozen=True, forbid_unknown_fields=True):
    """Wait forever (until ``turn/interrupt`` in app-server mode)."""

    hang: bool = True


_STEP_TYPES: dict[str, type[Step]] = {
    "emit": Emit,
    "emit_bytes_hex": EmitBytesHex,
    "emit_many": EmitMany,
    "big_line": BigLine,
    "stderr": Stderr,
    "sleep": Sleep,
    "exit": Exit,
    "close_stdout": CloseStdout,
    "spawn": Spawn,
    "kill_self": KillSelf,
    "hang": Hang,
}


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is Step:
        if not isinstance(obj, dict) or len(obj) != 1:
            raise ValueError(f"a step is an object with exactly one of {sorted(_STEP_TYPES)}")
        (key,) = obj
        cls = _STEP_TYPES.get(key)
        if cls is None:
            raise ValueError(f"unknown step {key!r}; expected one of {sorted(_STEP_TYPES)}")
        return msgspec.convert(obj, cls)
    raise NotImplementedError(f"cannot decode {tp!r}")


# --------------------------------------------------------------------------- turns


class Usage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Token counts, as in ``turn.completed.usage`` of ``codex exec --json``."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0

    def plus(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_input_tokens=self.cache_write_input_tokens + other.cache_write_input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_output_tokens=self.reasoning_output_tokens + other.reasoning_output_tokens,
        )

    def app_server(self) -> dict[str, int]:
        """The camelCase shape of ``thread/tokenUsage/updated``."""
        return {
            "totalTokens": self.input_tokens + self.output_tokens,
            "inputTokens": self.input_tokens,
            "cachedInputTokens": self.cached_input_tokens,
            "cacheWriteInputTokens": self.cache_write_input_tokens,
            "outputTokens": self.output_tokens,
            "reasoningOutputTokens": self.reasoning_output_tokens,
        }


DEFAULT_USAGE = Usage(input_tokens=100, output_tokens=10)
"""Usage of an ``answer`` turn that gives none."""

DEFAULT_RECORD_ENV = (
    "CLAUDECODE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CODEX_HOME",
    "CODEX_MANAGED_BY_NPM",
    "CODEX_MANAGED_PACKAGE_ROOT",
    "NO_COLOR",
    "RUST_LOG",
)

FailAs = Literal["both", "turn.failed", "error"]


class Turn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """The script of one ``codex exec`` run (or one app-server ``turn/start``)."""

    steps: list[Step] = []
    thread_id: str | None = None
    """Id of a new thread (exec: in ``thread.started``; app-server: the id
    ``thread/start`` gives when this is the next turn). Generated if unset."""
    header: bool | None = None
    """Print ``thread.started``/``turn.started`` (exec); default: when expanded."""
    reasoning: str | None = None
    answer: str | None = None
    usage: Usage | None = None
    fail: str | None = None
    fail_as: FailAs = msgspec.field(default="both", name="as")
    codex_error_info: Any = None
    """app-server only: ``codexErrorInfo`` of a failed turn."""
    exit_code: int | None = None
    resume_unknown: bool = False
    app_server_notifications: list[Any] = []
    ignore_interrupt: bool = False
    """app-server only: ``turn/interrupt`` is answered but the turn runs on (a hung server)."""

    def __post_init__(self) -> None:
        if self.answer is not None and self.fail is not None:
            raise ValueError("a turn has either `answer` or `fail`, not both")

    @property
    def expanded(self) -> bool:
        if self.header is not None:
            return self.header
        return any(x is not None for x in (self.thread_id, self.answer, self.reasoning, self.fail))


class Scenario(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A whole fake-Codex script; see the module docstring for the JSON format."""

    turns: list[Turn | list[Step]] = []
    when_exhausted: Literal["repeat_last", "default_answer", "error"] = "repeat_last"
    default_answer: str = "OK"
    known_threads: list[str] | None = None
    cumulative_usage: bool = True
    require_git_repo: bool = False
    model_context_window: int = 258400
    record_env: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_RECORD_ENV))
    """Environment variables whose values are recorded (null when unset)."""
    state_file: str | None = None
    invocations_file: str | None = None
    pids_file: str | None = None

    def turn_for(self, index: int) -> Turn | None:
        """The turn run by the ``index``-th invocation; None when exhausted with ``error``."""
        if index < len(self.turns):
            return _as_turn(self.turns[index])
        if self.when_exhausted == "repeat_last" and self.turns:
            return _as_turn(self.turns[-1])
        if self.when_exhausted == "error" and self.turns:
            return None
        return Turn(answer=self.default_answer)

    def write(self, path: Path, *, reset: bool = True) -> Path:
        """Write the scenario as JSON (atomically). With ``reset``, also remove the
        state (turn counter, thread usage), invocation records and pids file."""
        path = Path(path)
        _atomic_write(path, msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n")
        if reset:
            files = ScenarioFiles.of(path, self)
            for p in (files.state, files.invocations, files.pids):
                p.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> "Scenario":
        return _SCENARIO_DECODER.decode(Path(path).read_bytes())


def _as_turn(t: Turn | list[Step]) -> Turn:
    return t if isinstance(t, Turn) else Turn(steps=t)


_SCENARIO_DECODER: msgspec.json.Decoder[Scenario] = msgspec.json.Decoder(
    Scenario, dec_hook=_dec_hook
)


def answer_turn(
    text: str,
    *,
    thread_id: str | None = None,
    usage: Usage | None = None,
    reasoning: str | None = None,
    steps: list[Step] | None = None,
    exit_code: int | None = None,
) -> Turn:
    """A turn that answers ``text``; ``steps`` run before the answer."""
    return Turn(
        steps=list(steps or []),
        thread_id=thread_id,
        answer=text,
        usage=usage,
        reasoning=reasoning,
        exit_code=exit_code,
    )


def fail_turn(
    message: str,
    *,
    fail_as: FailAs = "both",
    codex_error_info: Any = None,
    thread_id: str | None = None,
    steps: list[Step] | None = None,
    exit_code: int | None = None,
) -> Turn:
    """A failing turn (exit status 1 unless ``exit_code``)."""
    return Turn(
        steps=list(steps or []),
        thread_id=thread_id,
        fail=message,
        fail_as=fail_as,
        codex_error_info=codex_error_info,
        exit_code=exit_code,
    )


def steps_turn(*steps: Step) -> Turn:
    """A turn that is only these steps: nothing is printed but what they print."""
    return Turn(steps=list(steps))


# ------------------------------------------------------------- exec JSONL helpers


def thread_started_event(thread_id: str) -> dict[str, Any]:
    return {"type": "thread.started", "thread_id": thread_id}


def turn_started_event() -> dict[str, Any]:
    return {"type": "turn.started"}


def agent_message_event(text: str, item_id: str = "item_0") -> dict[str, Any]:
    return {
        "type": "item.completed",
        "item": {"id": item_id, "type": "agent_message", "text": text},
    }


def reasoning_event(text: str, item_id: str = "item_0") -> dict[str, Any]:
    return {"type": "item.completed", "item": {"id": item_id, "type": "reasoning", "text": text}}


def command_execution_event(
    command: str,
    *,
    output: str = "",
    exit_code: int | None = 0,
    item_id: str = "item_0",
    completed: bool = True,
) -> dict[str, Any]:
    """``item.completed`` (or, with ``completed=False``, ``item.started``) of a command."""
    item = {
        "id": item_id,
        "type": "command_execution",
        "command": command,
        "aggregated_output": output if completed else "",
        "exit_code": exit_code if completed else None,
        "status": "completed" if completed else "in_progress",
    }
    return {"type": "item.completed" if completed else "item.started", "item": item}


def turn_completed_event(usage: Usage = DEFAULT_USAGE) -> dict[str, Any]:
    return {"type": "turn.completed", "usage": msgspec.to_builtins(usage)}


def turn_failed_event(message: str) -> dict[str, Any]:
    return {"type": "turn.failed", "error": {"message": message}}


def error_event(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message}


# ------------------------------------------------------------------ files, state


class ScenarioFiles(NamedTuple):
    scenario: Path
    state: Path
    lock: Path
    invocations: Path
    pids: Path

    @classmethod
    def of(cls, scenario_path: Path, scenario: Scenario) -> "ScenarioFiles":
        p = Path(scenario_path).absolute()

        def pick(name: str | None, suffix: str) -> Path:
            return p.parent / name if name else p.with_name(p.name + suffix)

        return cls(
            scenario=p,
            state=pick(scenario.state_file, ".state.json"),
            lock=p.with_name(p.name + ".lock"),
            invocations=pick(scenario.invocations_file, ".invocations.jsonl"),
            pids=pick(scenario.pids_file, ".pids"),
        )


def scenario_files(scenario_path: Path) -> ScenarioFiles:
    """Where the fake keeps state and records for this scenario file."""
    return ScenarioFiles.of(scenario_path, Scenario.load(scenario_path))


class Invocation(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One record in the invocations file.

    ``kind`` is ``"exec"`` or ``"app-server"`` for a process start, or an
    app-server method (``"turn/start"``, ``"turn/steer"``, ...) or
    ``"client-response"`` for a message received by an app-server."""

    kind: str
    index: int | None = None
    """The turn this record consumed, if any."""
    argv: list[str]
    cwd: str
    pid: int
    time: float
    env: dict[str, str | None] = {}
    env_names: list[str] = []
    stdin: str | None = None
    prompt_arg: str | None = None
    prompt: str | None = None
    resume_id: str | None = None
    thread_id: str | None = None
    model: str | None = None
    config: list[str] = []
    options: dict[str, list[str]] = {}
    flags: list[str] = []
    request_id: Any = None
    params: Any = None
    error: str | None = None


_INVOCATION_DECODER: msgspec.json.Decoder[Invocation] = msgspec.json.Decoder(Invocation)


def read_invocations(scenario_path: Path) -> list[Invocation]:
    """All records appended so far for this scenario, oldest first."""
    path = scenario_files(scenario_path).invocations
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [_INVOCATION_DECODER.decode(line) for line in data.splitlines() if line.strip()]


def read_pids(scenario_path: Path) -> list[int]:
    """Pids of every grandchild the ``spawn`` steps started so far."""
    path = scenario_files(scenario_path).pids
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


class _State(msgspec.Struct):
    next_turn: int = 0
    next_thread: int = 0
    threads: dict[str, Usage] = {}
    """Known thread ids (least recently used first) with their usage totals."""


_STATE_DECODER: msgspec.json.Decoder[_State] = msgspec.json.Decoder(_State)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Locked:
    """The state file, read and written under an exclusive ``flock``."""

    def __init__(self, files: ScenarioFiles) -> None:
        self.files = files
        self.fd = -1
        self.state = _State()

    def __enter__(self) -> "_Locked":
        self.files.lock.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            self.state = _STATE_DECODER.decode(self.files.state.read_bytes())
        except FileNotFoundError:
            self.state = _State()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                _atomic_write(self.files.state, msgspec.json.encode(self.state))
        finally:
            os.close(self.fd)

    def new_thread_id(self) -> str:
        n = self.state.next_thread
        self.state.next_thread += 1
        return _fake_id(0x8000, n)

    def touch_thread(self, thread_id: str, add: Usage | None = None) -> Usage:
        """Mark the thread most recently used; add usage; return its total."""
        total = self.state.threads.pop(thread_id, None) or Usage()
        if add is not None:
            total = total.plus(add)
        self.state.threads[thread_id] = total
        return total

    def append(self, record: Invocation) -> None:
        _append_line(self.files.invocations, msgspec.json.encode(record) + b"\n")


def _append_line(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _fake_id(group: int, n: int) -> str:
    """A deterministic UUIDv7-looking id."""
    return f"019a0000-0000-7000-{group:04x}-{n:012x}"


# ------------------------------------------------------------------------ output


class _Out:
    """Unbuffered writes to fd 1; drops output once the reader is gone."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.dead = False

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.dead:
                return
            view = memoryview(data)
            while view:
                try:
                    n = os.write(1, view)
                except OSError:  # EPIPE, EBADF: nobody is reading any more
                    self.dead = True
                    return
                view = view[n:]

    def close(self) -> None:
        with self.lock:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
            self.dead = True


def _err(text: str) -> None:
    data = text.encode(errors="surrogateescape")
    while data:
        try:
            n = os.write(2, data)
        except OSError:
            return
        data = data[n:]


def _substitute(value: Any, subst: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in subst.items():
            if k in value:
                value = value.replace(k, v)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, subst) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, subst) for v in value]
    return value


def _line(value: Any, subst: dict[str, str]) -> bytes:
    value = _substitute(value, subst)
    if isinstance(value, str):
        return value.encode(errors="surrogatepass") + b"\n"
    return msgspec.json.encode(value) + b"\n"


# ------------------------------------------------------------------------- steps


class _Ctx:
    def __init__(
        self,
        out: _Out,
        files: ScenarioFiles,
        subst: dict[str, str],
        interrupted: threading.Event | None = None,
    ) -> None:
        self.out = out
        self.files = files
        self.subst = subst
        self.interrupted = interrupted
        self.children: list[Any] = []  # Popen objects, kept so they are never collected

    def wait(self, seconds: float | None) -> bool:
        """Sleep (forever for None); True if interrupted meanwhile."""
        if self.interrupted is not None:
            return self.interrupted.wait(seconds)
        if seconds is None:
            while True:
                time.sleep(3600)
        time.sleep(max(0.0, seconds))
        return False


def _run_steps(steps: list[Step], ctx: _Ctx) -> bool:
    """Run the steps in order; True if ``turn/interrupt`` cut them short."""
    out = ctx.out
    for step in steps:
        if ctx.interrupted is not None and ctx.interrupted.is_set():
            return True
        if isinstance(step, Emit):
            out.write(_line(step.emit, ctx.subst))
        elif isinstance(step, EmitBytesHex):
            out.write(bytes.fromhex(step.emit_bytes_hex))
        elif isinstance(step, EmitMany):
            line = _line(step.emit_many.line, ctx.subst)
            per = max(1, _CHUNK // max(1, len(line)))
            full, rest = divmod(step.emit_many.count, per)
            chunk = line * per
            with out.lock:
                for _ in range(full):
                    if out.dead:
                        break
                    out.write(chunk)
                out.write(line * rest)
        elif isinstance(step, BigLine):
            spec = step.big_line
            if isinstance(spec, int):
                spec = BigLineArgs(size=spec)
            prefix, suffix = spec.prefix.encode(), spec.suffix.encode() + b"\n"
            n_fill = spec.size - len(prefix) - len(suffix) + 1
            full, rest = divmod(n_fill, _CHUNK)
            chunk = spec.fill.encode() * _CHUNK
            with out.lock:
                out.write(prefix)
                for _ in range(full):
                    if out.dead:
                        break
                    out.write(chunk)
                out.write(chunk[:rest] + suffix)
        elif isinstance(step, Stderr):
            _err(step.stderr if step.stderr.endswith("\n") else step.stderr + "\n")
        elif isinstance(step, Sleep):
            if ctx.wait(step.sleep):
                return True
        elif isinstance(step, Hang):
            if step.hang and ctx.wait(None):
                return True
        elif isinstance(step, Exit):
            os._exit(step.exit)
        elif isinstance(step, CloseStdout):
            if step.close_stdout:
                out.close()
        elif isinstance(step, Spawn):
            _spawn(step.spawn, ctx)
        elif isinstance(step, KillSelf):
            os.kill(os.getpid(), step.signum())
            time.sleep(0.05)  # let a fatal signal land before going on
        else:  # pragma: no cover - the decoder only builds the types above
            raise TypeError(f"unknown step {step!r}")
    return False


def _spawn(spec: SpawnArgs, ctx: _Ctx) -> None:
    import subprocess

    child = subprocess.Popen(
        spec.argv,
        stdin=subprocess.DEVNULL,
        stdout=None if spec.keep_stdout else subprocess.DEVNULL,
        stderr=None if spec.keep_stderr else subprocess.DEVNULL,
        start_new_session=spec.setsid,
        close_fds=True,
    )
    ctx.children.append(child)
    _append_line(ctx.files.pids, f"{child.pid}\n".encode())


# -------------------------------------------------------------------- arguments


class _Opt(NamedTuple):
    long: str
    short: str | None
    meta: str | None  # None: a flag
    repeat: bool
    resume: bool  # also accepted after `resume`
    exec_: bool = True  # accepted by `exec` itself
    choices: tuple[str, ...] = ()


_EXEC_OPTS = [
    _Opt("config", "c", "key=value", True, True),
    _Opt("enable", None, "FEATURE", True, True),
    _Opt("disable", None, "FEATURE", True, True),
    _Opt("image", "i", "FILE", True, True),
    _Opt("model", "m", "MODEL", False, True),
    _Opt("local-provider", None, "OSS_PROVIDER", False, False),
    _Opt("profile", "p", "CONFIG_PROFILE_V2", False, False),
    _Opt(
        "sandbox",
        "s",
        "SANDBOX_MODE",
        False,
        False,
        choices=("read-only", "workspace-write", "danger-full-access"),
    ),
    _Opt("cd", "C", "DIR", False, False),
    _Opt("add-dir", None, "DIR", True, False),
    _Opt("thread-source", None, "SOURCE", False, True),
    _Opt(
        "cyber-access-program",
        None,
        "PROGRAM",
        False,
        True,
        choices=("standard", "daybreak_blue", "daybreak_red"),
    ),
    _Opt("output-schema", None, "FILE", False, True),
    _Opt("color", None, "COLOR", False, False, choices=("always", "never", "auto")),
    _Opt("output-last-message", "o", "FILE", False, True),
    _Opt("strict-config", None, None, False, True),
    _Opt("oss", None, None, False, False),
    _Opt("approve-for-me", None, None, False, False),
    _Opt("dangerously-bypass-approvals-and-sandbox", None, None, False, True),
    _Opt("dangerously-bypass-hook-trust", None, None, False, True),
    _Opt("worktree", None, None, False, True),
    _Opt("skip-git-repo-check", None, None, False, True),
    _Opt("trust", None, None, False, True),
    _Opt("ephemeral", None, None, False, True),
    _Opt("ignore-user-config", None, None, False, True),
    _Opt("ignore-rules", None, None, False, True),
    _Opt("json", None, None, False, True),
    _Opt("last", None, None, False, True, exec_=False),
    _Opt("all", None, None, False, True, exec_=False),
    _Opt("help", "h", None, False, True),
    _Opt("version", "V", None, False, False),
]
_EXEC_LONG = {o.long: o for o in _EXEC_OPTS}
_EXEC_SHORT = {o.short: o for o in _EXEC_OPTS if o.short}

_APP_SERVER_OPTS = [
    _Opt("config", "c", "key=value", True, True),
    _Opt("enable", None, "FEATURE", True, True),
    _Opt("disable", None, "FEATURE", True, True),
    _Opt("listen", None, "URL", False, True),
    _Opt("stdio", None, None, False, True),
    _Opt("strict-config", None, None, False, True),
    _Opt("analytics-default-enabled", None, None, False, True),
    _Opt("startup-client-info", None, "STARTUP_CLIENT_INFO", False, True),
    _Opt("help", "h", None, False, True),
]

_USAGE = {
    "exec": "Usage: codex exec [OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND> [ARGS]",
    "resume": "Usage: codex exec resume [OPTIONS] [SESSION_ID] [PROMPT]",
    "app-server": "Usage: codex app-server [OPTIONS] [COMMAND]",
}
_MORE = "For more information, try '--help'.\n"


class _UsageError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Args:
    """Parsed ``codex [global opts] exec|app-server ...`` arguments."""

    def __init__(self) -> None:
        self.command = ""
        self.resume = False
        self.session_id: str | None = None
        self.prompt_arg: str | None = None
        self.values: dict[str, list[str]] = {}
        self.flags: list[str] = []

    def one(self, name: str) -> str | None:
        v = self.values.get(name)
        return v[-1] if v else None

    def flag(self, name: str) -> bool:
        return name in self.flags


def _unexpected(arg: str, level: str, tip: bool) -> _UsageError:
    msg = f"error: unexpected argument '{arg}' found\n\n"
    if tip:
        msg += f"  tip: to pass '{arg}' as a value, use '-- {arg}'\n\n"
    return _UsageError(msg + _USAGE[level] + "\n\n" + _MORE)


def _parse_opts(
    args: list[str], level: str, table: list[_Opt], parsed: _Args, positionals: list[str]
) -> list[str]:
    """Parse options of one command level until a subcommand word; return the rest."""
    by_long = {o.long: o for o in table}
    by_short = {o.short: o for o in table if o.short}
    seen: set[str] = set()
    only_positionals = False
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if only_positionals or a == "-" or not a.startswith("-"):
            if (
                level == "exec"
                and not only_positionals
                and not positionals
                and a in ("resume", "fork", "review", "help")
            ):
                if a != "resume":
                    raise _UsageError(f"fake_codex: `codex exec {a}` is not supported\n")
                return args[i - 1 :]
            positionals.append(a)
            continue
        if a == "--":
            only_positionals = True
            continue
        value: str | None = None
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            opt = by_long.get(name)
            shown = "--" + name
            if eq:
                value = val
        else:
            opt = by_short.get(a[1])
            shown = a[:2]
            if len(a) > 2:
                value = a[2:].removeprefix("=")
        allowed = opt is not None and (opt.resume if level == "resume" else opt.exec_)
        if opt is None or not allowed:
            raise _unexpected(shown, level, tip=True)
        display = f"--{opt.long} <{opt.meta}>" if opt.meta else f"--{opt.long}"
        if opt.long in seen and not opt.repeat:
            raise _UsageError(
                f"error: the argument '{display}' cannot be used multiple times\n\n"
                + _USAGE[level]
                + "\n\n"
                + _MORE
            )
        seen.add(opt.long)
        if opt.meta is None:
            if value is not None:
                raise _UsageError(
                    f"error: unexpected value '{value}' for '{display}' found; "
                    "no more were expected\n\n" + _USAGE[level] + "\n\n" + _MORE
                )
            if opt.long not in parsed.flags:
                parsed.flags.append(opt.long)
            continue
        if value is None:
            if i >= len(args):
                raise _UsageError(
                    f"error: a value is required for '{display}' but none was supplied\n\n" + _MORE
                )
            value = args[i]
            i += 1
        if opt.choices and value not in opt.choices:
            raise _UsageError(
                f"error: invalid value '{value}' for '{display}'\n"
                f"  [possible values: {', '.join(opt.choices)}]\n\n" + _MORE
            )
        values = parsed.values.setdefault(opt.long, [])
        if not opt.repeat:
            values.clear()  # a value given again after `resume` overrides
        values.append(value)
    return []


def _parse_argv(argv: list[str]) -> _Args:
    parsed = _Args()
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        if a in ("-V", "--version"):
            raise _UsageError(f"codex-cli {CODEX_VERSION}\n", code=0)
        name, eq, val = a.partition("=")
        if name in ("-c", "--config", "--enable", "--disable"):
            key = {"-c": "config", "--config": "config"}.get(name, name[2:])
            if not eq:
                i += 1
                if i >= len(argv):
                    raise _UsageError(f"error: a value is required for '{name}'\n\n" + _MORE)
                val = argv[i]
            parsed.values.setdefault(key, []).append(val)
            i += 1
            continue
        if a.startswith("-c") and len(a) > 2:
            parsed.values.setdefault("config", []).append(a[2:])
            i += 1
            continue
        raise _UsageError(f"fake_codex: unsupported top-level argument {a!r}\n")
    if i >= len(argv):
        raise _UsageError(
            "fake_codex: the fake supports only `codex exec` and `codex app-server`\n"
        )
    command, rest = argv[i], argv[i + 1 :]
    if command in ("exec", "e"):
        parsed.command = "exec"
        positionals: list[str] = []
        rest = _parse_opts(rest, "exec", _EXEC_OPTS, parsed, positionals)
        if parsed.flag("version"):
            raise _UsageError(f"codex-cli-exec {CODEX_VERSION}\n", code=0)
        if rest:
            parsed.resume = True
            positionals = []
            _parse_opts(rest[1:], "resume", _EXEC_OPTS, parsed, positionals)
            if positionals and not parsed.flag("last"):
                parsed.session_id = positionals.pop(0)
            if len(positionals) > 1:
                raise _unexpected(positionals[1], "resume", tip=False)
        elif len(positionals) > 1:
            raise _unexpected(positionals[1], "exec", tip=False)
        if parsed.flag("help"):
            raise _UsageError(_USAGE["resume" if parsed.resume else "exec"] + "\n", code=0)
        parsed.prompt_arg = positionals[0] if positionals else None
        if parsed.resume and parsed.session_id is None and not parsed.flag("last"):
            raise _UsageError("fake_codex: `resume` needs a SESSION_ID or --last\n")
        if not parsed.flag("json"):
            raise _UsageError("fake_codex: only `codex exec --json` is supported (no --json)\n")
    elif command == "app-server":
        parsed.command = "app-server"
        positionals = []
        _parse_opts(rest, "app-server", _APP_SERVER_OPTS, parsed, positionals)
        if positionals:
            raise _UsageError(f"fake_codex: `codex app-server {positionals[0]}` is not supported\n")
        listen = parsed.one("listen")
        if listen not in (None, "stdio://"):
            raise _UsageError(f"fake_codex: only --listen stdio:// is supported, not {listen}\n")
        if parsed.flag("help"):
            raise _UsageError(_USAGE["app-server"] + "\n", code=0)
    else:
        raise _UsageError(
            "fake_codex: the fake supports only `codex exec` and `codex app-server`, "
            f"not {command!r}\n"
        )
    return parsed


# --------------------------------------------------------------------- recording


def _record(
    kind: str, argv: list[str], scenario: Scenario, parsed: _Args | None, **fields: Any
) -> Invocation:
    rec = Invocation(
        kind=kind,
        argv=argv,
        cwd=os.getcwd(),
        pid=os.getpid(),
        time=time.time(),
        env={k: os.environ.get(k) for k in scenario.record_env},
        env_names=sorted(os.environ),
        **fields,
    )
    if parsed is not None:
        rec.model = parsed.one("model")
        rec.config = list(parsed.values.get("config", []))
        rec.options = {k: v for k, v in parsed.values.items() if k not in ("config", "model")}
        rec.flags = list(parsed.flags)
        rec.resume_id = parsed.session_id
        rec.prompt_arg = parsed.prompt_arg if parsed.prompt_arg != "-" else None
    return rec


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _in_git_repo(start: Path) -> bool:
    return any((d / ".git").exists() for d in (start, *start.parents))


# -------------------------------------------------------------------------- exec


def _main_exec(argv: list[str], parsed: _Args, scenario: Scenario, files: ScenarioFiles) -> int:
    stdin_text: str | None = None
    if parsed.prompt_arg is None or parsed.prompt_arg == "-":
        if parsed.prompt_arg is None:
            _err("Reading prompt from stdin...\n")
        stdin_text = _read_all(0).decode(errors="replace")
        prompt = stdin_text
    else:
        prompt = parsed.prompt_arg
        if not os.isatty(0):
            stdin_text = _read_all(0).decode(errors="replace")
            if stdin_text:
                _err("Reading additional input from stdin...\n")
                prompt = f"{prompt}\n\n<stdin>\n{stdin_text}\n</stdin>"
    rec = _record("exec", argv, scenario, parsed, stdin=stdin_text, prompt=prompt)

    def reject(message: str, code: int) -> int:
        rec.error = message.strip()
        with _Locked(files) as lk:
            lk.append(rec)
        _err(message)
        return code

    if not prompt.strip():
        return reject("No prompt provided via stdin.\n", 1)
    workdir = Path(parsed.one("cd") or os.getcwd())
    if (
        scenario.require_git_repo
        and not parsed.flag("skip-git-repo-check")
        and not _in_git_repo(workdir.absolute())
    ):
        return reject(
            "Not inside a trusted directory and --skip-git-repo-check was not specified.\n", 1
        )

    with _Locked(files) as lk:
        index = lk.state.next_turn
        lk.state.next_turn += 1
        rec.index = index
        turn = scenario.turn_for(index)
        if turn is None:
            rec.error = "scenario exhausted"
            lk.append(rec)
            _err(f"fake_codex: scenario exhausted after {len(scenario.turns)} turns\n")
            return FAKE_ERROR_EXIT
        thread_id: str | None
        if parsed.resume:
            thread_id = parsed.session_id
            if thread_id is None:  # --last
                thread_id = next(reversed(lk.state.threads), None) or lk.new_thread_id()
            known = (
                scenario.known_threads is None
                or thread_id in scenario.known_threads
                or thread_id in lk.state.threads
            )
            if turn.resume_unknown or not known:
                rec.thread_id = thread_id
                rec.error = "unknown thread"
                lk.append(rec)
                _err(
                    "Error: thread/resume: thread/resume failed: "
                    f"no rollout found for thread id {thread_id} (code -32600)\n"
                )
                return 1
        else:
            thread_id = turn.thread_id or lk.new_thread_id()
        usage = (turn.usage or DEFAULT_USAGE) if turn.answer is not None else None
        total = lk.touch_thread(thread_id, usage)
        rec.thread_id = thread_id
        lk.append(rec)

    out = _Out()
    ctx = _Ctx(out, files, {"$THREAD_ID": thread_id})
    item = 0
    if turn.expanded:
        out.write(_line(thread_started_event(thread_id), {}))
        out.write(_line(turn_started_event(), {}))
    if turn.reasoning is not None:
        out.write(_line(reasoning_event(turn.reasoning, f"item_{item}"), {}))
        item += 1
    _run_steps(turn.steps, ctx)
    if turn.answer is not None:
        assert usage is not None
        out.write(_line(agent_message_event(turn.answer, f"item_{item}"), {}))
        out.write(_line(turn_completed_event(total if scenario.cumulative_usage else usage), {}))
        last_message = parsed.one("output-last-message")
        if last_message:
            Path(last_message).write_text(turn.answer)
    elif turn.fail is not None:
        if turn.fail_as in ("both", "error"):
            out.write(_line(error_event(turn.fail), {}))
        if turn.fail_as in ("both", "turn.failed"):
            out.write(_line(turn_failed_event(turn.fail), {}))
    if turn.exit_code is not None:
        return turn.exit_code
    return 1 if turn.fail is not None else 0


# -------------------------------------------------------------------- app-server


class _ActiveTurn:
    def __init__(self, turn_id: str, thread_id: str, ignore_interrupt: bool = False) -> None:
        self.turn_id = turn_id
        self.thread_id = thread_id
        self.ignore_interrupt = ignore_interrupt
        self.interrupted = threading.Event()


class _JsonRpcError(Exception):
    def __init__(self, message: str, code: int = -32600) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _AppServer:
    def __init__(
        self, argv: list[str], parsed: _Args, scenario: Scenario, files: ScenarioFiles
    ) -> None:
        self.argv = argv
        self.parsed = parsed
        self.scenario = scenario
        self.files = files
        self.out = _Out()
        self.loaded: set[str] = set()
        self.lock = threading.Lock()
        self.active: _ActiveTurn | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(msgspec.json.encode(message) + b"\n")

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def record(self, kind: str, **fields: Any) -> Invocation:
        return _record(kind, self.argv, self.scenario, self.parsed, **fields)

    def serve(self) -> int:
        with _Locked(self.files) as lk:
            lk.append(self.record("app-server"))
        stdin = os.fdopen(0, "rb", closefd=False)
        while True:
            try:
                raw = stdin.readline()
            except OSError:
                return 0
            if not raw:
                return 0
            if not raw.strip():
                continue
            try:
                msg = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                self.send({"id": None, "error": {"code": -32700, "message": "Parse error"}})
                continue
            if not isinstance(msg, dict):
                self.send({"id": None, "error": {"code": -32600, "message": "Invalid request"}})
                continue
            method = msg.get("method")
            if not isinstance(method, str):
                with _Locked(self.files) as lk:
                    lk.append(
                        self.record(
                            "client-response",
                            request_id=msg.get("id"),
                            params=msg.get("result", msg.get("error")),
                        )
                    )
                continue
            if "id" not in msg:
                continue  # a notification, e.g. `initialized`
            request_id = msg["id"]
            params = msg.get("params")
            if not isinstance(params, dict):
                params = {}
            try:
                result = self.handle(method, request_id, params)
            except _JsonRpcError as e:
                self.send({"error": {"code": e.code, "message": e.message}, "id": request_id})

            else:
                if result is not None:
                    self.send({"id": request_id, "result": result})

    def thread_info(self, thread_id: str, params: dict[str, Any]) -> dict[str, Any]:
        cwd = params.get("cwd") or os.getcwd()
        model = params.get("model") or self.parsed.one("model") or "gpt-5.5"
        thread: dict[str, Any] = {
            "id": thread_id,
            "sessionId": thread_id,
            "preview": "",
            "ephemeral": False,
            "modelProvider": "fake",
            "model": model,
            "status": {"type": "idle"},
            "cwd": cwd,
            "cliVersion": CODEX_VERSION,
            "turns": [],
        }
        return {
            "thread": thread,
            "model": model,
            "modelProvider": "fake",
            "cwd": cwd,
            "approvalPolicy": params.get("approvalPolicy", "never"),
            "sandbox": {"type": "dangerFullAccess"},
            "reasoningEffort": None,
        }

    def handle(self, method: str, request_id: Any, params: dict[str, Any]) -> Any:
        if method == "turn/start":
            return self.turn_start(request_id, params)
        rec = self.record(method, request_id=request_id, params=params)
        with _Locked(self.files) as lk:
            lk.append(rec)
            if method == "initialize":
                client = params.get("clientInfo") or {}
                name = client.get("name", "client") if isinstance(client, dict) else "client"
                return {
                    "userAgent": f"{name}/{CODEX_VERSION} (fake_codex)",
                    "codexHome": os.environ.get("CODEX_HOME", ""),
                    "platformFamily": "unix",
                    "platformOs": sys.platform,
                }
            if method == "thread/start":
                nxt = self.scenario.turn_for(lk.state.next_turn)
                thread_id = (nxt.thread_id if nxt else None) or lk.new_thread_id()
                lk.touch_thread(thread_id)
                self.loaded.add(thread_id)
                info = self.thread_info(thread_id, params)
                self.send({"id": request_id, "result": info})
                self.notify("thread/started", {"thread": info["thread"]})
                return None
            if method == "thread/resume":
                thread_id = str(params.get("threadId"))
                known = self.scenario.known_threads
                if (
                    known is not None
                    and thread_id not in known
                    and thread_id not in lk.state.threads
                ):
                    raise _JsonRpcError(f"no rollout found for thread id {thread_id}")
                lk.touch_thread(thread_id)
                self.loaded.add(thread_id)
                return self.thread_info(thread_id, params)
            if method == "account/rateLimits/read":
                return {
                    "rateLimits": {
                        "limitId": "codex",
                        "primary": None,
                        "secondary": None,
                        "credits": None,
                        "planType": None,
                    }
                }
        if method in ("turn/interrupt", "turn/steer"):
            with self.lock:
                active = self.active
                if active is None or active.thread_id != params.get("threadId"):
                    verb = "interrupt" if method == "turn/interrupt" else "steer"
                    raise _JsonRpcError(f"no active turn to {verb}")
                key = "turnId" if method == "turn/interrupt" else "expectedTurnId"
                if params.get(key) != active.turn_id:
                    raise _JsonRpcError(
                        f"expected active turn id `{params.get(key)}` but found `{active.turn_id}`"
                    )
                if method == "turn/steer":
                    return {"turnId": active.turn_id}
                # Answer before the turn can report `interrupted`.
                self.send({"id": request_id, "result": {}})
                if not active.ignore_interrupt:
                    active.interrupted.set()
                return None
        raise _JsonRpcError(f"Invalid request: unknown variant `{method}`")

    def turn_start(self, request_id: Any, params: dict[str, Any]) -> Any:
        thread_id = params.get("threadId")
        if not isinstance(thread_id, str) or thread_id not in self.loaded:
            raise _JsonRpcError(f"thread not found: {thread_id}")
        with self.lock:
            if self.active is not None:
                raise _JsonRpcError("fake_codex: a turn is already running")
            prompt_parts = [
                str(x.get("text", ""))
                for x in params.get("input") or []
                if isinstance(x, dict) and x.get("type") == "text"
            ]
            rec = self.record(
                "turn/start",
                request_id=request_id,
                params=params,
                thread_id=thread_id,
                prompt="\n".join(prompt_parts),
            )
            with _Locked(self.files) as lk:
                index = lk.state.next_turn
                lk.state.next_turn += 1
                rec.index = index
                turn = self.scenario.turn_for(index)
                if turn is None:
                    rec.error = "scenario exhausted"
                    lk.append(rec)
                    raise _JsonRpcError("fake_codex: scenario exhausted", -32603)
                usage = (turn.usage or DEFAULT_USAGE) if turn.answer is not None else None
                total = lk.touch_thread(thread_id, usage)
                lk.append(rec)
            turn_id = _fake_id(0x9000, index)
            active = self.active = _ActiveTurn(turn_id, thread_id, turn.ignore_interrupt)
            self.send({"id": request_id, "result": {"turn": self.turn_info(turn_id, "inProgress")}})
        worker = threading.Thread(
            target=self.run_turn,
            args=(turn, active, index, params.get("input") or [], usage, total),
            daemon=True,
        )
        worker.start()
        return None

    def turn_info(self, turn_id: str, status: str, error: Any = None) -> dict[str, Any]:
        return {"id": turn_id, "items": [], "status": status, "error": error}

    def item(self, active: _ActiveTurn, item: dict[str, Any], started: bool = True) -> None:
        params = {"item": item, "threadId": active.thread_id, "turnId": active.turn_id}
        if started:
            self.notify("item/started", params)
        self.notify("item/completed", params)

    def run_turn(
        self,
        turn: Turn,
        active: _ActiveTurn,
        index: int,
        user_input: list[Any],
        usage: Usage | None,
        total: Usage,
    ) -> None:
        tid = active.thread_id
        subst = {"$THREAD_ID": tid, "$TURN_ID": active.turn_id}
        self.notify(
            "turn/started", {"threadId": tid, "turn": self.turn_info(active.turn_id, "inProgress")}
        )
        user_item = {"type": "userMessage", "id": _fake_id(0xA000, index), "content": user_input}
        self.item(active, user_item)
        self_completes = False
        for n in turn.app_server_notifications:
            n = _substitute(n, subst)
            if isinstance(n, dict) and n.get("method") == "turn/completed":
                self_completes = True
            self.out.write(_line(n, {}))
        if turn.reasoning is not None:
            reasoning = {
                "type": "reasoning",
                "id": f"rs_{index}",
                "summary": [turn.reasoning],
                "content": [],
            }
            self.item(active, reasoning)
        ctx = _Ctx(self.out, self.files, subst, active.interrupted)
        interrupted = _run_steps(turn.steps, ctx)
        status, error = "completed", None
        if interrupted:
            status = "interrupted"
        elif turn.answer is not None:
            assert usage is not None
            self.item(active, {"type": "agentMessage", "id": f"msg_{index}", "text": turn.answer})
            self.notify(
                "thread/tokenUsage/updated",
                {
                    "threadId": tid,
                    "turnId": active.turn_id,
                    "tokenUsage": {
                        "total": total.app_server(),
                        "last": usage.app_server(),
                        "modelContextWindow": self.scenario.model_context_window,
                    },
                },
            )
        elif turn.fail is not None:
            status = "failed"
            error = {
                "message": turn.fail,
                "codexErrorInfo": turn.codex_error_info,
                "additionalDetails": None,
            }
            self.notify(
                "error",
                {"error": error, "willRetry": False, "threadId": tid, "turnId": active.turn_id},
            )
        with self.lock:
            if interrupted or not self_completes:
                self.notify(
                    "turn/completed",
                    {"threadId": tid, "turn": self.turn_info(active.turn_id, status, error)},
                )
            self.active = None
        if turn.exit_code is not None:
            os._exit(turn.exit_code)


# -------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the fake: ``[--scenario FILE] CODEX_ARGS...``; returns the exit status.

    The scenario comes from ``--scenario`` or ``$FAKE_CODEX_SCENARIO``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    args = list(sys.argv[1:] if argv is None else argv)
    scenario_path = os.environ.get("FAKE_CODEX_SCENARIO")
    if args and args[0] == "--scenario" and len(args) > 1:
        scenario_path, args = args[1], args[2:]
    elif args and args[0].startswith("--scenario="):
        scenario_path, args = args[0].partition("=")[2], args[1:]
    if args in (["--version"], ["-V"]):
        _Out().write(f"codex-cli {CODEX_VERSION}\n".encode())
        return 0
    if not scenario_path:
        _err("fake_codex: no scenario (give --scenario FILE or set FAKE_CODEX_SCENARIO)\n")
        return FAKE_ERROR_EXIT
    try:
        scenario = Scenario.load(Path(scenario_path))
    except (OSError, msgspec.DecodeError) as e:
        _err(f"fake_codex: cannot load scenario {scenario_path}: {e}\n")
        return FAKE_ERROR_EXIT
    files = ScenarioFiles.of(Path(scenario_path), scenario)
    try:
        parsed = _parse_argv(args)
    except _UsageError as e:
        if e.code != 0:
            kind = "app-server" if "app-server" in args else "exec"
            rec = _record(kind, args, scenario, None, error=e.message.strip())
            with _Locked(files) as lk:
                lk.append(rec)
            _err(e.message)
        else:
            _Out().write(e.message.encode())
        return e.code
    if parsed.command == "app-server":
        return _AppServer(args, parsed, scenario, files).serve()
    return _main_exec(args, parsed, scenario, files)


def write_fake_codex_launcher(path: Path, scenario: Path, python: str = sys.executable) -> Path:
    """Write an executable ``#!/bin/sh`` script at ``path`` that runs this fake with
    ``scenario``, passing its own arguments on; give it to a shim as its codex."""
    import shlex

    path = Path(path)
    script = (
        "#!/bin/sh\n"
        f"exec {shlex.quote(python)} -m {MODULE} "
        f'--scenario {shlex.quote(str(Path(scenario).absolute()))} "$@"\n'
    )
    _atomic_write(path, script.encode())
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    os._exit(main())
