"""Keep one shim alive: ping it, restart it when it dies, stop when told to.

Start :func:`supervise` with ``nursery.start``; it hands back a
:class:`Supervisor` once the first shim is ``Ready``::

    async with trio.open_nursery() as nursery:
        sup = await nursery.start(partial(supervise, options, on_event=print))
        outcome = await sup.send("Fix the bug", timeout_secs=30)
        print(await outcome.wait(600))
        await sup.shutdown(30)

A shim is *dead* when it misses a ``Pong`` (no answer within
``ping_timeout``), or when its connection closes or its process exits
without anyone having asked it to stop.  A dead shim is stopped for good
(Kill, TERM, KILL, reaped; see :func:`~.client.open_shim`) and a new one is
started after an exponential backoff: ``backoff_initial``, doubled after
every death up to ``backoff_max``, and back to ``backoff_initial`` once a
shim has stayed up for ``stable_after`` seconds.

It never restarts after a deliberate stop (:meth:`Supervisor.shutdown`, or a
``Shutdown``/``Kill`` sent through the current client) nor after the shim
reported ``AuthRequired`` (a new shim would fail the same way until a human
logs in again): it then returns a :class:`Stopped` report.

Messages are never replayed: a message sent to a shim that then dies ends
with :class:`~.client.ShimGone` from :meth:`~.client.MessageOutcome.wait`,
and the caller decides whether to send it again.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from typing import Final

import msgspec
import trio

from . import protocol as p
from .client import (
    ClientOptions,
    MessageOutcome,
    ShimClient,
    ShimGone,
    ShimStartError,
    open_shim,
)

log = logging.getLogger(__name__)

_STOP_MARGIN: Final = 5.0
"""Beyond a shutdown's own timeout: time to flush, exit and be reaped."""


class StopReason(enum.StrEnum):
    """Why supervision ended."""

    SHUTDOWN = "shutdown"
    """Someone asked for it (:meth:`Supervisor.shutdown`, or Shutdown/Kill sent directly)."""
    AUTH_REQUIRED = "auth_required"
    """The shim reported ``AuthRequired`` and then died; a restart would not help."""


class ShimEvent(msgspec.Struct, frozen=True):
    """An event from the shim of generation ``generation`` (1 is the first)."""

    generation: int
    event: p.AnyEvent


class ShimDied(msgspec.Struct, frozen=True, kw_only=True):
    """The shim of ``generation`` is dead (and has been stopped and reaped).

    ``restart_in_secs`` is the backoff before the next start, ``None`` when
    there will be none.
    """

    generation: int
    reason: str
    exit_code: int | None
    restart_in_secs: float | None


class Restarted(msgspec.Struct, frozen=True, kw_only=True):
    """A replacement shim is ``Ready``: ``generation`` is its number, ``restarts``
    how many restarts there have been, ``reason`` why its predecessor died."""

    generation: int
    restarts: int
    reason: str
    delay_secs: float


class Stopped(msgspec.Struct, frozen=True, kw_only=True):
    """Supervision is over; no shim is running."""

    reason: StopReason
    generation: int


Report = ShimEvent | ShimDied | Restarted | Stopped
ReportCallback = Callable[[Report], object]
"""Receives every :data:`Report`, in order.  It runs on the shim client's
reader task or the supervisor's task, so it must not block or raise; a
``trio.MemorySendChannel.send_nowait`` of a channel with room fits."""


class Supervisor:
    """The handle :func:`supervise` gives to ``nursery.start``."""

    def __init__(self) -> None:
        self.generation = 0
        """Number of the current (or last) shim; 1 is the first."""
        self.restarts = 0
        self.auth_required = False
        """The current shim reported ``AuthRequired``: it will not be restarted."""
        self.stopped: Stopped | None = None
        self._client: ShimClient | None = None
        self._changed = trio.Event()
        self._stop_requested = trio.Event()
        self._stop_timeout = 30.0
        self._stopped_event = trio.Event()

    @property
    def client(self) -> ShimClient | None:
        """The current shim's client while it is up, else ``None``."""
        client = self._client
        return None if client is None or client.closed else client

    async def wait_client(self, timeout_secs: float) -> ShimClient:
        """The current live client, waiting up to ``timeout_secs`` for a restart.

        :class:`ShimGone` once supervision has stopped (or is stopping);
        :class:`trio.TooSlowError` when no shim is up in time.
        """
        with trio.fail_after(timeout_secs):
            while True:
                if self.stopped is not None or self._stop_requested.is_set():
                    raise ShimGone("supervision stopped")
                client = self.client
                if client is not None:
                    return client
                await self._changed.wait()

    async def send(
        self,
        body: str,
        *,
        sender: str = "orchestrator",
        message_id: str | None = None,
        timeout_secs: float = 30.0,
    ) -> MessageOutcome:
        """Send a message to the current shim (waiting up to ``timeout_secs`` for one).

        See :meth:`ShimClient.send`; the message is not replayed if that shim dies.
        """
        client = await self.wait_client(timeout_secs)
        return await client.send(body, sender=sender, message_id=message_id)

    def request_shutdown(self, timeout_secs: float = 30.0) -> None:
        """Ask for a deliberate stop without waiting: the shim gets ``Shutdown``
        with ``timeout_secs`` and is not restarted."""
        self._stop_timeout = timeout_secs
        self._stop_requested.set()
        self._notify()

    async def shutdown(self, timeout_secs: float = 30.0) -> Stopped:
        """Stop deliberately and wait until supervision is over; the final report.

        Bounded: a shim that does not stop in ``timeout_secs`` (plus a margin)
        is killed by the supervisor; :class:`trio.TooSlowError` only if even
        that does not finish in time.
        """
        self.request_shutdown(timeout_secs)
        return await self.wait_stopped(timeout_secs + 3 * _STOP_MARGIN)

    async def wait_stopped(self, timeout_secs: float) -> Stopped:
        """The final report, once supervision ends; :class:`trio.TooSlowError` after
        ``timeout_secs``, :class:`ShimGone` if supervision was cancelled instead."""
        with trio.fail_after(timeout_secs):
            await self._stopped_event.wait()
        if self.stopped is None:
            raise ShimGone("supervision was cancelled")
        return self.stopped

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class _Dead(Exception):
    """Raised out of ``open_shim``'s block so it takes its quick (Kill) exit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def supervise(
    options: ClientOptions,
    *,
    ping_interval: float = 5.0,
    ping_timeout: float = 5.0,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
    stable_after: float | None = None,
    on_event: ReportCallback | None = None,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> Stopped:
    """Keep one shim started with ``options`` alive; see the module docstring.

    Calls ``task_status.started(supervisor)`` once the first shim is
    ``Ready``; if that first start fails, raises
    :class:`~.client.ShimStartError` instead (a misconfiguration is not
    retried).  Returns the :class:`Stopped` report after a deliberate stop or
    a death after ``AuthRequired``.  On cancellation the current shim is
    stopped and reaped before this returns, as :func:`~.client.open_shim`
    guarantees.  ``stable_after`` defaults to ``backoff_max``.
    """
    if ping_interval <= 0 or ping_timeout <= 0 or backoff_initial < 0 or backoff_max < 0:
        raise ValueError("intervals and timeouts must be positive")
    stable = backoff_max if stable_after is None else stable_after
    sup = Supervisor()

    def report(item: Report) -> None:
        if on_event is not None:
            on_event(item)

    failures = 0
    delay = 0.0
    last_reason = ""
    started = False
    try:
        while True:
            sup.generation += 1
            generation = sup.generation

            def relay(event: p.AnyEvent, generation: int = generation) -> None:
                if isinstance(event, p.AuthRequired):
                    sup.auth_required = True
                report(ShimEvent(generation, event))

            ready_at: float | None = None
            reason: str | None = None
            process: trio.Process | None = None
            try:
                async with open_shim(options, on_event=relay) as client:
                    ready_at = trio.current_time()
                    process = client.process
                    sup._client = client
                    sup._notify()
                    if not started:
                        started = True
                        task_status.started(sup)
                    else:
                        sup.restarts += 1
                        report(
                            Restarted(
                                generation=generation,
                                restarts=sup.restarts,
                                reason=last_reason,
                                delay_secs=delay,
                            )
                        )
                    reason = await _watch(sup, client, ping_interval, ping_timeout)
                    if reason is not None:
                        raise _Dead(reason)
            except ShimStartError as exc:
                if not started:
                    raise
                reason = str(exc)
            except _Dead as dead:
                reason = dead.reason
            finally:
                sup._client = None
                sup._notify()
            exit_code = None if process is None else process.returncode

            if reason is None or sup._stop_requested.is_set():
                stop = StopReason.SHUTDOWN
            elif sup.auth_required:
                stop = StopReason.AUTH_REQUIRED
            else:
                if ready_at is not None and trio.current_time() - ready_at >= stable:
                    failures = 0
                delay = min(backoff_max, backoff_initial * 2**failures)
                failures += 1
                last_reason = reason
                log.warning("shim %d died (%s); restarting in %gs", generation, reason, delay)
                report(
                    ShimDied(
                        generation=generation,
                        reason=reason,
                        exit_code=exit_code,
                        restart_in_secs=delay,
                    )
                )
                with trio.move_on_after(delay):
                    await sup._stop_requested.wait()
                if not sup._stop_requested.is_set():
                    continue
                stop = StopReason.SHUTDOWN
                reason = None  # already reported as dead
            if reason is not None:
                report(
                    ShimDied(
                        generation=generation,
                        reason=reason,
                        exit_code=exit_code,
                        restart_in_secs=None,
                    )
                )
            sup.stopped = Stopped(reason=stop, generation=generation)
            report(sup.stopped)
            return sup.stopped
    finally:
        sup._stopped_event.set()
        sup._notify()


async def _watch(
    sup: Supervisor, client: ShimClient, ping_interval: float, ping_timeout: float
) -> str | None:
    """Watch a live shim; why it died, or ``None`` after a deliberate stop."""
    verdict: list[str | None] = []

    async with trio.open_nursery() as nursery:

        def decide(reason: str | None) -> None:
            if not verdict:
                verdict.append(reason)
            nursery.cancel_scope.cancel()

        async def pinger() -> None:
            while True:
                await trio.sleep(ping_interval)
                try:
                    await client.ping(ping_timeout)
                except trio.TooSlowError:
                    decide(f"no Pong within {ping_timeout:g}s")
                    return
                except ShimGone:
                    return  # the closing watcher below gives the verdict

        async def closing() -> None:
            await client.wait_closed(math.inf)
            if client.stop_requested:
                decide(None)
                return
            if client.process is not None:
                # Its exit code makes a better reason than the closed socket.
                with trio.move_on_after(_STOP_MARGIN):
                    await client.process.wait()
                if client.process.returncode is not None:
                    decide(f"the shim exited with code {client.process.returncode}")
                    return
            decide(client.close_reason or "connection closed")

        async def stop_when_asked() -> None:
            await sup._stop_requested.wait()
            try:
                await client.shutdown(sup._stop_timeout)
            except trio.TooSlowError:
                # A verdict of death makes open_shim go straight to Kill, TERM, KILL.
                decide(f"did not stop within {sup._stop_timeout:g}s of Shutdown")
                return
            except ShimGone:
                pass
            decide(None)

        nursery.start_soon(pinger)
        nursery.start_soon(closing)
        nursery.start_soon(stop_when_asked)
    return verdict[0] if verdict else None
