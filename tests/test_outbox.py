"""The outbox: every event written once, whole and in order, in bounded batches."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_codex_shim import protocol as p
from trio_codex_shim.framing import frame
from trio_codex_shim.outbox import _BATCH_BYTES, Outbox


class RecordingStream(trio.abc.SendStream):
    """Keeps every ``send_all`` payload apart, so batches can be checked."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sends.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _events(sizes: list[int]) -> list[p.Event]:
    return [p.Pong() if n == 0 else p.Warning(message="x" * n) for n in sizes]


@settings(deadline=None, max_examples=40)
@given(
    st.lists(
        st.lists(st.sampled_from([0, 10, 1_000, 100_000, 300_000]), max_size=12),
        min_size=1,
        max_size=4,
    )
)
def test_every_event_is_written_once_in_order_in_bounded_batches(rounds: list[list[int]]) -> None:
    async def main() -> None:
        outbox = Outbox()
        stream = RecordingStream()
        expected: list[bytes] = []
        with trio.fail_after(30):
            await write_rounds(outbox, stream, expected)
        assert b"".join(stream.sends) == b"".join(expected)
        largest = max((len(f) for f in expected), default=0)
        assert all(len(batch) < _BATCH_BYTES + largest for batch in stream.sends)
        assert len(outbox) == 0

    async def write_rounds(outbox: Outbox, stream: RecordingStream, expected: list[bytes]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.write_forever, stream, 10.0)
            for sizes in rounds:  # puts arrive in bursts, with the writer running between
                for event in _events(sizes):
                    outbox.put(event)
                    expected.append(frame(p.encode_event(event)))
                await trio.testing.wait_all_tasks_blocked()
            assert await outbox.flush(10.0)
            nursery.cancel_scope.cancel()

    trio.run(main)
