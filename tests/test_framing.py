"""Length-prefixed frames over Trio streams that split, delay and close."""

from __future__ import annotations

import random
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_codex_shim.framing import FrameError, FrameReader, frame
from trio_codex_shim.protocol import MAX_FRAME_BYTES

StreamPairFactory = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]

PAIRS: dict[str, StreamPairFactory] = {
    "memory": trio.testing.memory_stream_pair,
    "lockstep": trio.testing.lockstep_stream_pair,
}


def _header(n: int) -> bytes:
    return struct.pack(">I", n)


# ---------------------------------------------------------------------------
# frame()
# ---------------------------------------------------------------------------


def test_frame_is_big_endian_length_then_payload() -> None:
    assert frame(b'{"cmd":"Ping"}') == b'\x00\x00\x00\x0e{"cmd":"Ping"}'
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert frame(b"x" * 0x01020304, max_bytes=0x01020304)[:4] == b"\x01\x02\x03\x04"


def test_frame_accepts_exactly_the_cap() -> None:
    payload = b"a" * MAX_FRAME_BYTES
    framed = frame(payload)
    assert framed[:4] == _header(MAX_FRAME_BYTES)
    assert framed[4:] == payload


def test_frame_refuses_oversize_payloads() -> None:
    with pytest.raises(FrameError, match="exceeds"):
        frame(b"a" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError):
        frame(b"abcd", max_bytes=3)
    assert frame(b"abc", max_bytes=3) == b"\x00\x00\x00\x03abc"


# ---------------------------------------------------------------------------
# Driving a reader against a writer that chunks at random
# ---------------------------------------------------------------------------


async def _send_chunked(
    stream: trio.abc.SendStream, data: bytes, cuts: list[int], close: bool = True
) -> None:
    """Send ``data`` in pieces split at ``cuts`` (offsets), then close when asked."""
    bounds = sorted({c for c in cuts if 0 < c < len(data)})
    start = 0
    for end in [*bounds, len(data)]:
        if end > start:
            await stream.send_all(data[start:end])
        start = end
    if close:
        await stream.aclose()


async def _read_all(reader: FrameReader) -> list[bytes]:
    frames: list[bytes] = []
    while (payload := await reader.receive()) is not None:
        frames.append(payload)
    return frames


async def _round_trip(
    make_pair: StreamPairFactory, payloads: list[bytes], cuts: list[int], max_bytes: int
) -> list[bytes]:
    left, right = make_pair()
    data = b"".join(frame(pl, max_bytes) for pl in payloads)
    received: list[bytes] = []

    async def reader_task() -> None:
        received.extend(await _read_all(FrameReader(right, max_bytes)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader_task)
        await _send_chunked(left, data, cuts)
    return received


def _run(fn: Callable[[], Awaitable[object]]) -> None:
    async def main() -> None:
        with trio.fail_after(10):
            await fn()

    trio.run(main)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.sampled_from(sorted(PAIRS)),
    payloads=st.lists(st.binary(max_size=300), max_size=12),
    cuts=st.lists(st.integers(0, 4000), max_size=40),
)
def test_frames_round_trip_with_random_chunking(
    pair: str, payloads: list[bytes], cuts: list[int]
) -> None:
    result: list[list[bytes]] = []

    async def go() -> None:
        result.append(await _round_trip(PAIRS[pair], payloads, cuts, MAX_FRAME_BYTES))

    _run(go)
    assert result == [payloads]


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=16), min_size=1, max_size=8),
    seed=st.integers(0, 2**32),
)
def test_frames_up_to_a_small_cap_round_trip_byte_by_byte(payloads: list[bytes], seed: int) -> None:
    """With a cap of 16, payloads up to exactly 16 bytes pass, one byte per send."""
    data_len = sum(4 + len(pl) for pl in payloads)
    rng = random.Random(seed)
    cuts = list(range(data_len)) if seed % 2 else [rng.randrange(data_len) for _ in range(5)]
    result: list[list[bytes]] = []

    async def go() -> None:
        result.append(await _round_trip(trio.testing.memory_stream_pair, payloads, cuts, 16))

    _run(go)
    assert result == [payloads]


@pytest.mark.parametrize("pair", sorted(PAIRS))
async def test_pipelined_frames_in_one_send(pair: str) -> None:
    left, right = PAIRS[pair]()
    payloads = [b"one", b"", b"three" * 100, b"\x00\x00\x00\x04"]
    reader = FrameReader(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_chunked, left, b"".join(map(frame, payloads)), [])
        assert await _read_all(reader) == payloads


async def test_one_mebibyte_frame_round_trips_through_small_chunks() -> None:
    left, right = trio.testing.memory_stream_pair()
    payload = bytes(range(256)) * (MAX_FRAME_BYTES // 256)
    assert len(payload) == MAX_FRAME_BYTES
    reader = FrameReader(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _send_chunked, left, frame(payload), list(range(0, MAX_FRAME_BYTES, 70_001))
        )
        assert await reader.receive() == payload
        assert await reader.receive() is None


async def test_clean_eof_is_none_and_stays_none() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right)
    await left.send_all(frame(b"last"))
    await left.aclose()
    assert await reader.receive() == b"last"
    assert await reader.receive() is None


async def test_eof_before_anything_is_clean() -> None:
    left, right = trio.testing.lockstep_stream_pair()
    reader = FrameReader(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.aclose)
        assert await reader.receive() is None


# ---------------------------------------------------------------------------
# Broken streams
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00", id="1-byte-header"),
        pytest.param(b"\x00\x00\x00", id="3-byte-header"),
        pytest.param(b"\x00\x00\x00\x05", id="header-no-payload"),
        pytest.param(b"\x00\x00\x00\x05abcd", id="payload-short-by-one"),
    ],
)
async def test_eof_inside_a_frame_is_a_frame_error(pair: str, tail: bytes) -> None:
    left, right = PAIRS[pair]()
    reader = FrameReader(right)
    good = frame(b"ok")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_chunked, left, good + tail, [1, len(good), len(good) + 2])
        assert await reader.receive() == b"ok"
        with pytest.raises(FrameError, match="ended inside a frame"):
            await reader.receive()


@pytest.mark.parametrize("pair", sorted(PAIRS))
async def test_length_over_the_cap_is_a_frame_error(pair: str) -> None:
    left, right = PAIRS[pair]()
    reader = FrameReader(right)
    async with trio.open_nursery() as nursery:
        # Only the header is sent, and the stream is left open: the reader must
        # refuse on the length alone, without waiting for a payload.
        nursery.start_soon(_send_chunked, left, _header(MAX_FRAME_BYTES + 1), [], False)
        with pytest.raises(FrameError, match="exceeds"):
            await reader.receive()
        nursery.cancel_scope.cancel()


async def test_length_at_the_cap_waits_for_the_payload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every wait here is on an in-memory stream, so virtual time is safe.
    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right, max_bytes=8)
    await left.send_all(_header(8) + b"1234")
    with trio.move_on_after(60) as scope:
        await reader.receive()
    assert scope.cancelled_caught
    await left.send_all(b"5678")
    assert await reader.receive() == b"12345678"


async def test_custom_cap_over_by_one() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right, max_bytes=8)
    await left.send_all(frame(b"12345678", 8) + _header(9) + b"123456789")
    assert await reader.receive() == b"12345678"
    with pytest.raises(FrameError):
        await reader.receive()


async def test_huge_length_is_refused() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right)
    await left.send_all(b"\xff\xff\xff\xff")
    with pytest.raises(FrameError):
        await reader.receive()


# ---------------------------------------------------------------------------
# receive_many: every buffered frame in one call
# ---------------------------------------------------------------------------


async def _read_all_many(reader: FrameReader) -> list[list[bytes]]:
    batches: list[list[bytes]] = []
    while batch := await reader.receive_many():
        batches.append(batch)
    return batches


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.sampled_from(sorted(PAIRS)),
    payloads=st.lists(st.binary(max_size=300), max_size=12),
    cuts=st.lists(st.integers(0, 4000), max_size=40),
)
def test_receive_many_gives_every_frame_in_order(
    pair: str, payloads: list[bytes], cuts: list[int]
) -> None:
    batches: list[list[bytes]] = []

    async def go() -> None:
        left, right = PAIRS[pair]()
        data = b"".join(frame(pl) for pl in payloads)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send_chunked, left, data, cuts)
            batches.extend(await _read_all_many(FrameReader(right)))

    _run(go)
    assert all(batches)
    assert [pl for batch in batches for pl in batch] == payloads


async def test_pipelined_frames_come_in_one_batch() -> None:
    left, right = trio.testing.memory_stream_pair()
    payloads = [b"one", b"", b"three" * 100]
    await left.send_all(b"".join(map(frame, payloads)))
    assert await FrameReader(right).receive_many() == payloads


async def test_receive_many_hands_out_good_frames_before_the_error() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right, max_bytes=8)
    await left.send_all(frame(b"a", 8) + frame(b"b", 8) + _header(9) + b"123456789")
    assert await reader.receive_many() == [b"a", b"b"]
    with pytest.raises(FrameError, match="exceeds"):
        await reader.receive_many()


async def test_receive_many_at_the_end_is_empty_or_a_frame_error() -> None:
    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right)
    await left.send_all(frame(b"last"))
    await left.aclose()
    assert await reader.receive_many() == [b"last"]
    assert await reader.receive_many() == []

    left, right = trio.testing.memory_stream_pair()
    reader = FrameReader(right)
    await left.send_all(frame(b"last")[:-1])
    await left.aclose()
    with pytest.raises(FrameError, match="ended inside a frame"):
        await reader.receive_many()
