"""Length-prefixed frames over any Trio stream.

A frame is a 4-byte big-endian length ``N`` and ``N`` bytes of JSON, with
``N`` at most :data:`~.protocol.MAX_FRAME_BYTES`.  A length over the cap means
the stream lost sync and a stream ending inside a frame is truncated: both
raise :class:`FrameError`, after which the stream cannot be trusted.
"""

from __future__ import annotations

import struct
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

    Reads in large chunks and hands out every frame a chunk holds, so
    pipelined frames cost one ``receive_some`` for many frames.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._stream = stream
        self._max = max_bytes
        self._buf = bytearray()
        self._pos = 0

    async def receive(self) -> bytes | None:
        """The next frame's payload, or ``None`` at a clean end of stream.

        Raises :class:`FrameError` for an over-long length or a truncated
        frame, and whatever the stream raises when it breaks.
        """
        while True:
            payload = self._take()
            if payload is not None:
                return payload
            chunk = await self._stream.receive_some(_READ_CHUNK)
            if not chunk:
                pending = len(self._buf) - self._pos
                if pending:
                    raise FrameError(f"stream ended inside a frame ({pending} bytes pending)")
                return None
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk

    def _take(self) -> bytes | None:
        available = len(self._buf) - self._pos
        if available < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(self._buf, self._pos)
        if length > self._max:
            raise FrameError(f"frame length {length} exceeds the {self._max}-byte cap")
        end = self._pos + _HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[self._pos + _HEADER.size : end])
        self._pos = end
        return payload
