"""The wire protocol shared with batty: Commands in, Events out.

Every message is a frozen ``msgspec.Struct`` in a tagged union (``cmd`` for
Commands, ``event`` for Events), so one reused decoder validates a whole frame
and the same Structs generate the JSON Schema.  The JSON written here equals
batty's serde output byte for byte: field order, tag values, and which
optional fields are written as ``null`` versus left out (see
``shared/reference/protocol.md``).

Fields the reference *omits when absent* are typed ``T | None`` with
``omit_defaults=True`` on their Struct; the one Struct that mixes omitted and
always-written defaults (:class:`SessionStats`) uses ``msgspec.UNSET``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType, field

U16 = Annotated[int, Meta(ge=0, le=65535)]
U64 = Annotated[int, Meta(ge=0)]
Pct = Annotated[int, Meta(ge=0, le=255)]

MAX_FRAME_BYTES: Final = 1_048_576
"""Largest frame payload either side may send or accept (1 MiB)."""


class ShimState(enum.StrEnum):
    """The agent's state as the orchestrator sees it."""

    STARTING = "starting"
    IDLE = "idle"
    WORKING = "working"
    DEAD = "dead"
    CONTEXT_EXHAUSTED = "context_exhausted"


class ShutdownReason(enum.StrEnum):
    """Why the orchestrator asked for a shutdown (logged, not acted on)."""

    REQUESTED = "requested"
    RESTART_HANDOFF = "restart_handoff"
    CONTEXT_EXHAUSTED = "context_exhausted"
    TOPOLOGY_CHANGE = "topology_change"
    DAEMON_STOP = "daemon_stop"


# ---------------------------------------------------------------------------
# Commands (orchestrator -> shim)
# ---------------------------------------------------------------------------


class Command(msgspec.Struct, frozen=True, tag_field="cmd", tag=True):
    """Base of every Command; the tag is the class name."""


class SendMessage(Command, frozen=True, omit_defaults=True):
    """Deliver ``body`` from ``sender`` to the agent as one Codex turn."""

    sender: str = field(name="from")
    body: str
    message_id: str | None = None


class CaptureScreen(Command, frozen=True):
    """Ask for the response text so far (the last N lines when given)."""

    last_n_lines: U64 | None = None


class GetState(Command, frozen=True):
    """Ask for the current state and how long it has held."""


class Resize(Command, frozen=True):
    """Terminal resize; meaningless without a terminal, accepted and ignored."""

    rows: U16
    cols: U16


class Shutdown(Command, frozen=True):
    """Let the running turn finish for up to ``timeout_secs``, then exit."""

    timeout_secs: U64
    reason: ShutdownReason = ShutdownReason.REQUESTED


class Kill(Command, frozen=True):
    """Stop everything now and exit."""


class Ping(Command, frozen=True):
    """Liveness probe; always answered with :class:`Pong`."""


AnyCommand = SendMessage | CaptureScreen | GetState | Resize | Shutdown | Kill | Ping

# ---------------------------------------------------------------------------
# Events (shim -> orchestrator)
# ---------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, tag_field="event", tag=True):
    """Base of every Event; the tag is the class name."""


class Ready(Event, frozen=True):
    """The shim is serving commands."""


class StateChanged(Event, frozen=True):
    """The agent moved from one state to another."""

    from_state: ShimState = field(name="from")
    to: ShimState
    summary: str


class MessageDelivered(Event, frozen=True):
    """The message with this id was handed to Codex."""

    id: str


class Completion(Event, frozen=True, omit_defaults=True, kw_only=True):
    """A turn ended; ``response`` is the agent's final text."""

    message_id: str | None = None
    response: str
    last_lines: str


class Died(Event, frozen=True, kw_only=True):
    """The agent process died outside a turn (kept for protocol parity)."""

    exit_code: int | None = None
    last_lines: str


class ContextExhausted(Event, frozen=True):
    """Codex ran out of context; the agent cannot take more messages."""

    message: str
    last_lines: str


class ContextWarning(Event, frozen=True, kw_only=True):
    """Token usage crossed the warning threshold of the context window."""

    model: str | None = None
    output_bytes: U64
    uptime_secs: U64
    input_tokens: U64
    cached_input_tokens: U64
    cache_creation_input_tokens: U64
    cache_read_input_tokens: U64
    output_tokens: U64
    reasoning_output_tokens: U64
    used_tokens: U64
    context_limit_tokens: U64
    usage_pct: Pct


class ContextApproaching(Event, frozen=True):
    """Early sign of context pressure (agent text or token count)."""

    message: str
    input_tokens: U64
    output_tokens: U64


class QuotaBlocked(Event, frozen=True, omit_defaults=True):
    """The account's usage limit was hit; retry after the given time."""

    message: str
    retry_at_epoch_secs: U64 | None = None
    retry_at_label: str | None = None


class AuthRequired(Event, frozen=True):
    """Codex needs a human to authenticate again."""

    message: str


class ScreenCapture(Event, frozen=True):
    """Answer to :class:`CaptureScreen`."""

    content: str
    cursor_row: U16
    cursor_col: U16


class State(Event, frozen=True):
    """Answer to :class:`GetState`."""

    state: ShimState
    since_secs: U64


class SessionStats(Event, frozen=True):
    """Periodic statistics; ``context_usage_pct`` is left out when unknown."""

    output_bytes: U64
    uptime_secs: U64
    input_tokens: U64 = 0
    output_tokens: U64 = 0
    context_usage_pct: Pct | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        # ``None`` means "unknown", which the wire spells by leaving it out.
        if self.context_usage_pct is None:
            msgspec.structs.force_setattr(self, "context_usage_pct", UNSET)


class Pong(Event, frozen=True):
    """Answer to :class:`Ping`."""


class Warning(Event, frozen=True):
    """Something the orchestrator should know; not an error."""

    message: str
    idle_secs: U64 | None = None


class DeliveryFailed(Event, frozen=True):
    """The message with this id will never reach Codex, and why."""

    id: str
    reason: str


class Error(Event, frozen=True):
    """A command could not be carried out, or a frame was not understood."""

    command: str
    reason: str


AnyEvent = (
    Ready
    | StateChanged
    | MessageDelivered
    | Completion
    | Died
    | ContextExhausted
    | ContextWarning
    | ContextApproaching
    | QuotaBlocked
    | AuthRequired
    | ScreenCapture
    | State
    | SessionStats
    | Pong
    | Warning
    | DeliveryFailed
    | Error
)

COMMAND_TYPES: Final[tuple[type[Command], ...]] = (
    SendMessage,
    CaptureScreen,
    GetState,
    Resize,
    Shutdown,
    Kill,
    Ping,
)
EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    Ready,
    StateChanged,
    MessageDelivered,
    Completion,
    Died,
    ContextExhausted,
    ContextWarning,
    ContextApproaching,
    QuotaBlocked,
    AuthRequired,
    ScreenCapture,
    State,
    SessionStats,
    Pong,
    Warning,
    DeliveryFailed,
    Error,
)

# ---------------------------------------------------------------------------
# Encoding and decoding
# ---------------------------------------------------------------------------


class BadMessage(Exception):
    """A frame that is not a valid message; the stream itself is fine.

    ``command`` is the tag the frame claimed (or ``"unknown"``), ``reason``
    says what was wrong, with msgspec's JSON path where it has one.
    """

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"{command}: {reason}")
        self.command = command
        self.reason = reason


_encoder: Final = msgspec.json.Encoder()
_command_decoder: Final[msgspec.json.Decoder[AnyCommand]] = msgspec.json.Decoder(AnyCommand)
_event_decoder: Final[msgspec.json.Decoder[AnyEvent]] = msgspec.json.Decoder(AnyEvent)
_fields_decoder: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_str_decoder: Final = msgspec.json.Decoder(str)


def encode(message: Command | Event) -> bytes:
    """The message as batty-compatible JSON (no framing)."""
    return _encoder.encode(message)


def _claimed_tag(payload: bytes, tag_field: str) -> str:
    """The tag a frame claims, for naming it in an ``Error``; ``unknown`` if none."""
    try:
        raw = _fields_decoder.decode(payload).get(tag_field)
        return "unknown" if raw is None else _str_decoder.decode(raw)
    except msgspec.DecodeError:
        return "unknown"


def decode_command(payload: bytes) -> AnyCommand:
    """Decode one Command, or raise :class:`BadMessage` saying why not."""
    try:
        return _command_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise BadMessage(_claimed_tag(payload, "cmd"), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadMessage("unknown", str(exc)) from None


def decode_event(payload: bytes) -> AnyEvent:
    """Decode one Event, or raise :class:`BadMessage` saying why not."""
    try:
        return _event_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise BadMessage(_claimed_tag(payload, "event"), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadMessage("unknown", str(exc)) from None
