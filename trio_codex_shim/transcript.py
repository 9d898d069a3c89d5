"""A readable, size-capped transcript of the agent for ``tail -F``."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class Transcript:
    """Appends lines to ``path``; past ``max_bytes`` it rotates to ``path.1``.

    Writes are small and synchronous (a local file, line-buffered); a write
    that fails is logged once and the transcript is switched off, never
    failing a turn.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self._max = max(1024, max_bytes)
        self._file = path.open("a", encoding="utf-8", errors="replace", buffering=1)
        self._size = self._file.tell()

    def write(self, text: str) -> None:
        """Append ``text`` as one or more lines."""
        if self._file.closed:
            return
        data = text if text.endswith("\n") else text + "\n"
        try:
            if self._size + len(data) > self._max:
                self._rotate()
            self._file.write(data[-self._max :])
            self._size += min(len(data), self._max)
        except OSError as exc:
            log.warning("transcript %s switched off: %s", self.path, exc)
            self._file.close()

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("a", encoding="utf-8", errors="replace", buffering=1)
        self._size = 0
