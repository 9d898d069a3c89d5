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
        parts = chunk.split(b"\n")
        tail = parts.pop()  # the unfinished rest; empty when chunk ends in a newline
        lines: list[bytes] = []
        if parts:
            first = parts[0]
            if self._discarding:
                self._discarding = False
            elif self._partial:
                self._partial += first
                self._take(bytes(self._partial), lines)
            else:
                self._take(first, lines)
            self._partial.clear()
            for line in parts[1:]:
                self._take(line, lines)
        self._keep(tail)
        return lines

    def _take(self, line: bytes, lines: list[bytes]) -> None:
        if len(line) > self._max:
            self.skipped += 1
        else:
            lines.append(line)

    def _keep(self, tail: bytes) -> None:
        if self._discarding or not tail:
            return
        if len(self._partial) + len(tail) > self._max:
            self._partial.clear()
            self._discarding = True
            self.skipped += 1
        else:
            self._partial += tail
