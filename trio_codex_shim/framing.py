"""Length-prefixed frames over any Trio stream.

A frame is a 4-byte big-endian length ``N`` and ``N`` bytes of JSON, with
``N`` at most :data:`~.protocol.MAX_FRAME_BYTES`.  A length over the cap means
the stream lost sync and a stream ending inside a frame is truncated: both
raise :class:`FrameError`, after which the stream cannot be trusted.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Final

import trio

from .protocol import MAX_FRAME_BYTES

_HEADER: Final = struct.Struct(">I")
_READ_CHUNK: Final = 65_536


class FrameError(Exception):
    """The byte stream is broken (over-long length or truncated frame)."""


def frame(payload: bytes, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """``payload`` with its length prefix; refuses payloads over the cap."""
    if len(payload) > max_bytes:
        raise FrameError(f"frame of {len(payload)} bytes exceeds the {max_bytes}-byte cap")
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Reads whole frames from a stream, buffering partial ones.

    Reads in large chunks and splits every whole frame a chunk holds in one
    pass, so pipelined frames cost one ``receive_some`` and one loop for
    many frames (and one call with :meth:`receive_many`).  The buffer is
    ``bytes``, so a payload is one slice of it; the chunks of a frame longer
    than one read are set aside and joined once, when the frame is complete.
    Cancelling a receive loses nothing: every chunk read is kept.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._stream = stream
        self._max = max_bytes
        self._ready: deque[bytes] = deque()
        """Whole frames split off the buffer, not yet handed out."""
        self._error: FrameError | None = None
        """A bad length met while splitting: raised once the frames before it are out."""
        self._buf = b""
        self._pos = 0
        """Where the next frame starts in ``_buf``."""
        self._more: list[bytes | bytearray] = []
        """Chunks read after ``_buf``, waiting until the frame they continue is whole."""
        self._more_bytes = 0
        self._missing = _HEADER.size
        """Bytes the next frame lacks beyond ``_buf`` (a lower bound until its header is in)."""

    async def receive(self) -> bytes | None:
        """The next frame's payload, or ``None`` at a clean end of stream.

        Raises :class:`FrameError` for an over-long length or a truncated
        frame, and whatever the stream raises when it breaks.
        """
        if await self._fill():
            return self._ready.popleft()
        return None

    async def receive_many(self) -> list[bytes]:
        """Every whole frame read so far, else the next to arrive; ``[]`` at a clean end.

        Raises as :meth:`receive` does, but only once the frames before the
        bad one have been handed out.
        """
        if not await self._fill():
            return []
        frames = list(self._ready)
        self._ready.clear()
        return frames

    async def _fill(self) -> bool:
        """Read until a whole frame is ready; ``False`` at a clean end of stream."""
        while not self._ready:
            if self._error is not None:
                raise self._error
            if not await self._read():
                return False
        return True

    async def _read(self) -> bool:
        """Read one chunk and split what it completes; ``False`` at a clean end of stream."""
        chunk = await self._stream.receive_some(_READ_CHUNK)
        if not chunk:
            pending = len(self._buf) - self._pos + self._more_bytes
            if pending:
                raise FrameError(f"stream ended inside a frame ({pending} bytes pending)")
            return False
        if self._pos == len(self._buf):  # everything was handed out: no copy
            self._buf = bytes(chunk)
            self._pos = 0
        else:
            self._more.append(chunk)
            self._more_bytes += len(chunk)
            if self._more_bytes < self._missing:
                return True
            self._buf = b"".join([self._buf[self._pos :], *self._more])
            self._pos = 0
            self._more.clear()
            self._more_bytes = 0
        self._split()
        return True

    def _split(self) -> None:
        """Move every whole frame in the buffer to ``_ready``, in one loop."""
        buf, pos, size, ready = self._buf, self._pos, len(self._buf), self._ready
        unpack, header, cap = _HEADER.unpack_from, _HEADER.size, self._max  # locals: hot loop
        while True:
            start = pos + header
            if start > size:
                self._missing = start - size
                break
            (length,) = unpack(buf, pos)
            if length > cap:
                self._error = FrameError(f"frame length {length} exceeds the {cap}-byte cap")
                break
            end = start + length
            if end > size:
                self._missing = end - size
                break
            ready.append(buf[start:end])
            pos = end
        self._pos = pos
