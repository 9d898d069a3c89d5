"""Split a byte stream into lines in bulk, with a cap on any one line."""

from __future__ import annotations


class LineSplitter:
    """Feed chunks, get complete lines back; a line over ``max_line`` bytes is skipped.

    An over-long line is dropped as it arrives (never buffered whole) and
    counted in :attr:`skipped`; reading resumes after its newline.
    """

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._partial = bytearray()
        self._discarding = False
        self.skipped = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, without their newlines."""
        block = self.feed_block(chunk)
        return [] if block is None else block.split(b"\n")

    def feed_block(self, chunk: bytes) -> bytes | None:
        """The lines ``chunk`` completes as one block, joined by ``\\n`` (no
        final newline); ``None`` when it completes none.

        Lines are checked against the cap one by one only when the block is
        longer than the cap.
        """
        end = chunk.rfind(b"\n")
        if end < 0:
            self._keep(chunk)
            return None
        head = memoryview(chunk)[:end]
        block: bytes | None
        if self._discarding:  # the first line is the end of one already skipped
            self._discarding = False
            start = chunk.find(b"\n") + 1
            block = bytes(head[start:]) if start <= end else None
        else:
            block = b"".join((self._partial, head))  # the block's one copy
            self._partial.clear()
        if block is not None and len(block) > self._max:
            block = self._without_long_lines(block)
        self._keep(chunk[end + 1 :])
        return block

    def _without_long_lines(self, block: bytes) -> bytes | None:
        lines = block.split(b"\n")
        kept = [line for line in lines if len(line) <= self._max]
        self.skipped += len(lines) - len(kept)
        return b"\n".join(kept) if kept else None

    def _keep(self, tail: bytes) -> None:
        if self._discarding or not tail:
            return
        if len(self._partial) + len(tail) > self._max:
            self._partial.clear()
            self._discarding = True
            self.skipped += 1
        else:
            self._partial += tail
