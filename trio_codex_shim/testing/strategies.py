"""Hypothesis strategies for the wire protocol: messages, frames, and broken input.

Message strategies are derived from the protocol Structs themselves
(``msgspec.inspect``), field by field and constraint by constraint, so a
field added to :mod:`~trio_codex_shim.protocol` is fuzzed without touching
this module.

Three kinds of bad input, matching how the protocol says a receiver treats
them:

- *bad messages* (:func:`malformed_payloads`, :func:`malformed_frames`):
  correctly framed, but the payload is not valid JSON, has an unknown or
  missing tag, a field of the wrong type or out of range, or a required
  field missing.  The shim answers each with an ``Error`` and keeps reading.
- *stream breakers* (:func:`over_cap_frames`, :func:`truncated_frames`): a
  length over the 1 MiB cap, or a stream that ends inside a frame.  The
  receiver reports the error and closes the stream.
- *cap-sized frames* (:func:`cap_sized_frames`): exactly 1 MiB, still valid.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec
from hypothesis import strategies as st

from .. import protocol as p
from ..framing import frame

T = TypeVar("T")

MAX_U64: Final = 2**64 - 1
_I64: Final = 2**63
_HEADER: Final = struct.Struct(">I")

CAP_PING_PAYLOAD_SIZE: Final = p.MAX_FRAME_BYTES


def texts(max_size: int = 64) -> st.SearchStrategy[str]:
    """Any text JSON can carry (everything but lone surrogates)."""
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


# ---------------------------------------------------------------------------
# Valid messages, derived from the Structs
# ---------------------------------------------------------------------------


def _for_type(tp: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    match tp:
        case msgspec.inspect.StrType():
            return texts()
        case msgspec.inspect.IntType(ge=ge, le=le):
            low = -_I64 if ge is None else ge
            high = (MAX_U64 if ge is not None and ge >= 0 else _I64 - 1) if le is None else le
            return st.integers(low, high)
        case msgspec.inspect.NoneType():
            return st.none()
        case msgspec.inspect.EnumType(cls=cls):
            return st.sampled_from(list(cls))
        case msgspec.inspect.UnionType(types=types):
            return st.one_of([_for_type(t) for t in types])
    raise NotImplementedError(f"no strategy for protocol field type {tp!r}")


def messages_of(cls: type[T]) -> st.SearchStrategy[T]:
    """Every valid instance of one protocol Struct ``cls``, within its constraints."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: _for_type(f.type) for f in info.fields}
    return st.builds(cls, **fields)


def commands() -> st.SearchStrategy[p.AnyCommand]:
    """Every Command, with every field drawn over its whole valid range."""
    return st.one_of([messages_of(cls) for cls in p.COMMAND_TYPES])  # type: ignore[arg-type]


def events() -> st.SearchStrategy[p.AnyEvent]:
    """Every Event, with every field drawn over its whole valid range."""
    return st.one_of([messages_of(cls) for cls in p.EVENT_TYPES])  # type: ignore[arg-type]


def payloads(messages: st.SearchStrategy[p.Command | p.Event]) -> st.SearchStrategy[bytes]:
    """The JSON payloads of ``messages`` (no length prefix)."""
    return messages.map(p.encode)


def framed(payload_strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Each payload with its 4-byte big-endian length prefix."""
    return payload_strategy.map(frame)


def command_frames() -> st.SearchStrategy[bytes]:
    """Complete, valid frames carrying one Command each."""
    return framed(payloads(commands()))


def event_frames() -> st.SearchStrategy[bytes]:
    """Complete, valid frames carrying one Event each."""
    return framed(payloads(events()))


# ---------------------------------------------------------------------------
# Bad messages: framed correctly, not a valid message
# ---------------------------------------------------------------------------

_JSON_SCALARS: Final = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), texts(16)
)
_JSON_VALUES: Final = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(8), inner, max_size=3),
    max_leaves=6,
)


def bad_json_payloads() -> st.SearchStrategy[bytes]:
    """Payloads that are not one JSON document: cut short, garbage, not UTF-8, empty."""
    valid = payloads(commands())
    return st.one_of(
        st.just(b""),
        st.sampled_from(
            [
                b"{",
                b"}",
                b"{'cmd': 'Ping'}",
                b'{"cmd":"Ping"',
                b'{"cmd":"Ping"}}',
                b'{"cmd":"Ping"} {"cmd":"Ping"}',
                b'{"cmd":Ping}',
                b'{"cmd":"Ping",}',
                b"NaN",
                b'{"cmd":"Ping","x":NaN}',
                b'\xef\xbb\xbf{"cmd":"Ping"}',
                b'{"cmd":"\\ud800"}',
                b"[" * 100_000,  # nested too deeply for any decoder, and unclosed
                b'{"cmd":' * 50_000,
            ]
        ),
        valid.map(lambda b: b[: len(b) // 2]),
        valid.map(lambda b: b + b"x"),
        st.binary(min_size=1, max_size=32).filter(_not_json),
        st.binary(min_size=1, max_size=8).map(lambda b: b"\xff" + b),
    )


def _not_json(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return True
    return False


def non_object_payloads() -> st.SearchStrategy[bytes]:
    """Valid JSON that is not an object (a message is always an object)."""
    deep = b"[" * 10_000 + b"]" * 10_000
    encoded = st.one_of(_JSON_SCALARS, st.lists(_JSON_VALUES, max_size=3)).map(msgspec.json.encode)
    return st.one_of(encoded, st.just(deep))


def _tags(tag_field: str) -> list[str]:
    types = p.COMMAND_TYPES if tag_field == "cmd" else p.EVENT_TYPES
    return [cls.__name__ for cls in types]


def unknown_tag_payloads(tag_field: str = "cmd") -> st.SearchStrategy[bytes]:
    """Objects whose tag is missing, not a string, or not a known variant."""
    known = set(_tags(tag_field))
    unknown_names = st.one_of(
        texts(24),
        st.sampled_from(sorted(known)).map(str.lower),
        st.sampled_from(sorted(known)).map(lambda t: t + " "),
        st.sampled_from(_tags("event" if tag_field == "cmd" else "cmd")),
    ).filter(lambda name: name not in known)
    extra = st.dictionaries(texts(8).filter(lambda k: k != tag_field), _JSON_VALUES, max_size=3)
    with_name = st.tuples(unknown_names, extra).map(lambda t: {**t[1], tag_field: t[0]})
    wrong_kind = st.tuples(_JSON_VALUES.filter(lambda v: not isinstance(v, str)), extra).map(
        lambda t: {**t[1], tag_field: t[0]}
    )
    return st.one_of(with_name, wrong_kind, extra).map(msgspec.json.encode)


def _members(tp: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, ...]:
    return tp.types if isinstance(tp, msgspec.inspect.UnionType) else (tp,)


def _wrong_values(tp: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """JSON values that a field of type ``tp`` must reject.

    Floats are always wrong (no field is a float, and msgspec refuses ``3.0``
    for an int); so are booleans, arrays and objects.
    """
    members = _members(tp)
    kinds = {type(t) for t in members}
    options: list[st.SearchStrategy[Any]] = [
        st.lists(_JSON_SCALARS, max_size=2),
        st.dictionaries(texts(4), _JSON_SCALARS, max_size=2),
        st.booleans(),
        st.floats(allow_nan=False, allow_infinity=False),
    ]
    if msgspec.inspect.NoneType not in kinds:
        options.append(st.none())
    if not kinds & {msgspec.inspect.StrType, msgspec.inspect.EnumType}:
        options.append(texts(8))
    if msgspec.inspect.StrType not in kinds and msgspec.inspect.IntType not in kinds:
        options.append(st.integers(-(2**70), 2**70))
    for t in members:
        if isinstance(t, msgspec.inspect.IntType):
            if t.ge is not None:
                options.append(st.integers(t.ge - 2**40, t.ge - 1))
            if t.le is not None:
                options.append(st.integers(t.le + 1, t.le + 2**40))
        elif isinstance(t, msgspec.inspect.EnumType):
            options.append(texts(16).filter(_not_in({m.value for m in t.cls})))
    return st.one_of(options)


def _not_in(values: set[Any]) -> Callable[[str], bool]:
    return lambda text: text not in values


def _spoilt(cls: type[p.Command] | type[p.Event]) -> st.SearchStrategy[dict[str, Any]] | None:
    """``cls`` as a JSON object with one field of a wrong type, out of range or
    (when required) left out; ``None`` for a variant without fields."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    if not info.fields:
        return None
    fields = info.fields
    valid = messages_of(cls).map(msgspec.to_builtins)

    @st.composite
    def spoil(draw: st.DrawFn) -> dict[str, Any]:
        obj: dict[str, Any] = dict(draw(valid))
        field = draw(st.sampled_from(fields))
        if field.required and draw(st.booleans()):
            del obj[field.encode_name]
        else:
            obj[field.encode_name] = draw(_wrong_values(field.type))
        return obj

    return spoil()


def wrong_type_payloads(tag_field: str = "cmd") -> st.SearchStrategy[bytes]:
    """A known variant with one field of the wrong type, out of range, or missing."""
    types = p.COMMAND_TYPES if tag_field == "cmd" else p.EVENT_TYPES
    spoilt = [s for s in map(_spoilt, types) if s is not None]
    return st.one_of(spoilt).map(msgspec.json.encode)


def malformed_payloads(tag_field: str = "cmd") -> st.SearchStrategy[bytes]:
    """Every kind of bad message, for Commands (``cmd``) or Events (``event``)."""
    return st.one_of(
        bad_json_payloads(),
        non_object_payloads(),
        unknown_tag_payloads(tag_field),
        wrong_type_payloads(tag_field),
    )


def malformed_frames(tag_field: str = "cmd") -> st.SearchStrategy[bytes]:
    """Correctly framed bad messages: the stream stays usable after each."""
    return framed(malformed_payloads(tag_field))


# ---------------------------------------------------------------------------
# Stream breakers and the cap
# ---------------------------------------------------------------------------


def over_cap_frames() -> st.SearchStrategy[bytes]:
    """A length prefix over the 1 MiB cap (then a few bytes): the stream is lost."""
    lengths = st.one_of(
        st.just(p.MAX_FRAME_BYTES + 1), st.integers(p.MAX_FRAME_BYTES + 1, 2**32 - 1)
    )
    return st.tuples(lengths, st.binary(max_size=16)).map(lambda t: _HEADER.pack(t[0]) + t[1])


def truncated_frames(
    frames: st.SearchStrategy[bytes] | None = None,
) -> st.SearchStrategy[bytes]:
    """A frame cut short (inside the header or the payload), then end of stream."""
    source = command_frames() if frames is None else frames
    return st.tuples(source, st.integers(1, 2**31)).map(
        lambda t: t[0][: 1 + t[1] % (len(t[0]) - 1)]
    )


def over_cap_header(extra: bytes = b"{") -> bytes:
    """A length prefix one byte over the cap, and ``extra`` (not the whole frame)."""
    return _HEADER.pack(p.MAX_FRAME_BYTES + 1) + extra


def padded_payload(message: p.Command | p.Event, size: int) -> bytes:
    """``message`` as JSON padded with trailing spaces to exactly ``size`` bytes."""
    data = p.encode(message)
    if len(data) > size:
        raise ValueError(f"{message!r} is longer than {size} bytes")
    return data + b" " * (size - len(data))


class CapFrame(enum.Enum):
    """Which cap-sized frame :func:`cap_sized_frames` produced."""

    PING_AT_CAP = "ping_at_cap"
    """A ``Ping`` padded to exactly the cap: valid, answered with ``Pong``."""
    GARBAGE_AT_CAP = "garbage_at_cap"
    """Exactly the cap of non-JSON: a bad message, answered with ``Error``."""
    ONE_OVER_CAP = "one_over_cap"
    """One byte over: the stream is lost."""


def cap_frame(kind: CapFrame) -> bytes:
    """The frame of one :class:`CapFrame` kind (1 MiB and up: built, not drawn)."""
    if kind is CapFrame.PING_AT_CAP:
        return frame(padded_payload(p.Ping(), p.MAX_FRAME_BYTES))
    if kind is CapFrame.GARBAGE_AT_CAP:
        return frame(b"x" * p.MAX_FRAME_BYTES)
    return _HEADER.pack(p.MAX_FRAME_BYTES + 1) + padded_payload(p.Ping(), p.MAX_FRAME_BYTES + 1)


def cap_sized_frames() -> st.SearchStrategy[tuple[CapFrame, bytes]]:
    """Frames at and just over the 1 MiB cap, with their kind."""
    return st.sampled_from(list(CapFrame)).map(lambda k: (k, cap_frame(k)))
