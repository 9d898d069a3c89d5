"""``--backend app-server`` end to end: the real pinned Codex CLI, the mock model, a real shim.

The shim runs as a subprocess and is driven over a socketpair with protocol
frames; Codex talks to the mock model server in this process.  Skipped when
the pinned CLI is absent (a failure under CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from app_server_harness import Shim, open_shim, pids_with_cmdline
from shim_helpers import until

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.testing.mock_model import MockModel, Reply, codex_settings, open_mock_model

pytestmark = pytest.mark.real_codex

HEADER = "--- Message from manager ---"


@asynccontextmanager
async def shim_with_mock(
    codex_bin: Path, tmp_path: Path, *extra: str
) -> AsyncIterator[tuple[Shim, MockModel]]:
    """A mock model and an app-server shim pointed at it (``--stop-grace 0.5``)."""
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    async with open_mock_model() as server:
        settings = codex_settings(server.base_url, home)
        args = [
            "--backend",
            "app-server",
            "--codex",
            os.fspath(codex_bin),
            "--cwd",
            os.fspath(work),
            "--stop-grace",
            "0.5",
            "--log-level",
            "debug",
            *settings.shim_args(),
            *extra,
        ]
        async with open_shim(
            args, env=settings.environ(), log_path=tmp_path / "shim.log", cwd=tmp_path
        ) as shim:
            yield shim, server


def app_servers(shim: Shim) -> list[int]:
    return pids_with_cmdline(shim.descendants(), b"app-server")


async def wait_for_command(shim: Shim, needle: bytes) -> int:
    """The pid of the shim's descendant running ``needle`` (e.g. ``sleep 300``)."""
    found: list[int] = []

    def check() -> bool:
        for pid in shim.descendants():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if needle in cmdline and b"app-server" not in cmdline:
                found.append(pid)
                return True
        return False

    await until(check, 20)
    return found[0]


async def test_plain_turn_and_three_turns_on_one_thread(codex_bin: Path, tmp_path: Path) -> None:
    async with shim_with_mock(codex_bin, tmp_path, "--stats-interval", "0.2") as (shim, server):
        server.script(
            Reply.text("one").with_usage(1000, 10),
            Reply.text("two").with_usage(1100, 10),
            Reply.text("three").with_usage(129_200, 10),
        )
        await shim.message("first message", "m1")
        done = await shim.terminal("m1")
        assert done == p.Completion(message_id="m1", response="one", last_lines="one")
        servers = app_servers(shim)
        assert len(servers) == 1
        for body, mid, answer in (("second message", "m2", "two"), ("third one", "m3", "three")):
            await shim.message(body, mid)
            assert await shim.terminal(mid) == p.Completion(
                message_id=mid, response=answer, last_lines=answer
            )
        assert app_servers(shim) == servers  # the same server ran every turn
        requests = server.responses_requests
        assert len(requests) == 3
        users = [t for t in requests[2].user_texts() if t.startswith(HEADER)]
        bodies = [u.rsplit("\n", 1)[1] for u in users]
        assert bodies == ["first message", "second message", "third one"]
        assert requests[2].input_texts().count("two") == 1  # the model's answers too
        # Thread totals from thread/tokenUsage/updated; occupancy from the last exchange.
        stats = await shim.wait_for(
            lambda e: isinstance(e, p.SessionStats) and e.input_tokens == 131_300, 10
        )
        assert isinstance(stats, p.SessionStats)
        assert stats.output_tokens == 30
        # gpt-5.5 on a custom provider: modelContextWindow 258,400 (0.169.0).
        assert stats.context_usage_pct == (129_200 + 10) * 100 // 258_400


async def test_server_killed_between_turns_is_replaced_and_resumes(
    codex_bin: Path, tmp_path: Path
) -> None:
    async with shim_with_mock(codex_bin, tmp_path) as (shim, server):
        server.script(Reply.text("one"), Reply.text("two"))
        await shim.message("remember the word kumquat", "m1")
        assert isinstance(await shim.terminal("m1"), p.Completion)
        (old,) = app_servers(shim)
        os.kill(old, signal.SIGKILL)
        await until(lambda: not process_tree.is_alive(old))
        await shim.message("what was the word?", "m2")
        assert await shim.terminal("m2") == p.Completion(
            message_id="m2", response="two", last_lines="two"
        )
        (new,) = app_servers(shim)
        assert new != old
        history = server.responses_requests[1].input_texts()
        assert any(t.endswith("remember the word kumquat") for t in history)
        assert "one" in history
        assert not [e for e in shim.events if isinstance(e, p.Warning | p.Error)]


async def test_server_killed_mid_turn_fails_the_message_and_the_next_resumes(
    codex_bin: Path, tmp_path: Path
) -> None:
    async with shim_with_mock(codex_bin, tmp_path) as (shim, server):
        server.script(Reply.hanging(), Reply.text("after the crash"))
        await shim.message("this turn will lose its server", "m1")
        with trio.fail_after(20):
            await server.wait_for_responses_requests(1)
        (old,) = app_servers(shim)
        os.kill(old, signal.SIGKILL)
        failed = await shim.terminal("m1")
        assert isinstance(failed, p.DeliveryFailed)
        assert "app-server exited" in failed.reason
        await shim.message("next", "m2")
        assert await shim.terminal("m2") == p.Completion(
            message_id="m2", response="after the crash", last_lines="after the crash"
        )
        assert app_servers(shim) != [old]
        assert not [e for e in shim.events if isinstance(e, p.Warning)]
        assert len(shim.terminals("m1")) == 1


async def test_unknown_thread_starts_a_fresh_one_with_a_warning(
    codex_bin: Path, tmp_path: Path
) -> None:
    async with shim_with_mock(codex_bin, tmp_path) as (shim, server):
        server.script(Reply.text("one"), Reply.text("fresh"))
        await shim.message("first", "m1")
        assert isinstance(await shim.terminal("m1"), p.Completion)
        (old,) = app_servers(shim)
        os.kill(old, signal.SIGKILL)
        await until(lambda: not process_tree.is_alive(old))
        home = tmp_path / "codex-home"
        for entry in home.iterdir():  # sessions and state: the thread is forgotten
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != "config.toml":
                entry.unlink()
        await shim.message("second", "m2")
        assert await shim.terminal("m2") == p.Completion(
            message_id="m2", response="fresh", last_lines="fresh"
        )
        warnings = [e.message for e in shim.events if isinstance(e, p.Warning)]
        assert any("earlier context was lost" in w for w in warnings), warnings
        history = server.responses_requests[-1].input_texts()
        assert not any(t.endswith("first") for t in history)


async def test_auth_then_usage_limit(codex_bin: Path, tmp_path: Path) -> None:
    resets_at = int(time.time()) + 3 * 3600
    async with shim_with_mock(codex_bin, tmp_path) as (shim, server):
        server.script(Reply.http_error(401), Reply.usage_limit(resets_at))
        await shim.message("one", "m1")
        failed = await shim.terminal("m1")
        assert isinstance(failed, p.DeliveryFailed)
        assert failed.reason.startswith("authentication required")
        assert any(isinstance(e, p.AuthRequired) for e in shim.events)
        await shim.message("two", "m2")
        failed = await shim.terminal("m2")
        assert isinstance(failed, p.DeliveryFailed)
        assert failed.reason.startswith("usage limit reached")
        (quota,) = [e for e in shim.events if isinstance(e, p.QuotaBlocked)]
        assert quota.retry_at_epoch_secs is not None
        assert abs(quota.retry_at_epoch_secs - resets_at) <= 60


async def test_context_window_exhausted(codex_bin: Path, tmp_path: Path) -> None:
    async with shim_with_mock(codex_bin, tmp_path) as (shim, server):
        server.script(Reply.failed("context_length_exceeded", "Your input exceeds the window"))
        await shim.message("one", "m1")
        failed = await shim.terminal("m1")
        assert isinstance(failed, p.DeliveryFailed)
        assert failed.reason.startswith("context window exhausted")
        assert any(isinstance(e, p.ContextExhausted) for e in shim.events)


async def test_kill_during_a_long_command_leaves_no_survivor(
    codex_bin: Path, tmp_path: Path
) -> None:
    async with shim_with_mock(codex_bin, tmp_path) as (shim, server):
        server.script(Reply.shell("sleep 300"))
        await shim.message("run it", "m1")
        sleeper = await wait_for_command(shim, b"sleep 300")
        everything = shim.descendants()
        assert sleeper in everything
        assert app_servers(shim)
        started = trio.current_time()
        await shim.send(p.Kill())
        failed = await shim.terminal("m1", timeout_secs=10)
        assert isinstance(failed, p.DeliveryFailed)
        assert await shim.wait_exit(10) == 0
        assert trio.current_time() - started < 8
        assert [pid for pid in everything if process_tree.is_alive(pid)] == []


async def test_turn_timeout_stops_the_command_but_keeps_the_server(
    codex_bin: Path, tmp_path: Path
) -> None:
    async with shim_with_mock(codex_bin, tmp_path, "--turn-timeout", "3") as (shim, server):
        server.script(Reply.shell("sleep 300"), Reply.text("after"))
        await shim.message("run it", "m1")
        sleeper = await wait_for_command(shim, b"sleep 300")
        (server_pid,) = app_servers(shim)
        failed = await shim.terminal("m1", timeout_secs=15)
        assert isinstance(failed, p.DeliveryFailed)
        assert "timed out" in failed.reason
        assert not process_tree.is_alive(sleeper)
        assert app_servers(shim) == [server_pid]
        others = [pid for pid in shim.descendants() if pid != server_pid]
        assert [pid for pid in others if process_tree.is_alive(pid)] == []
        await shim.message("and now?", "m2")
        done = await shim.terminal("m2")
        assert isinstance(done, p.Completion)
        assert app_servers(shim) == [server_pid]


async def test_steer_adds_a_message_to_the_running_turn(codex_bin: Path, tmp_path: Path) -> None:
    async with shim_with_mock(codex_bin, tmp_path, "--on-busy", "steer") as (shim, server):
        server.script(Reply.text("first answer").with_delay(1.0), Reply.text("answer to both"))
        await shim.message("start on this", "m1")
        with trio.fail_after(20):
            await server.wait_for_responses_requests(1)
        await shim.message("and consider this too", "m2")
        await shim.wait_for(lambda e: e == p.MessageDelivered(id="m2"))
        first = await shim.terminal("m1")
        second = await shim.terminal("m2")
        assert isinstance(first, p.Completion)
        assert isinstance(second, p.Completion)
        assert first.response == second.response
        await shim.drain()
        assert len(shim.terminals("m1")) == len(shim.terminals("m2")) == 1
        assert not [e for e in shim.events if isinstance(e, p.Warning)]
        last = server.responses_requests[-1].user_texts()
        assert any(t.endswith("and consider this too") for t in last)
