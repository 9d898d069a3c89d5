"""The JSON Schema generated from the protocol Structs, checked with a small validator."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given

from trio_codex_shim import protocol as p
from trio_codex_shim import schema
from trio_codex_shim.schema import UnsupportedSchema, validate
from trio_codex_shim.testing import strategies as S

COMMANDS = schema.command_schema()
EVENTS = schema.event_schema()
BOTH = schema.protocol_schema()

# The examples of shared/reference/protocol.md, as batty writes them.
DOC_COMMANDS = [
    b'{"cmd":"SendMessage","from":"manager","body":"Fix the bug","message_id":"msg-1"}',
    b'{"cmd":"CaptureScreen","last_n_lines":10}',
    b'{"cmd":"GetState"}',
    b'{"cmd":"Resize","rows":50,"cols":220}',
    b'{"cmd":"Shutdown","timeout_secs":30,"reason":"restart_handoff"}',
    b'{"cmd":"Kill"}',
    b'{"cmd":"Ping"}',
]
DOC_EVENTS = [
    b'{"event":"Ready"}',
    b'{"event":"StateChanged","from":"idle","to":"working","summary":""}',
    b'{"event":"MessageDelivered","id":"msg-1"}',
    b'{"event":"Completion","message_id":"msg-1","response":"Hello!","last_lines":"Hello!"}',
    b'{"event":"Completion","response":"","last_lines":""}',
    b'{"event":"Warning","message":"message queued while agent working (depth: 1)",'
    b'"idle_secs":null}',
    b'{"event":"SessionStats","output_bytes":120,"uptime_secs":10,"input_tokens":0,"output_tokens":0}',
    b'{"event":"QuotaBlocked","message":"usage limit reached","retry_at_epoch_secs":1776344040,'
    b'"retry_at_label":"2026-04-16 12:54"}',
    b'{"event":"Error","command":"SendMessage",'
    b'"reason":"agent in dead state, cannot accept message"}',
]


def decoded(payload: bytes) -> Any:
    return msgspec.json.decode(payload)


@pytest.mark.parametrize("payload", DOC_COMMANDS)
def test_documented_commands_are_valid(payload: bytes) -> None:
    assert validate(decoded(payload), COMMANDS) == []
    assert validate(decoded(payload), BOTH) == []
    assert validate(decoded(payload), EVENTS) != []


@pytest.mark.parametrize("payload", DOC_EVENTS)
def test_documented_events_are_valid(payload: bytes) -> None:
    assert validate(decoded(payload), EVENTS) == []
    assert validate(decoded(payload), BOTH) == []
    assert validate(decoded(payload), COMMANDS) != []


@given(S.commands())
def test_every_command_the_shim_accepts_is_schema_valid(cmd: p.AnyCommand) -> None:
    assert validate(decoded(p.encode(cmd)), COMMANDS) == []


@given(S.events())
def test_every_event_the_shim_sends_is_schema_valid(event: p.AnyEvent) -> None:
    assert validate(decoded(p.encode(event)), EVENTS) == []


@given(S.wrong_type_payloads("cmd") | S.unknown_tag_payloads("cmd"))
def test_schema_and_decoder_agree_on_bad_commands(payload: bytes) -> None:
    with pytest.raises(p.BadMessage):
        p.decode_command(payload)
    assert validate(decoded(payload), COMMANDS) != []


@given(S.wrong_type_payloads("event") | S.unknown_tag_payloads("event"))
def test_schema_and_decoder_agree_on_bad_events(payload: bytes) -> None:
    with pytest.raises(p.BadMessage):
        p.decode_event(payload)
    assert validate(decoded(payload), EVENTS) != []


def test_the_document_names_every_message_once() -> None:
    defs = BOTH["$defs"]
    names = {cls.__name__ for cls in (*p.COMMAND_TYPES, *p.EVENT_TYPES)}
    assert names | {"Command", "Event", "ShimState", "ShutdownReason"} == set(defs)
    assert defs["Command"]["discriminator"]["propertyName"] == "cmd"
    assert defs["Event"]["discriminator"]["propertyName"] == "event"
    assert msgspec.json.decode(schema.schema_json()) == BOTH


def test_errors_name_the_field() -> None:
    errors = validate({"cmd": "Resize", "rows": 70000, "cols": "wide"}, COMMANDS)
    assert errors == ["$.rows: 70000 is more than 65535", "$.cols: expected integer, got string"]
    assert validate({"cmd": "SendMessage", "body": "b"}, COMMANDS) == [
        "$: missing required field 'from'"
    ]
    assert validate({"cmd": "Nope"}, COMMANDS) == [
        "$.cmd: 'Nope' is not one of ['CaptureScreen', 'GetState', 'Kill', 'Ping', "
        "'Resize', 'SendMessage', 'Shutdown']"
    ]


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), (1.0, False), (True, False), (None, False), (-1, False), (2**64, None)],
)
def test_integers_follow_msgspec(value: object, ok: bool | None) -> None:
    # msgspec refuses 1.0 and true for an int field; the validator agrees, and
    # on the upper bound (whatever protocol.py sets) it agrees with msgspec.
    doc = {"cmd": "Shutdown", "timeout_secs": value}
    try:
        msgspec.json.decode(msgspec.json.encode(doc), type=p.AnyCommand)
    except msgspec.ValidationError:
        accepted = False
    else:
        accepted = True
    assert ok is None or accepted is ok
    assert (validate(doc, COMMANDS) == []) is accepted


def test_the_validator_refuses_what_it_does_not_implement() -> None:
    with pytest.raises(UnsupportedSchema, match="patternProperties"):
        validate({}, {"type": "object", "patternProperties": {}})
    with pytest.raises(UnsupportedSchema, match="only local"):
        validate({}, {"$ref": "https://example.com/x.json"})
    with pytest.raises(UnsupportedSchema, match="points nowhere"):
        validate({}, {"$ref": "#/$defs/Missing"})


def test_one_of_means_exactly_one() -> None:
    doc: dict[str, Any] = {"oneOf": [{"type": "integer"}, {"minimum": 0}]}
    assert validate(-1, doc) == []
    assert validate(1, doc) == ["$: matches 2 alternatives of oneOf, not exactly one"]
    assert validate("x", {"oneOf": [{"type": "integer"}]}) != []


def test_the_command_line_prints_each_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema.main([]) == 0
    assert msgspec.json.decode(capsys.readouterr().out) == BOTH
    assert schema.main(["--commands"]) == 0
    assert msgspec.json.decode(capsys.readouterr().out) == COMMANDS
    assert schema.main(["--events"]) == 0
    assert msgspec.json.decode(capsys.readouterr().out) == EVENTS
