"""Keep the last few KiB of a stream's text, for error messages."""

from __future__ import annotations


class Tail:
    """The last ``limit`` bytes fed to it, decoded leniently."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        if len(self._buf) > 2 * self._limit:
            del self._buf[: len(self._buf) - self._limit]

    def text(self) -> str:
        return bytes(self._buf[-self._limit :]).decode("utf-8", errors="replace")
