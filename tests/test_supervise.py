"""Supervision of real shim processes (fake Codex): restarts, backoff, deliberate stops."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from trio_codex_shim import protocol as p
from trio_codex_shim.client import ClientOptions, ShimGone, ShimStartError
from trio_codex_shim.supervise import (
    Report,
    Restarted,
    ShimDied,
    ShimEvent,
    Stopped,
    StopReason,
    Supervisor,
    supervise,
)
from trio_codex_shim.testing.fake_codex import Turn, answer_turn, fail_turn
from trio_codex_shim.testing.harness import fake_shim_options

LIMIT = 30.0


class Reports:
    """Collects reports; lets a test wait for one of a kind without sleeping."""

    def __init__(self) -> None:
        self.items: list[Report] = []
        self._changed = trio.Event()

    def __call__(self, report: Report) -> None:
        self.items.append(report)
        self._changed.set()
        self._changed = trio.Event()

    def of(self, kind: type[Any]) -> list[Any]:
        return [r for r in self.items if isinstance(r, kind)]

    async def wait_for(self, kind: type[Any], count: int = 1) -> list[Any]:
        with trio.fail_after(LIMIT):
            while len(self.of(kind)) < count:
                await self._changed.wait()
        return self.of(kind)

    def events(self) -> list[p.AnyEvent]:
        return [r.event for r in self.of(ShimEvent)]


def options(tmp_path: Path, *turns: Turn, **kwargs: Any) -> ClientOptions:
    return fake_shim_options(
        tmp_path, list(turns or [answer_turn("ok")]), kill_timeout_secs=1.0, **kwargs
    )


async def start(
    nursery: trio.Nursery, opts: ClientOptions, reports: Reports, **kwargs: Any
) -> Supervisor:
    settings: dict[str, Any] = {
        "ping_interval": 0.2,
        "ping_timeout": 1.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.4,
        **kwargs,
    }
    sup: Supervisor = await nursery.start(partial(supervise, opts, on_event=reports, **settings))
    return sup


async def test_messages_and_a_deliberate_shutdown(tmp_path: Path) -> None:
    reports = Reports()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, options(tmp_path), reports)
            assert sup.generation == 1
            assert sup.client is not None
            outcome = await sup.send("hello", timeout_secs=5)
            assert isinstance(await outcome.wait(LIMIT), p.Completion)
            await reports.wait_for(ShimEvent, 8)  # a few Pongs went by
            stopped = await sup.shutdown(5)
    assert stopped == Stopped(reason=StopReason.SHUTDOWN, generation=1)
    assert reports.items[0] == ShimEvent(1, p.Ready())
    assert reports.items[-1] == stopped
    assert p.Pong() in reports.events()
    assert not reports.of(ShimDied)
    assert not reports.of(Restarted)
    assert sup.client is None
    with pytest.raises(Exception, match="supervision stopped"):
        await sup.send("too late", timeout_secs=1)


async def test_an_unexpected_exit_is_restarted(tmp_path: Path) -> None:
    reports = Reports()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, options(tmp_path), reports)
            first = sup.client
            assert first is not None
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            (restarted,) = await reports.wait_for(Restarted)
            assert sup.generation == 2
            client = await sup.wait_client(5)
            assert client is not first
            assert await client.ping() >= 0
            await sup.shutdown(5)
    (died,) = reports.of(ShimDied)
    assert died == ShimDied(
        generation=1,
        reason=f"the shim exited with code {-signal.SIGKILL}",
        exit_code=-signal.SIGKILL,
        restart_in_secs=0.05,
    )
    assert restarted == Restarted(generation=2, restarts=1, reason=died.reason, delay_secs=0.05)
    assert ShimEvent(2, p.Ready()) in reports.items


async def test_a_missed_pong_is_death(tmp_path: Path) -> None:
    reports = Reports()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, options(tmp_path), reports, ping_timeout=0.3)
            client = sup.client
            assert client is not None
            assert client.pid is not None
            os.kill(client.pid, signal.SIGSTOP)  # alive, but deaf
            (died,) = await reports.wait_for(ShimDied)
            await reports.wait_for(Restarted)
            await sup.shutdown(5)
    assert died.reason == "no Pong within 0.3s"
    assert client.process is not None
    assert client.process.returncode is not None  # stopped and reaped all the same


async def test_backoff_doubles_up_to_the_cap(tmp_path: Path) -> None:
    # A "shim" that says Ready on fd 3 and exits at once, every time.
    ready_then_exit = (
        "import os\n"
        "from trio_codex_shim import protocol as p\n"
        "from trio_codex_shim.framing import frame\n"
        "os.write(3, frame(p.encode(p.Ready())))\n"
    )
    opts = ClientOptions(argv=(sys.executable, "-c", ready_then_exit))
    reports = Reports()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(
                nursery, opts, reports, backoff_initial=0.01, backoff_max=0.04, stable_after=60
            )
            await reports.wait_for(ShimDied, 4)
            await sup.shutdown(5)
    delays = [d.restart_in_secs for d in reports.of(ShimDied)][:4]
    assert delays == [0.01, 0.02, 0.04, 0.04]
    assert [r.restarts for r in reports.of(Restarted)][:3] == [1, 2, 3]


async def test_no_restart_after_auth_required(tmp_path: Path) -> None:
    reports = Reports()
    opts = options(tmp_path, fail_turn("401 Unauthorized: please run `codex login`"))
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, opts, reports)
            outcome = await sup.send("hi", timeout_secs=5)
            assert isinstance(await outcome.wait(LIMIT), p.DeliveryFailed)
            assert sup.auth_required
            client = sup.client
            assert client is not None
            assert client.pid is not None
            os.kill(client.pid, signal.SIGKILL)
            stopped = await sup.wait_stopped(LIMIT)
    assert stopped == Stopped(reason=StopReason.AUTH_REQUIRED, generation=1)
    assert any(isinstance(e, p.AuthRequired) for e in reports.events())
    assert reports.of(ShimDied)[0].restart_in_secs is None
    assert not reports.of(Restarted)


async def test_a_shutdown_sent_through_the_client_is_deliberate(tmp_path: Path) -> None:
    reports = Reports()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, options(tmp_path), reports)
            client = await sup.wait_client(5)
            await client.shutdown(5)
            stopped = await sup.wait_stopped(LIMIT)
    assert stopped.reason is StopReason.SHUTDOWN
    assert not reports.of(ShimDied)


async def test_a_first_start_that_fails_is_raised_not_retried() -> None:
    opts = ClientOptions(argv=(sys.executable, "-c", "raise SystemExit(9)"))
    reports = Reports()
    expected = pytest.RaisesGroup(pytest.RaisesExc(ShimStartError, match="code 9"))
    with trio.fail_after(LIMIT), expected:
        async with trio.open_nursery() as nursery:
            await start(nursery, opts, reports)
    assert reports.items == []


async def test_cancelling_supervision_stops_the_shim(tmp_path: Path) -> None:
    reports = Reports()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            sup = await start(nursery, options(tmp_path), reports)
            client = sup.client
            assert client is not None
            nursery.cancel_scope.cancel()
    assert client.process is not None
    assert client.process.returncode == 0  # it got Kill and exited by itself
    assert sup.stopped is None  # cancelled, not stopped
    with pytest.raises(ShimGone, match="cancelled"):
        await sup.wait_stopped(1)


def load_example(name: str) -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_orchestrator_example_runs_with_the_fake_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load_example("orchestrator")
    with trio.fail_after(LIMIT):
        assert await example.main(example.parse(["--messages", "2", "--kill-one"])) == 0
    out = capsys.readouterr().out
    for name in ("alpha", "bravo", "charlie"):
        assert f"[{name}] message 1 -> Completion" in out
        assert f"[{name}] stopped: shutdown" in out
    assert "Restarted(generation=2" in out
