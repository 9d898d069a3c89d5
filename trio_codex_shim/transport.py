"""The byte stream to the orchestrator: an inherited socket, a Unix socket, or stdio."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import trio


class InheritedSocket(msgspec.Struct, frozen=True):
    """A connected socket passed in on file descriptor ``fd`` (batty: fd 3)."""

    fd: int = 3


class UnixSocketPath(msgspec.Struct, frozen=True):
    """Connect to the Unix stream socket at ``path``."""

    path: str


class Stdio(msgspec.Struct, frozen=True):
    """Frames on stdin/stdout; logs stay on stderr."""


Transport = InheritedSocket | UnixSocketPath | Stdio


class TransportError(Exception):
    """The stream to the orchestrator could not be opened."""


@asynccontextmanager
async def open_transport(transport: Transport) -> AsyncIterator[trio.abc.Stream]:
    """Open ``transport`` as a Trio stream, closed again on exit."""
    stream: trio.abc.Stream
    match transport:
        case InheritedSocket(fd=fd):
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise TransportError(f"fd {fd} is not a usable socket: {exc}") from None
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        case UnixSocketPath(path=path):
            try:
                stream = await trio.open_unix_socket(path)
            except OSError as exc:
                raise TransportError(f"cannot connect to {path}: {exc}") from None
        case Stdio():
            stream = trio.StapledStream(
                trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
            )
    async with stream:
        yield stream
