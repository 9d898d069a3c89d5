"""LineSplitter: any chunking gives the same lines; over-long lines are dropped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_codex_shim.codex.lines import LineSplitter


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({c % (len(data) + 1) for c in cuts})
    chunks: list[bytes] = []
    start = 0
    for end in [*bounds, len(data)]:
        chunks.append(data[start:end])  # empty chunks included on purpose
        start = end
    return chunks


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes]:
    lines: list[bytes] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines


# Small alphabets make newlines and long runs common.
DATA = st.binary(max_size=400) | st.lists(
    st.sampled_from([b"\n", b"a", b"bb", b'{"x":1}', b"\r", b"\xff", b"\n\n", b"z" * 9]),
    max_size=80,
).map(b"".join)


@settings(max_examples=400)
@given(data=DATA, cuts=st.lists(st.integers(0, 10_000), max_size=30), cap=st.integers(0, 20))
def test_any_chunking_gives_the_complete_lines(data: bytes, cuts: list[int], cap: int) -> None:
    splitter = LineSplitter(cap)
    lines = feed_all(splitter, split_at(data, cuts))

    *complete, tail = data.split(b"\n")
    assert lines == [line for line in complete if len(line) <= cap]
    over = sum(len(line) > cap for line in complete) + (len(tail) > cap)
    assert splitter.skipped == over


@given(data=DATA, cap=st.integers(0, 20))
def test_byte_by_byte_equals_one_chunk(data: bytes, cap: int) -> None:
    one = LineSplitter(cap)
    bytewise = LineSplitter(cap)
    assert feed_all(bytewise, [data[i : i + 1] for i in range(len(data))]) == one.feed(data)
    assert bytewise.skipped == one.skipped


def test_examples() -> None:
    s = LineSplitter(10)
    assert s.feed(b"") == []
    assert s.feed(b"abc") == []
    assert s.feed(b"def\ng") == [b"abcdef"]
    assert s.feed(b"\n\n") == [b"g", b""]
    assert s.feed(b"x\r\n") == [b"x\r"]  # only \n ends a line
    assert s.skipped == 0


def test_over_long_line_is_dropped_and_reading_resumes() -> None:
    s = LineSplitter(5)
    assert s.feed(b"ok\n123") == [b"ok"]
    assert s.feed(b"456") == []  # 6 bytes pending: over the cap, dropped now
    assert s.skipped == 1
    assert s.feed(b"789" * 1000) == []  # still the same line, not counted twice
    assert s.skipped == 1
    assert s.feed(b"0\nfine\n") == [b"fine"]
    assert s.skipped == 1
    assert s.feed(b"123456\n12345\n") == [b"12345"]
    assert s.skipped == 2


def test_a_long_line_is_never_buffered_whole() -> None:
    s = LineSplitter(100)
    for _ in range(1000):
        s.feed(b"x" * 1000)
    assert len(s._partial) <= 100
    assert s.feed(b"\nnext\n") == [b"next"]
    assert s.skipped == 1


@pytest.mark.parametrize("cap", [0, 1, 3])
def test_exactly_the_cap_is_kept(cap: int) -> None:
    s = LineSplitter(cap)
    line = b"q" * cap
    assert s.feed(line + b"\n" + line + b"q\n") == [line]
    assert s.skipped == 1


@settings(max_examples=400)
@given(data=DATA, cuts=st.lists(st.integers(0, 10_000), max_size=30), cap=st.integers(0, 20))
def test_blocks_hold_the_complete_lines(data: bytes, cuts: list[int], cap: int) -> None:
    splitter = LineSplitter(cap)
    blocks = [splitter.feed_block(chunk) for chunk in split_at(data, cuts)]

    *complete, tail = data.split(b"\n")
    assert [line for b in blocks if b is not None for line in b.split(b"\n")] == [
        line for line in complete if len(line) <= cap
    ]
    over = sum(len(line) > cap for line in complete) + (len(tail) > cap)
    assert splitter.skipped == over


def test_a_chunk_without_a_newline_completes_no_block() -> None:
    s = LineSplitter(100)
    assert s.feed_block(b"abc") is None
    assert s.feed_block(b"def\n") == b"abcdef"
    assert s.feed_block(b"\n") == b""  # one empty line
    assert s.feed_block(b"x\ny\nz") == b"x\ny"
