"""``--backend app-server`` end to end against the fake CLI's app-server mode.

For what the real CLI cannot stage on demand: server requests, unknown
notifications, every ``codexErrorInfo``, and steering a turn that is
guaranteed to still be running.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from app_server_harness import Shim, open_shim
from shim_helpers import until

from trio_codex_shim import protocol as p
from trio_codex_shim.testing.fake_codex import (
    Invocation,
    Scenario,
    Sleep,
    Turn,
    answer_turn,
    fail_turn,
    read_invocations,
    write_fake_codex_launcher,
)


@asynccontextmanager
async def fake_shim(tmp_path: Path, scenario: Scenario, *extra: str) -> AsyncIterator[Shim]:
    path = scenario.write(tmp_path / "scenario.json")
    codex = write_fake_codex_launcher(tmp_path / "bin" / "codex", path, sys.executable)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    args = [
        "--backend",
        "app-server",
        "--codex",
        os.fspath(codex),
        "--cwd",
        os.fspath(work),
        "--stop-grace",
        "0.5",
        "--log-level",
        "debug",
        *extra,
    ]
    env = dict(os.environ)
    async with open_shim(args, env=env, log_path=tmp_path / "shim.log", cwd=tmp_path) as shim:
        yield shim


def records(tmp_path: Path, kind: str) -> list[Invocation]:
    return [r for r in read_invocations(tmp_path / "scenario.json") if r.kind == kind]


async def test_server_requests_are_answered_and_unknown_notifications_ignored(
    tmp_path: Path,
) -> None:
    raw: list[Any] = [
        {"method": "brand/new/notification", "params": {"threadId": "$THREAD_ID", "x": [1]}},
        {"method": "item/completed", "params": {"threadId": "$THREAD_ID", "item": {"type": "?"}}},
        {
            "id": "approve-1",
            "method": "item/commandExecution/requestApproval",
            "params": {"threadId": "$THREAD_ID", "turnId": "$TURN_ID", "itemId": "i1"},
        },
        {
            "id": 77,
            "method": "item/tool/requestUserInput",
            "params": {"threadId": "$THREAD_ID", "turnId": "$TURN_ID", "questions": []},
        },
        {"id": 78, "method": "account/chatgptAuthTokens/refresh", "params": {}},
    ]
    turn = Turn(answer="done anyway", app_server_notifications=raw)
    async with fake_shim(tmp_path, Scenario(turns=[turn])) as shim:
        await shim.message("go", "m1")
        assert await shim.terminal("m1") == p.Completion(
            message_id="m1", response="done anyway", last_lines="done anyway"
        )
        await until(lambda: len(records(tmp_path, "client-response")) == 3)
    answers = {r.request_id: r.params for r in records(tmp_path, "client-response")}
    assert answers["approve-1"] == {"decision": "decline"}
    assert answers[77] == {"answers": {}}
    assert answers[78]["code"] == -32601
    warnings = [e.message for e in shim.events if isinstance(e, p.Warning)]
    assert len(warnings) == 3
    assert "item/commandExecution/requestApproval" in warnings[0]
    assert "declined" in warnings[0]
    assert not [e for e in shim.events if isinstance(e, p.Error)]


async def test_failures_are_classified_by_codex_error_info(tmp_path: Path) -> None:
    turns: list[Turn | list[Any]] = [
        fail_turn("slow down", codex_error_info="rateLimitExceeded"),
        fail_turn("too busy", codex_error_info="serverOverloaded"),
        fail_turn("something else", codex_error_info="badRequest"),
        fail_turn("rate limit, says the text", codex_error_info="internalServerError"),
        fail_turn("no classification: rate limit", codex_error_info=None),
        fail_turn("who are you", codex_error_info="unauthorized"),
        fail_turn("status 401", codex_error_info={"httpConnectionFailed": {"httpStatusCode": 401}}),
        fail_turn("limit hit; try again at 3:04 AM.", codex_error_info="usageLimitExceeded"),
    ]
    expected = [
        "codex turn failed (rate_limit): slow down",
        "codex turn failed (overloaded): too busy",
        "codex turn failed (other): something else",
        "codex turn failed (other): rate limit, says the text",
        "codex turn failed (rate_limit): no classification: rate limit",
        "authentication required: who are you",
        "authentication required: status 401",
        "usage limit reached: limit hit; try again at 3:04 AM.",
    ]
    async with fake_shim(tmp_path, Scenario(turns=turns)) as shim:
        for i, reason in enumerate(expected):
            await shim.message(f"turn {i}", f"m{i}")
            assert await shim.terminal(f"m{i}") == p.DeliveryFailed(id=f"m{i}", reason=reason)
    assert len([e for e in shim.events if isinstance(e, p.AuthRequired)]) == 2
    (quota,) = [e for e in shim.events if isinstance(e, p.QuotaBlocked)]
    assert quota.retry_at_label is not None
    assert quota.retry_at_label.endswith("03:04")


async def test_steer_adds_a_message_to_the_running_turn(tmp_path: Path) -> None:
    turn = answer_turn("did both", steps=[Sleep(1.5)])
    async with fake_shim(tmp_path, Scenario(turns=[turn]), "--on-busy", "steer") as shim:
        await shim.message("first task", "m1")
        await shim.wait_for(lambda e: e == p.MessageDelivered(id="m1"))
        await shim.message("and a second one", "m2")
        await shim.wait_for(lambda e: e == p.MessageDelivered(id="m2"))
        first = await shim.terminal("m1")
        second = await shim.terminal("m2")
        await shim.drain()
    assert first == p.Completion(message_id="m1", response="did both", last_lines="did both")
    assert second == p.Completion(message_id="m2", response="did both", last_lines="did both")
    assert len(shim.terminals("m1")) == len(shim.terminals("m2")) == 1
    assert not [e for e in shim.events if isinstance(e, p.Warning)]
    (start,) = records(tmp_path, "turn/start")
    (steer,) = records(tmp_path, "turn/steer")
    assert steer.params["expectedTurnId"]
    assert steer.params["threadId"] == start.params["threadId"]
    assert steer.params["input"][0]["text"].endswith("and a second one")


async def test_a_server_that_cannot_start_fails_the_message_not_the_shim(
    tmp_path: Path,
) -> None:
    args = ["--backend", "app-server", "--codex", os.fspath(tmp_path / "no-such-codex")]
    args += ["--cwd", os.fspath(tmp_path)]
    async with open_shim(
        args, env=dict(os.environ), log_path=tmp_path / "shim.log", cwd=tmp_path
    ) as shim:
        await shim.message("hello?", "m1")
        failed = await shim.terminal("m1")
        assert isinstance(failed, p.DeliveryFailed)
        assert "could not be started" in failed.reason
        await shim.send(p.Ping())
        await shim.wait_for(lambda e: isinstance(e, p.Pong), timeout_secs=5)


async def test_a_server_exiting_after_each_turn_is_restarted_on_the_same_thread(
    tmp_path: Path,
) -> None:
    turns: list[Turn | list[Any]] = [
        answer_turn("one", thread_id="thread-1a", exit_code=0),
        answer_turn("two", exit_code=3),
        answer_turn("three"),
    ]
    async with fake_shim(tmp_path, Scenario(turns=turns)) as shim:
        for i, answer in enumerate(("one", "two", "three")):
            await shim.message(f"turn {i}", f"m{i}")
            done = await shim.terminal(f"m{i}")
            assert done == p.Completion(message_id=f"m{i}", response=answer, last_lines=answer)
    assert len(records(tmp_path, "app-server")) == 3
    assert len(records(tmp_path, "thread/start")) == 1
    resumes = records(tmp_path, "thread/resume")
    assert [r.params["threadId"] for r in resumes] == ["thread-1a", "thread-1a"]
    assert [r.thread_id for r in records(tmp_path, "turn/start")] == ["thread-1a"] * 3


async def test_interrupt_on_turn_timeout_against_the_fake(tmp_path: Path) -> None:
    turns: list[Turn | list[Any]] = [answer_turn("never", steps=[Sleep(60)]), answer_turn("ok")]
    async with fake_shim(tmp_path, Scenario(turns=turns), "--turn-timeout", "1") as shim:
        await shim.message("slow", "m1")
        failed = await shim.terminal("m1", timeout_secs=10)
        assert isinstance(failed, p.DeliveryFailed)
        assert "timed out" in failed.reason
        await shim.message("fast", "m2")
        assert isinstance(await shim.terminal("m2"), p.Completion)
    (interrupt,) = records(tmp_path, "turn/interrupt")
    assert interrupt.params["turnId"]
    assert len(records(tmp_path, "app-server")) == 1


async def test_a_server_ignoring_the_interrupt_is_replaced(tmp_path: Path) -> None:
    turns: list[Turn | list[Any]] = [
        Turn(answer="never", steps=[Sleep(60)], ignore_interrupt=True, thread_id="thread-1h"),
        answer_turn("ok"),
    ]
    async with fake_shim(tmp_path, Scenario(turns=turns), "--turn-timeout", "1") as shim:
        await shim.message("slow", "m1")
        failed = await shim.terminal("m1", timeout_secs=15)
        assert isinstance(failed, p.DeliveryFailed)
        assert "timed out" in failed.reason
        await shim.message("fast", "m2")
        assert isinstance(await shim.terminal("m2"), p.Completion)
    assert len(records(tmp_path, "turn/interrupt")) == 1
    assert len(records(tmp_path, "app-server")) == 2
    (resume,) = records(tmp_path, "thread/resume")
    assert resume.params["threadId"] == "thread-1h"


async def test_a_server_that_exits_at_start_reports_why(tmp_path: Path) -> None:
    scenario = Scenario(turns=[answer_turn("unreachable")])
    async with fake_shim(tmp_path, scenario, "--codex-arg=--no-such-option") as shim:
        await shim.message("hello?", "m1")
        failed = await shim.terminal("m1", timeout_secs=10)
        assert isinstance(failed, p.DeliveryFailed)
        assert "codex app-server unavailable" in failed.reason
        assert "--no-such-option" in failed.reason  # the CLI's own complaint, from stderr
        await shim.send(p.Ping())
        await shim.wait_for(lambda e: isinstance(e, p.Pong), timeout_secs=5)
