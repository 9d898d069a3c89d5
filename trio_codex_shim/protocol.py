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


MAX_TAG_CHARS: Final = 64
"""A claimed tag longer than this is cut when an ``Error`` names it."""
MAX_REASON_CHARS: Final = 1024
"""A decoding error's text (which may quote the bad value) is cut to this."""


def _claimed_tag(payload: bytes, tag_field: str) -> str:
    """The tag a frame claims, for naming it in an ``Error``; ``unknown`` if none."""
    try:
        raw = _fields_decoder.decode(payload).get(tag_field)
        return "unknown" if raw is None else _str_decoder.decode(raw)[:MAX_TAG_CHARS]
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        return "unknown"


def _bad(tag: str, exc: Exception) -> BadMessage:
    """A :class:`BadMessage` for any decoding failure, its text bounded.

    Besides ``msgspec.DecodeError`` a decoder raises ``UnicodeDecodeError`` for
    invalid UTF-8 inside a string and ``RecursionError`` for very deep nesting:
    both are bad messages too, never a reason to stop reading.
    """
    if isinstance(exc, RecursionError):
        reason = "JSON is malformed: nested too deeply"
    elif isinstance(exc, msgspec.DecodeError):
        reason = str(exc)
    else:
        reason = f"JSON is malformed: {exc}"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + "..."
    return BadMessage(tag, reason)


def decode_command(payload: bytes) -> AnyCommand:
    """Decode one Command, or raise :class:`BadMessage` saying why not (never anything else)."""
    try:
        return _command_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise _bad(_claimed_tag(payload, "cmd"), exc) from None
    except (ValueError, RecursionError) as exc:
        raise _bad("unknown", exc) from None


def decode_event(payload: bytes) -> AnyEvent:
    """Decode one Event, or raise :class:`BadMessage` saying why not (never anything else)."""
    try:
        return _event_decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise _bad(_claimed_tag(payload, "event"), exc) from None
    except (ValueError, RecursionError) as exc:
        raise _bad("unknown", exc) from None


_NAMING_FIELDS: Final = frozenset({"id", "message_id"})
"""Fields that name a message: cut only when nothing else is left to cut."""
_CUT_MARK: Final = " [... cut to fit a frame ...] "


def encode_event(event: Event, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """``event`` as JSON of at most ``max_bytes``: over-long text is cut in the middle.

    Codex's text (a response, a failure message) is bounded by the line cap,
    not the frame cap, so an event can come out larger than a frame.  Its
    text fields then share the room, each cut to its share with head and
    tail kept around a marker; message ids are cut only when nothing else is
    left.  The event is never dropped.
    """
    data = _encoder.encode(event)
    if len(data) <= max_bytes:
        return data
    event = _share_room(event, max_bytes)
    data = _encoder.encode(event)
    while len(data) > max_bytes:  # escapes and multi-byte characters took more room
        event = _cut_longest(event, len(data) - max_bytes)
        data = _encoder.encode(event)
    return data


def _texts(event: Event) -> dict[str, str]:
    return {
        f.name: value
        for f in msgspec.structs.fields(event)
        if isinstance(value := getattr(event, f.name), str) and value
    }


def _cut(text: str, keep: int) -> str:
    """``text`` cut to about ``keep`` characters: its head, the marker, its tail."""
    if keep >= len(text):
        return text
    if keep <= 0:
        return ""
    return text[: keep - keep // 2] + _CUT_MARK + text[len(text) - keep // 2 :]


def _json_len(text: str) -> int:
    return len(_encoder.encode(text)) - 2  # without the quotes


def _share_room(event: Event, max_bytes: int) -> Event:
    """Cut the text fields (not the ids) so that each gets a fair share of the room."""
    texts = {n: t for n, t in _texts(event).items() if n not in _NAMING_FIELDS}
    if not texts:
        return event
    sizes = {name: _json_len(text) for name, text in texts.items()}
    bare = _encoder.encode(msgspec.structs.replace(event, **dict.fromkeys(texts, "")))
    room = max(0, max_bytes - len(bare) - len(texts) * len(_CUT_MARK))
    keep: dict[str, str] = {}
    for i, name in enumerate(sorted(texts, key=sizes.__getitem__)):
        share = min(room // (len(texts) - i), sizes[name])
        room -= share
        text = texts[name]
        keep[name] = _cut(text, share * len(text) // sizes[name])  # bytes to characters
    return msgspec.structs.replace(event, **keep)


def _cut_longest(event: Event, excess: int) -> Event:
    texts = _texts(event)
    if not texts:
        raise ValueError(f"{type(event).__name__} cannot be cut to fit a frame")
    others = [name for name in texts if name not in _NAMING_FIELDS]
    name = max(others or texts, key=lambda n: len(texts[n]))
    text = texts[name]
    # Each character takes at least one byte of JSON, so cutting ``excess`` plus
    # the marker's length in characters always frees ``excess`` bytes.
    drop = excess + len(_CUT_MARK)
    return msgspec.structs.replace(event, **{name: _cut(text, len(text) - drop)})
