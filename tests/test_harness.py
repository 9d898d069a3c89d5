"""The fuzzing harness: its strategies, its checker, and the stateful machine itself."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from trio_codex_shim import protocol as p
from trio_codex_shim.framing import FrameError, FrameReader
from trio_codex_shim.testing import strategies as S
from trio_codex_shim.testing.harness import (
    ProtocolChecker,
    ShimMachine,
    make_shim_machine,
)
from trio_codex_shim.testing.hypothesis_profiles import PROFILE_ENV, harness_settings

# ---------------------------------------------------------------------------
# The machine, against the real shim
# ---------------------------------------------------------------------------


def test_the_real_shim_keeps_every_promise() -> None:
    """The stateful harness with the active profile (``ci`` unless ``$PROFILE_ENV``)."""
    run_state_machine_as_test(ShimMachine, settings=harness_settings())


# A protocol-complete "shim" with one bug: it says it is working when it is
# idle.  The harness must notice.  (The lie comes in the answer a step waits
# for, so the failure shows at the same step on every replay.)
LYING_SHIM = """
import os, struct, sys
from trio_codex_shim import protocol as p
from trio_codex_shim.framing import frame

def send(event):
    data = frame(p.encode(event))
    while data:
        data = data[os.write(3, data):]

def read(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(3, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf

send(p.Ready())
while True:
    head = read(4)
    if not head:
        sys.exit(0)
    if len(head) < 4:
        sys.exit(3)
    (size,) = struct.unpack(">I", head)
    if size > p.MAX_FRAME_BYTES:
        send(p.Error(command="unknown", reason="bad message: frame too long"))
        sys.exit(3)
    body = read(size)
    if len(body) < size:
        sys.exit(3)
    try:
        cmd = p.decode_command(body)
    except p.BadMessage as exc:
        send(p.Error(command=exc.command, reason="bad message: " + exc.reason))
        continue
    if isinstance(cmd, p.Ping):
        send(p.Pong())
    elif isinstance(cmd, p.GetState):
        send(p.State(state=p.ShimState.WORKING, since_secs=0))
    elif isinstance(cmd, p.CaptureScreen):
        send(p.ScreenCapture(content="", cursor_row=0, cursor_col=0))
    elif isinstance(cmd, p.SendMessage):
        send(p.Completion(message_id=cmd.message_id, response="", last_lines=""))
    elif isinstance(cmd, (p.Kill, p.Shutdown)):
        sys.exit(0)
"""


def test_the_harness_catches_a_shim_that_breaks_a_promise(tmp_path: Path) -> None:
    script = tmp_path / "bad_shim.py"
    script.write_text(LYING_SHIM)
    machine = make_shim_machine(argv=(sys.executable, str(script)))
    quick = settings(
        harness_settings(max_examples=40, stateful_step_count=6),
        phases=[Phase.generate],  # the first failure is enough: no shrinking
        database=None,
        derandomize=True,  # the same examples every run: no flaky luck
    )
    with pytest.raises(AssertionError, match="State says working, but the state was idle"):
        run_state_machine_as_test(machine, settings=quick)


def test_the_profile_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "long")
    assert harness_settings().max_examples > 100
    monkeypatch.setenv(PROFILE_ENV, "nonsense")
    with pytest.raises(ValueError, match="expected one of"):
        harness_settings()


# ---------------------------------------------------------------------------
# The checker, on hand-written streams
# ---------------------------------------------------------------------------

IDLE, WORKING, DEAD = p.ShimState.IDLE, p.ShimState.WORKING, p.ShimState.DEAD


def checked(*events: p.Event, sent: tuple[str, ...] = ()) -> ProtocolChecker:
    checker = ProtocolChecker()
    for mid in sent:
        checker.note_sent(mid)
    for event in events:
        checker.feed(event)  # type: ignore[arg-type]
    return checker


def test_the_checker_accepts_a_good_stream() -> None:
    checker = checked(
        p.Ready(),
        p.StateChanged(from_state=IDLE, to=WORKING, summary=""),
        p.MessageDelivered(id="a"),
        p.State(state=WORKING, since_secs=1),
        p.StateChanged(from_state=WORKING, to=IDLE, summary="x"),
        p.Completion(message_id="a", response="x", last_lines="x"),
        p.DeliveryFailed(id="b", reason="queue full"),
        sent=("a", "b"),
    )
    assert checker.check_final() == []


@pytest.mark.parametrize(
    ("events", "complaint"),
    [
        ((p.Pong(),), "first event is Pong"),
        ((p.Ready(), p.Ready()), "second Ready"),
        (
            (p.Ready(), p.StateChanged(from_state=IDLE, to=p.ShimState.STARTING, summary="")),
            "illegal",
        ),
        (
            (p.Ready(), p.StateChanged(from_state=WORKING, to=IDLE, summary="")),
            "the state was idle",
        ),
        ((p.Ready(), p.State(state=DEAD, since_secs=0)), "State says dead"),
        ((p.Ready(), p.Completion(message_id="zz", response="", last_lines="")), "nobody sent"),
        ((p.Ready(), p.ScreenCapture(content="", cursor_row=1, cursor_col=0)), "cursor"),
        (
            (p.Ready(), p.DeliveryFailed(id="a", reason=""), p.DeliveryFailed(id="a", reason="")),
            "second terminal",
        ),
        (
            (p.Ready(), p.DeliveryFailed(id="a", reason=""), p.MessageDelivered(id="a")),
            "after its outcome",
        ),
    ],
)
def test_the_checker_names_each_broken_promise(events: tuple[p.Event, ...], complaint: str) -> None:
    checker = checked(*events, sent=("a",))
    assert any(complaint in v for v in checker.violations), checker.violations


def test_the_final_check_wants_one_outcome_per_id_and_a_pong_per_ping() -> None:
    checker = checked(p.Ready(), p.Pong(), sent=("a",))
    checker.note_pings(2)
    assert checker.check_final() == ["'a' ended in 0 terminal events", "2 Pings but 1 Pongs"]


# ---------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------


def read_frames(data: bytes) -> list[bytes]:
    """Every frame in ``data``, read by the real frame reader (raises FrameError)."""

    async def read() -> list[bytes]:
        stream = trio.testing.MemoryReceiveStream()
        stream.put_data(data)
        stream.put_eof()
        reader = FrameReader(stream)
        out = []
        while (payload := await reader.receive()) is not None:
            out.append(payload)
        return out

    return trio.run(read)


@given(st.lists(S.command_frames(), max_size=4))
def test_command_frames_read_back_as_the_commands(frames: list[bytes]) -> None:
    payloads = read_frames(b"".join(frames))
    assert [p.encode(p.decode_command(x)) for x in payloads] == [f[4:] for f in frames]


@given(S.event_frames())
def test_event_frames_read_back_as_events(data: bytes) -> None:
    (payload,) = read_frames(data)
    assert p.encode(p.decode_event(payload)) == payload


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(S.malformed_payloads("cmd"))
def test_malformed_command_payloads_are_bad_messages(payload: bytes) -> None:
    with pytest.raises(p.BadMessage):
        p.decode_command(payload)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(S.malformed_payloads("event"))
def test_malformed_event_payloads_are_bad_messages(payload: bytes) -> None:
    with pytest.raises(p.BadMessage):
        p.decode_event(payload)


@given(S.malformed_frames())
def test_malformed_frames_keep_the_stream_in_sync(data: bytes) -> None:
    (payload,) = read_frames(data)
    assert len(payload) == len(data) - 4


@given(S.over_cap_frames())
def test_over_cap_lengths_break_the_stream(data: bytes) -> None:
    with pytest.raises(FrameError, match="exceeds"):
        read_frames(data)


@given(S.truncated_frames())
def test_truncated_frames_break_the_stream(data: bytes) -> None:
    with pytest.raises(FrameError, match="inside a frame"):
        read_frames(data)


def test_frames_at_the_cap() -> None:
    (ping,) = read_frames(S.cap_frame(S.CapFrame.PING_AT_CAP))
    assert len(ping) == p.MAX_FRAME_BYTES
    assert p.decode_command(ping) == p.Ping()
    (garbage,) = read_frames(S.cap_frame(S.CapFrame.GARBAGE_AT_CAP))
    with pytest.raises(p.BadMessage):
        p.decode_command(garbage)
    with pytest.raises(FrameError, match="exceeds"):
        read_frames(S.cap_frame(S.CapFrame.ONE_OVER_CAP))
    with pytest.raises(FrameError, match="exceeds"):
        read_frames(S.over_cap_header())


@pytest.mark.parametrize("cls", [*p.COMMAND_TYPES, *p.EVENT_TYPES], ids=lambda c: c.__name__)
@settings(max_examples=20)
@given(data=st.data())
def test_each_variant_round_trips(
    cls: type[p.Command] | type[p.Event], data: st.DataObject
) -> None:
    message = data.draw(S.messages_of(cls))
    assert msgspec.json.decode(p.encode(message), type=cls) == message


def test_the_fuzz_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "fuzz_protocol.py"
    spec = importlib.util.spec_from_file_location("example_fuzz_protocol", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--examples", "2", "--steps", "4"]) == 0
    assert "OK: 2 example(s)" in capsys.readouterr().out
