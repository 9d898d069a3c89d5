"""The wire protocol byte for byte: golden encodings, input rules, bad input.

Every golden string below is what batty's serde writes for the message
(``shared/reference/protocol.md``): field order, tag, and ``null`` versus
left out.  Each is checked in both directions.
"""

from __future__ import annotations

import typing

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_codex_shim import protocol as p

# ---------------------------------------------------------------------------
# Golden encodings: (message, exact bytes)
# ---------------------------------------------------------------------------

COMMAND_GOLDENS: list[tuple[p.Command, bytes]] = [
    (
        p.SendMessage(sender="manager", body="Fix the bug", message_id="msg-1"),
        b'{"cmd":"SendMessage","from":"manager","body":"Fix the bug","message_id":"msg-1"}',
    ),
    (
        p.SendMessage(sender="manager", body="Fix the bug"),
        b'{"cmd":"SendMessage","from":"manager","body":"Fix the bug"}',
    ),
    (p.CaptureScreen(last_n_lines=10), b'{"cmd":"CaptureScreen","last_n_lines":10}'),
    (p.CaptureScreen(last_n_lines=0), b'{"cmd":"CaptureScreen","last_n_lines":0}'),
    (p.CaptureScreen(), b'{"cmd":"CaptureScreen","last_n_lines":null}'),
    (p.GetState(), b'{"cmd":"GetState"}'),
    (p.Resize(rows=50, cols=220), b'{"cmd":"Resize","rows":50,"cols":220}'),
    (p.Resize(rows=0, cols=65535), b'{"cmd":"Resize","rows":0,"cols":65535}'),
    (
        p.Shutdown(timeout_secs=30, reason=p.ShutdownReason.RESTART_HANDOFF),
        b'{"cmd":"Shutdown","timeout_secs":30,"reason":"restart_handoff"}',
    ),
    (
        p.Shutdown(timeout_secs=0),
        b'{"cmd":"Shutdown","timeout_secs":0,"reason":"requested"}',
    ),
    (
        p.Shutdown(timeout_secs=5, reason=p.ShutdownReason.CONTEXT_EXHAUSTED),
        b'{"cmd":"Shutdown","timeout_secs":5,"reason":"context_exhausted"}',
    ),
    (
        p.Shutdown(timeout_secs=5, reason=p.ShutdownReason.TOPOLOGY_CHANGE),
        b'{"cmd":"Shutdown","timeout_secs":5,"reason":"topology_change"}',
    ),
    (
        p.Shutdown(timeout_secs=5, reason=p.ShutdownReason.DAEMON_STOP),
        b'{"cmd":"Shutdown","timeout_secs":5,"reason":"daemon_stop"}',
    ),
    (p.Kill(), b'{"cmd":"Kill"}'),
    (p.Ping(), b'{"cmd":"Ping"}'),
]

EVENT_GOLDENS: list[tuple[p.Event, bytes]] = [
    (p.Ready(), b'{"event":"Ready"}'),
    (
        p.StateChanged(from_state=p.ShimState.IDLE, to=p.ShimState.WORKING, summary=""),
        b'{"event":"StateChanged","from":"idle","to":"working","summary":""}',
    ),
    (
        p.StateChanged(
            from_state=p.ShimState.WORKING, to=p.ShimState.CONTEXT_EXHAUSTED, summary="a\nb"
        ),
        b'{"event":"StateChanged","from":"working","to":"context_exhausted","summary":"a\\nb"}',
    ),
    (
        p.StateChanged(from_state=p.ShimState.STARTING, to=p.ShimState.DEAD, summary="x"),
        b'{"event":"StateChanged","from":"starting","to":"dead","summary":"x"}',
    ),
    (p.MessageDelivered(id="msg-1"), b'{"event":"MessageDelivered","id":"msg-1"}'),
    (
        p.Completion(message_id="msg-1", response="Hello!", last_lines="Hello!"),
        b'{"event":"Completion","message_id":"msg-1","response":"Hello!","last_lines":"Hello!"}',
    ),
    (
        p.Completion(response="", last_lines=""),
        b'{"event":"Completion","response":"","last_lines":""}',
    ),
    (
        p.Died(exit_code=137, last_lines="bye"),
        b'{"event":"Died","exit_code":137,"last_lines":"bye"}',
    ),
    (
        p.Died(exit_code=None, last_lines=""),
        b'{"event":"Died","exit_code":null,"last_lines":""}',
    ),
    (
        p.Died(exit_code=-9, last_lines=""),
        b'{"event":"Died","exit_code":-9,"last_lines":""}',
    ),
    (
        p.ContextExhausted(message="full", last_lines="l1\nl2"),
        b'{"event":"ContextExhausted","message":"full","last_lines":"l1\\nl2"}',
    ),
    (
        p.ContextWarning(
            model="gpt-5.5",
            output_bytes=1,
            uptime_secs=2,
            input_tokens=3,
            cached_input_tokens=4,
            cache_creation_input_tokens=5,
            cache_read_input_tokens=6,
            output_tokens=7,
            reasoning_output_tokens=8,
            used_tokens=9,
            context_limit_tokens=10,
            usage_pct=90,
        ),
        b'{"event":"ContextWarning","model":"gpt-5.5","output_bytes":1,"uptime_secs":2,'
        b'"input_tokens":3,"cached_input_tokens":4,"cache_creation_input_tokens":5,'
        b'"cache_read_input_tokens":6,"output_tokens":7,"reasoning_output_tokens":8,'
        b'"used_tokens":9,"context_limit_tokens":10,"usage_pct":90}',
    ),
    (
        p.ContextWarning(
            model=None,
            output_bytes=0,
            uptime_secs=0,
            input_tokens=0,
            cached_input_tokens=0,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=0,
            output_tokens=0,
            reasoning_output_tokens=0,
            used_tokens=0,
            context_limit_tokens=0,
            usage_pct=255,
        ),
        b'{"event":"ContextWarning","model":null,"output_bytes":0,"uptime_secs":0,'
        b'"input_tokens":0,"cached_input_tokens":0,"cache_creation_input_tokens":0,'
        b'"cache_read_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,'
        b'"used_tokens":0,"context_limit_tokens":0,"usage_pct":255}',
    ),
    (
        p.ContextApproaching(message="getting full", input_tokens=10, output_tokens=2),
        b'{"event":"ContextApproaching","message":"getting full","input_tokens":10,'
        b'"output_tokens":2}',
    ),
    (
        p.QuotaBlocked(
            message="usage limit reached",
            retry_at_epoch_secs=1776344040,
            retry_at_label="2026-04-16 12:54",
        ),
        b'{"event":"QuotaBlocked","message":"usage limit reached",'
        b'"retry_at_epoch_secs":1776344040,"retry_at_label":"2026-04-16 12:54"}',
    ),
    (
        p.QuotaBlocked(message="usage limit reached"),
        b'{"event":"QuotaBlocked","message":"usage limit reached"}',
    ),
    (
        p.QuotaBlocked(message="m", retry_at_epoch_secs=5),
        b'{"event":"QuotaBlocked","message":"m","retry_at_epoch_secs":5}',
    ),
    (
        p.QuotaBlocked(message="m", retry_at_label="soon"),
        b'{"event":"QuotaBlocked","message":"m","retry_at_label":"soon"}',
    ),
    (p.AuthRequired(message="log in"), b'{"event":"AuthRequired","message":"log in"}'),
    (
        p.ScreenCapture(content="a\nb", cursor_row=0, cursor_col=0),
        b'{"event":"ScreenCapture","content":"a\\nb","cursor_row":0,"cursor_col":0}',
    ),
    (
        p.State(state=p.ShimState.CONTEXT_EXHAUSTED, since_secs=12),
        b'{"event":"State","state":"context_exhausted","since_secs":12}',
    ),
    (
        p.SessionStats(output_bytes=120, uptime_secs=10),
        b'{"event":"SessionStats","output_bytes":120,"uptime_secs":10,"input_tokens":0,'
        b'"output_tokens":0}',
    ),
    (
        p.SessionStats(output_bytes=120, uptime_secs=10, context_usage_pct=None),
        b'{"event":"SessionStats","output_bytes":120,"uptime_secs":10,"input_tokens":0,'
        b'"output_tokens":0}',
    ),
    (
        p.SessionStats(
            output_bytes=1, uptime_secs=2, input_tokens=3, output_tokens=4, context_usage_pct=0
        ),
        b'{"event":"SessionStats","output_bytes":1,"uptime_secs":2,"input_tokens":3,'
        b'"output_tokens":4,"context_usage_pct":0}',
    ),
    (p.Pong(), b'{"event":"Pong"}'),
    (
        p.Warning(message="message queued while agent working (depth: 1)"),
        b'{"event":"Warning","message":"message queued while agent working (depth: 1)",'
        b'"idle_secs":null}',
    ),
    (
        p.Warning(message="stalled", idle_secs=30),
        b'{"event":"Warning","message":"stalled","idle_secs":30}',
    ),
    (
        p.DeliveryFailed(id="msg-2", reason="queue full"),
        b'{"event":"DeliveryFailed","id":"msg-2","reason":"queue full"}',
    ),
    (
        p.Error(command="SendMessage", reason="agent in dead state, cannot accept message"),
        b'{"event":"Error","command":"SendMessage",'
        b'"reason":"agent in dead state, cannot accept message"}',
    ),
    # serde_json's string escaping: short escapes, \u00XX for other controls,
    # everything else (DEL, '/', non-ASCII, U+2028) written raw as UTF-8.
    (
        p.Error(command="x", reason='q"b\\n\n\r\t\b\f\x01\x1f\x7f/\u00e9\u2028\U0001f600'),
        b'{"event":"Error","command":"x","reason":"q\\"b\\\\n\\n\\r\\t\\b\\f\\u0001\\u001f'
        + "\x7f/\u00e9\u2028\U0001f600".encode()
        + b'"}',
    ),
]


def _ids(goldens: list[tuple[p.Command, bytes]] | list[tuple[p.Event, bytes]]) -> list[str]:
    return [g.decode()[:60] for _, g in goldens]


def test_goldens_cover_every_variant() -> None:
    assert set(typing.get_args(p.AnyCommand)) == set(p.COMMAND_TYPES)
    assert set(typing.get_args(p.AnyEvent)) == set(p.EVENT_TYPES)
    assert {type(m) for m, _ in COMMAND_GOLDENS} == set(p.COMMAND_TYPES)
    assert {type(m) for m, _ in EVENT_GOLDENS} == set(p.EVENT_TYPES)


@pytest.mark.parametrize(("message", "golden"), COMMAND_GOLDENS, ids=_ids(COMMAND_GOLDENS))
def test_command_golden(message: p.Command, golden: bytes) -> None:
    assert p.encode(message) == golden
    assert p.decode_command(golden) == message


@pytest.mark.parametrize(("message", "golden"), EVENT_GOLDENS, ids=_ids(EVENT_GOLDENS))
def test_event_golden(message: p.Event, golden: bytes) -> None:
    assert p.encode(message) == golden
    assert p.decode_event(golden) == message


def test_tags_are_class_names() -> None:
    for cls, tag_field in [
        *((c, "cmd") for c in p.COMMAND_TYPES),
        *((e, "event") for e in p.EVENT_TYPES),
    ]:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        assert info.tag_field == tag_field
        assert info.tag == cls.__name__


# ---------------------------------------------------------------------------
# The examples in protocol.md, verbatim
# ---------------------------------------------------------------------------

DOC_COMMAND_EXAMPLES: list[tuple[bytes, p.Command]] = [
    (
        b'{"cmd":"SendMessage","from":"manager","body":"Fix the bug","message_id":"msg-1"}',
        p.SendMessage(sender="manager", body="Fix the bug", message_id="msg-1"),
    ),
    (b'{"cmd":"CaptureScreen","last_n_lines":10}', p.CaptureScreen(last_n_lines=10)),
    (b'{"cmd":"GetState"}', p.GetState()),
    (b'{"cmd":"Resize","rows":50,"cols":220}', p.Resize(rows=50, cols=220)),
    (
        b'{"cmd":"Shutdown","timeout_secs":30,"reason":"restart_handoff"}',
        p.Shutdown(timeout_secs=30, reason=p.ShutdownReason.RESTART_HANDOFF),
    ),
    (b'{"cmd":"Kill"}', p.Kill()),
    (b'{"cmd":"Ping"}', p.Ping()),
]

DOC_EVENT_EXAMPLES: list[tuple[bytes, p.Event]] = [
    (b'{"event":"Ready"}', p.Ready()),
    (
        b'{"event":"StateChanged","from":"idle","to":"working","summary":""}',
        p.StateChanged(from_state=p.ShimState.IDLE, to=p.ShimState.WORKING, summary=""),
    ),
    (b'{"event":"MessageDelivered","id":"msg-1"}', p.MessageDelivered(id="msg-1")),
    (
        b'{"event":"Completion","message_id":"msg-1","response":"Hello!","last_lines":"Hello!"}',
        p.Completion(message_id="msg-1", response="Hello!", last_lines="Hello!"),
    ),
    (
        b'{"event":"Completion","response":"","last_lines":""}',
        p.Completion(response="", last_lines=""),
    ),
    (
        b'{"event":"Warning","message":"message queued while agent working (depth: 1)",'
        b'"idle_secs":null}',
        p.Warning(message="message queued while agent working (depth: 1)", idle_secs=None),
    ),
    (
        b'{"event":"SessionStats","output_bytes":120,"uptime_secs":10,"input_tokens":0,'
        b'"output_tokens":0}',
        p.SessionStats(output_bytes=120, uptime_secs=10, input_tokens=0, output_tokens=0),
    ),
    (
        b'{"event":"QuotaBlocked","message":"usage limit reached",'
        b'"retry_at_epoch_secs":1776344040,"retry_at_label":"2026-04-16 12:54"}',
        p.QuotaBlocked(
            message="usage limit reached",
            retry_at_epoch_secs=1776344040,
            retry_at_label="2026-04-16 12:54",
        ),
    ),
    (
        b'{"event":"Error","command":"SendMessage",'
        b'"reason":"agent in dead state, cannot accept message"}',
        p.Error(command="SendMessage", reason="agent in dead state, cannot accept message"),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), DOC_COMMAND_EXAMPLES)
def test_protocol_md_command_examples(raw: bytes, expected: p.Command) -> None:
    assert p.decode_command(raw) == expected
    assert p.encode(expected) == raw  # the doc examples are canonical serde output


@pytest.mark.parametrize(("raw", "expected"), DOC_EVENT_EXAMPLES)
def test_protocol_md_event_examples(raw: bytes, expected: p.Event) -> None:
    assert p.decode_event(raw) == expected
    assert p.encode(expected) == raw


# ---------------------------------------------------------------------------
# Input rules: missing optional fields, defaults, nulls, unknown fields
# ---------------------------------------------------------------------------

LENIENT_COMMANDS: list[tuple[bytes, p.Command]] = [
    # Shutdown.reason defaults to "requested".
    (b'{"cmd":"Shutdown","timeout_secs":7}', p.Shutdown(timeout_secs=7)),
    # Missing / null optional fields mean "no value".
    (b'{"cmd":"CaptureScreen"}', p.CaptureScreen(last_n_lines=None)),
    (
        b'{"cmd":"SendMessage","from":"a","body":"b","message_id":null}',
        p.SendMessage(sender="a", body="b"),
    ),
    # Unknown extra fields are ignored, wherever they sit.
    (b'{"extra":[1,{"x":null}],"cmd":"Ping","more":"y"}', p.Ping()),
    (
        b'{"cmd":"Resize","rows":1,"cols":2,"pixels":{"w":3}}',
        p.Resize(rows=1, cols=2),
    ),
    # Key order does not matter on input; the tag may come last.
    (
        b'{"body":"b","message_id":"m","from":"a","cmd":"SendMessage"}',
        p.SendMessage(sender="a", body="b", message_id="m"),
    ),
    # Whitespace is fine.
    (b' {\n "cmd" : "Kill" \n} ', p.Kill()),
]

LENIENT_EVENTS: list[tuple[bytes, p.Event]] = [
    # SessionStats tokens default to 0; context_usage_pct missing or null is "unknown".
    (
        b'{"event":"SessionStats","output_bytes":1,"uptime_secs":2}',
        p.SessionStats(output_bytes=1, uptime_secs=2, input_tokens=0, output_tokens=0),
    ),
    (
        b'{"event":"SessionStats","output_bytes":1,"uptime_secs":2,"context_usage_pct":null}',
        p.SessionStats(output_bytes=1, uptime_secs=2),
    ),
    (
        b'{"event":"Completion","message_id":null,"response":"r","last_lines":"l"}',
        p.Completion(response="r", last_lines="l"),
    ),
    (
        b'{"event":"QuotaBlocked","message":"m","retry_at_epoch_secs":null,"retry_at_label":null}',
        p.QuotaBlocked(message="m"),
    ),
    (b'{"event":"Warning","message":"m"}', p.Warning(message="m", idle_secs=None)),
    (b'{"event":"Pong","unexpected":true}', p.Pong()),
    (
        b'{"event":"MessageDelivered","id":"x","extra":{"nested":[1,2,3]}}',
        p.MessageDelivered(id="x"),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), LENIENT_COMMANDS)
def test_lenient_command_input(raw: bytes, expected: p.Command) -> None:
    assert p.decode_command(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), LENIENT_EVENTS)
def test_lenient_event_input(raw: bytes, expected: p.Event) -> None:
    assert p.decode_event(raw) == expected


def test_session_stats_unknown_pct_is_omitted_after_decode_of_null() -> None:
    decoded = p.decode_event(
        b'{"event":"SessionStats","output_bytes":1,"uptime_secs":2,"context_usage_pct":null}'
    )
    assert p.encode(decoded) == (
        b'{"event":"SessionStats","output_bytes":1,"uptime_secs":2,"input_tokens":0,'
        b'"output_tokens":0}'
    )


def test_died_without_exit_code_means_none() -> None:
    assert p.decode_event(b'{"event":"Died","last_lines":""}') == p.Died(
        exit_code=None, last_lines=""
    )


def test_context_warning_without_model_means_none() -> None:
    raw = (
        b'{"event":"ContextWarning","output_bytes":0,"uptime_secs":0,'
        b'"input_tokens":0,"cached_input_tokens":0,"cache_creation_input_tokens":0,'
        b'"cache_read_input_tokens":0,"output_tokens":0,"reasoning_output_tokens":0,'
        b'"used_tokens":0,"context_limit_tokens":0,"usage_pct":0}'
    )
    decoded = p.decode_event(raw)
    assert isinstance(decoded, p.ContextWarning)
    assert decoded.model is None


# ---------------------------------------------------------------------------
# Bad input: BadMessage naming the claimed tag and msgspec's path
# ---------------------------------------------------------------------------

BAD_COMMANDS: list[tuple[bytes, str, tuple[str, ...]]] = [
    # (payload, expected .command, fragments the reason must contain)
    (b'{"cmd":"Ping"', "unknown", ("truncated",)),
    (b"{cmd: Ping}", "unknown", ("malformed",)),
    (b"", "unknown", ("truncated",)),
    (b"\xff\xfe", "unknown", ("malformed",)),
    (b'{"cmd":"Ping"} trailing', "unknown", ("malformed",)),
    (b"[1, 2]", "unknown", ("object", "array")),
    (b'"SendMessage"', "unknown", ("object", "str")),
    (b"42", "unknown", ("object",)),
    (b"null", "unknown", ("object",)),
    (b"{}", "unknown", ("cmd",)),
    (b'{"cmd":5}', "unknown", ("$.cmd",)),
    (b'{"cmd":null}', "unknown", ("$.cmd",)),
    (b'{"cmd":"Explode"}', "Explode", ("$.cmd", "Explode")),
    (b'{"cmd":"Pong"}', "Pong", ("$.cmd",)),  # an Event tag is not a Command
    (b'{"cmd":"Resize","rows":65536,"cols":1}', "Resize", ("$.rows",)),
    (b'{"cmd":"Resize","rows":1,"cols":-1}', "Resize", ("$.cols",)),
    (b'{"cmd":"Resize","rows":"50","cols":1}', "Resize", ("$.rows", "str")),
    (b'{"cmd":"Resize","rows":1.5,"cols":1}', "Resize", ("$.rows", "float")),
    (b'{"cmd":"Resize","rows":true,"cols":1}', "Resize", ("$.rows", "bool")),
    (b'{"cmd":"Resize","rows":1}', "Resize", ("cols",)),
    (b'{"cmd":"Shutdown","timeout_secs":-1}', "Shutdown", ("$.timeout_secs",)),
    (b'{"cmd":"Shutdown"}', "Shutdown", ("timeout_secs",)),
    (b'{"cmd":"Shutdown","timeout_secs":1,"reason":"bored"}', "Shutdown", ("$.reason",)),
    (b'{"cmd":"Shutdown","timeout_secs":1,"reason":null}', "Shutdown", ("$.reason",)),
    (b'{"cmd":"CaptureScreen","last_n_lines":-3}', "CaptureScreen", ("$.last_n_lines",)),
    (b'{"cmd":"CaptureScreen","last_n_lines":"10"}', "CaptureScreen", ("$.last_n_lines",)),
    (b'{"cmd":"SendMessage","body":"x"}', "SendMessage", ("from",)),
    (b'{"cmd":"SendMessage","from":"a"}', "SendMessage", ("body",)),
    (b'{"cmd":"SendMessage","from":"a","body":7}', "SendMessage", ("$.body",)),
    (
        b'{"cmd":"SendMessage","from":"a","body":"b","message_id":3}',
        "SendMessage",
        ("$.message_id",),
    ),
    (b'{"event":"Ping"}', "unknown", ("cmd",)),
]

BAD_EVENTS: list[tuple[bytes, str, tuple[str, ...]]] = [
    (b'{"event":', "unknown", ("truncated",)),
    (b"[]", "unknown", ("object",)),
    (b'{"event":"Ping"}', "Ping", ("$.event",)),
    (b'{"event":"SessionStats","output_bytes":-1,"uptime_secs":0}', "SessionStats", ("$.",)),
    (
        b'{"event":"SessionStats","output_bytes":1,"uptime_secs":0,"context_usage_pct":256}',
        "SessionStats",
        ("$.context_usage_pct",),
    ),
    (
        b'{"event":"ScreenCapture","content":"","cursor_row":65536,"cursor_col":0}',
        "ScreenCapture",
        ("$.cursor_row",),
    ),
    (
        b'{"event":"StateChanged","from":"asleep","to":"idle","summary":""}',
        "StateChanged",
        ("$.from",),
    ),
    (b'{"event":"MessageDelivered"}', "MessageDelivered", ("id",)),
    (b'{"event":"Completion","response":""}', "Completion", ("last_lines",)),
    (b'{"cmd":"Ping"}', "unknown", ("event",)),
]


@pytest.mark.parametrize(("raw", "command", "fragments"), BAD_COMMANDS)
def test_bad_command(raw: bytes, command: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(p.BadMessage) as info:
        p.decode_command(raw)
    assert info.value.command == command
    for fragment in fragments:
        assert fragment in info.value.reason
    assert str(info.value) == f"{command}: {info.value.reason}"


@pytest.mark.parametrize(("raw", "event", "fragments"), BAD_EVENTS)
def test_bad_event(raw: bytes, event: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(p.BadMessage) as info:
        p.decode_event(raw)
    assert info.value.command == event
    for fragment in fragments:
        assert fragment in info.value.reason


def test_bad_message_path_is_exact() -> None:
    with pytest.raises(p.BadMessage) as info:
        p.decode_command(b'{"cmd":"Resize","rows":65536,"cols":220}')
    assert info.value.reason == "Expected `int` <= 65535 - at `$.rows`"


def test_max_frame_bytes_is_one_mebibyte() -> None:
    assert p.MAX_FRAME_BYTES == 1 << 20


# ---------------------------------------------------------------------------
# Round-trip property over every variant
# ---------------------------------------------------------------------------

U16 = st.integers(0, 65535)
U64 = st.integers(0, 2**64 - 1)
PCT = st.integers(0, 255)
TEXT = st.text()
OPT_TEXT = st.none() | TEXT
STATES = st.sampled_from(list(p.ShimState))

COMMANDS: st.SearchStrategy[p.Command] = st.one_of(
    st.builds(p.SendMessage, sender=TEXT, body=TEXT, message_id=OPT_TEXT),
    st.builds(p.CaptureScreen, last_n_lines=st.none() | U64),
    st.builds(p.GetState),
    st.builds(p.Resize, rows=U16, cols=U16),
    st.builds(p.Shutdown, timeout_secs=U64, reason=st.sampled_from(list(p.ShutdownReason))),
    st.builds(p.Kill),
    st.builds(p.Ping),
)

EVENTS: st.SearchStrategy[p.Event] = st.one_of(
    st.builds(p.Ready),
    st.builds(p.StateChanged, from_state=STATES, to=STATES, summary=TEXT),
    st.builds(p.MessageDelivered, id=TEXT),
    st.builds(p.Completion, message_id=OPT_TEXT, response=TEXT, last_lines=TEXT),
    st.builds(p.Died, exit_code=st.none() | st.integers(-(2**63), 2**64 - 1), last_lines=TEXT),
    st.builds(p.ContextExhausted, message=TEXT, last_lines=TEXT),
    st.builds(
        p.ContextWarning,
        model=OPT_TEXT,
        output_bytes=U64,
        uptime_secs=U64,
        input_tokens=U64,
        cached_input_tokens=U64,
        cache_creation_input_tokens=U64,
        cache_read_input_tokens=U64,
        output_tokens=U64,
        reasoning_output_tokens=U64,
        used_tokens=U64,
        context_limit_tokens=U64,
        usage_pct=PCT,
    ),
    st.builds(p.ContextApproaching, message=TEXT, input_tokens=U64, output_tokens=U64),
    st.builds(
        p.QuotaBlocked,
        message=TEXT,
        retry_at_epoch_secs=st.none() | U64,
        retry_at_label=OPT_TEXT,
    ),
    st.builds(p.AuthRequired, message=TEXT),
    st.builds(p.ScreenCapture, content=TEXT, cursor_row=U16, cursor_col=U16),
    st.builds(p.State, state=STATES, since_secs=U64),
    st.builds(
        p.SessionStats,
        output_bytes=U64,
        uptime_secs=U64,
        input_tokens=U64,
        output_tokens=U64,
        context_usage_pct=st.none() | st.just(msgspec.UNSET) | PCT,
    ),
    st.builds(p.Pong),
    st.builds(p.Warning, message=TEXT, idle_secs=st.none() | U64),
    st.builds(p.DeliveryFailed, id=TEXT, reason=TEXT),
    st.builds(p.Error, command=TEXT, reason=TEXT),
)


@settings(max_examples=300)
@given(COMMANDS)
def test_command_round_trip(command: p.Command) -> None:
    raw = p.encode(command)
    assert p.decode_command(raw) == command
    assert p.encode(p.decode_command(raw)) == raw
    assert raw.startswith(b'{"cmd":"' + type(command).__name__.encode() + b'"')


@settings(max_examples=500)
@given(EVENTS)
def test_event_round_trip(event: p.Event) -> None:
    raw = p.encode(event)
    assert p.decode_event(raw) == event
    assert p.encode(p.decode_event(raw)) == raw
    assert raw.startswith(b'{"event":"' + type(event).__name__.encode() + b'"')


@given(EVENTS)
def test_omitted_when_absent_fields_never_written_as_null(event: p.Event) -> None:
    raw = p.encode(event)
    for name in ("message_id", "retry_at_epoch_secs", "retry_at_label", "context_usage_pct"):
        assert f'"{name}":null'.encode() not in raw
    if isinstance(event, p.Warning):
        assert b'"idle_secs":' in raw
    if isinstance(event, p.SessionStats):
        assert b'"input_tokens":' in raw
        assert b'"output_tokens":' in raw


@given(COMMANDS)
def test_commands_are_not_events(command: p.Command) -> None:
    with pytest.raises(p.BadMessage):
        p.decode_event(p.encode(command))
