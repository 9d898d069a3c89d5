"""Conformance with the real Codex CLI, offline.

orchestrator frames → shim → real ``codex exec --json`` (pinned 0.169.0) → the
mock model server → real tool execution in a temporary workspace → events back.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import trio
from shim_helpers import events_so_far, processes_with, real_shim, terminal_ids, until

from trio_codex_shim import protocol as p
from trio_codex_shim.client import open_shim
from trio_codex_shim.testing.mock_model import Reply, open_mock_model

pytestmark = pytest.mark.real_codex

LIMIT = 60  # seconds: the bound on every test's waits


async def test_plain_answer(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(Reply.text("Hello from the model").with_usage(120, 8))
        setup = real_shim(tmp_path, codex_bin, mock.base_url, "--stats-interval", "0.2")
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                outcome = await shim.send("Say hello", sender="manager", message_id="m1")
                done = await outcome.wait(LIMIT)
                async for event in events:
                    if isinstance(event, p.SessionStats) and event.input_tokens:
                        stats = event
                        break
    assert done == p.Completion(
        message_id="m1", response="Hello from the model", last_lines="Hello from the model"
    )
    assert (stats.input_tokens, stats.output_tokens) == (120, 8)
    (request,) = mock.responses_requests
    prompt = request.user_texts()[-1]
    assert prompt.startswith("--- Message from manager ---\nReply-To: manager\n")
    assert prompt.endswith("\n\nSay hello")


async def test_reasoning_then_answer(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(Reply.reasoning(("weighing options",), "The answer is 42"))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                done = await (await shim.send("think")).wait(LIMIT)
    assert isinstance(done, p.Completion)
    assert done.response == "The answer is 42"


async def test_shell_command_output_reaches_the_model(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(Reply.shell("echo shell-$((40+2))"), Reply.text("ran it"))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                done = await (await shim.send("run something")).wait(LIMIT)
    assert isinstance(done, p.Completion)
    assert done.response == "ran it"
    assert len(mock.responses_requests) == 2
    assert any("shell-42" in out for out in mock.responses_requests[1].tool_outputs())


async def test_apply_patch_creates_a_file(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(
            Reply.patch_add_file("hello.txt", "hi from the agent\n"), Reply.text("wrote it")
        )
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                done = await (await shim.send("write a file")).wait(LIMIT)
    assert isinstance(done, p.Completion)
    assert (setup.workspace / "hello.txt").read_text() == "hi from the agent\n"


async def test_three_turns_on_one_thread(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(
            Reply.text("first").with_usage(100, 1),
            Reply.text("second").with_usage(200, 2),
            Reply.text("third").with_usage(300, 3),
        )
        setup = real_shim(tmp_path, codex_bin, mock.base_url, "--stats-interval", "0.2")
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                answers = []
                for word in ("alpha", "beta", "gamma"):
                    done = await (await shim.send(f"remember {word}")).wait(LIMIT)
                    assert isinstance(done, p.Completion)
                    answers.append(done.response)
                async for event in events:
                    if isinstance(event, p.SessionStats) and event.output_tokens == 6:
                        stats = event
                        break
    assert answers == ["first", "second", "third"]
    requests = mock.responses_requests
    assert len(requests) == 3
    # Resume proven from what Codex sent: the third request carries the whole history.
    history = "\n".join(requests[2].input_texts())
    for earlier in ("remember alpha", "first", "remember beta", "second", "remember gamma"):
        assert earlier in history
    # One thread: Codex names it in every request.
    assert len({r.header("session-id") for r in requests}) == 1
    # Codex reports running totals (100, 300, 600): reported once, not summed again.
    assert (stats.input_tokens, stats.output_tokens) == (600, 6)


async def test_context_window_exhausted(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(
            Reply.failed(
                "context_length_exceeded", "Your input exceeds the context window"
            ).with_delay(1.0)
        )
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                first = await shim.send("big", message_id="m1")
                queued = await shim.send("next", message_id="m2")
                r1, r2 = await first.wait(LIMIT), await queued.wait(LIMIT)
                later = await (await shim.send("after", message_id="m3")).wait(LIMIT)
                state = await shim.get_state()
                got = await events_so_far(shim, events)
    exhausted = [e for e in got if isinstance(e, p.ContextExhausted)]
    assert len(exhausted) == 1
    assert "ran out of room in the model's context window" in exhausted[0].message
    assert isinstance(r1, p.DeliveryFailed) and isinstance(r2, p.DeliveryFailed)
    assert isinstance(later, p.DeliveryFailed)
    assert state.state is p.ShimState.CONTEXT_EXHAUSTED
    assert len(mock.responses_requests) == 1  # nothing more reached Codex


async def test_usage_limit_blocks_until_the_retry_time(tmp_path: Path, codex_bin: Path) -> None:
    resets_at = int(time.time()) + 3 * 3600
    async with open_mock_model() as mock:
        mock.script(Reply.usage_limit(resets_at))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                failed = await (await shim.send("work", message_id="m1")).wait(LIMIT)
                refused = await (await shim.send("more", message_id="m2")).wait(LIMIT)
                state = await shim.get_state()
                got = await events_so_far(shim, events)
    assert isinstance(failed, p.DeliveryFailed) and isinstance(refused, p.DeliveryFailed)
    blocked = [e for e in got if isinstance(e, p.QuotaBlocked)]
    assert len(blocked) == 2  # once for the failed turn, once for the refused message
    assert "usage limit" in blocked[0].message
    # Codex prints the minute (local time): the parsed retry time matches it.
    assert blocked[0].retry_at_epoch_secs is not None
    assert abs(blocked[0].retry_at_epoch_secs - resets_at) < 120
    assert blocked[0].retry_at_label is not None
    assert state.state is p.ShimState.IDLE
    assert len(mock.responses_requests) == 1  # no Codex process for the refused message


async def test_authentication_needed(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        body = {"error": {"message": "Your refresh token has expired", "type": "invalid_request"}}
        mock.script(Reply.http_error(401, body).with_delay(1.0))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                first = await shim.send("work", message_id="m1")
                queued = await shim.send("more", message_id="m2")
                r1, r2 = await first.wait(LIMIT), await queued.wait(LIMIT)
                state = await shim.get_state()
                got = await events_so_far(shim, events)
    auth = [e for e in got if isinstance(e, p.AuthRequired)]
    assert len(auth) == 1 and "401" in auth[0].message
    assert isinstance(r1, p.DeliveryFailed) and isinstance(r2, p.DeliveryFailed)
    assert state.state is p.ShimState.IDLE


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply.http_error(500, {"error": {"message": "boom"}}), "high demand"),
        (Reply.failed("server_error", "the server broke"), "the server broke"),
        (Reply.cut(), "stream disconnected before completion"),
    ],
    ids=["http-500", "response-failed", "stream-cut"],
)
async def test_other_failures_are_errors_with_the_cli_message(
    tmp_path: Path, codex_bin: Path, reply: Reply, words: str
) -> None:
    async with open_mock_model() as mock:
        mock.script(reply, Reply.text("recovered"))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                failed = await (await shim.send("work", message_id="m1")).wait(LIMIT)
                again = await (await shim.send("again", message_id="m2")).wait(LIMIT)
                got = await events_so_far(shim, events)
    errors = [e for e in got if isinstance(e, p.Error)]
    assert len(errors) == 1 and errors[0].command == "SendMessage"
    assert words in errors[0].reason
    assert isinstance(failed, p.DeliveryFailed) and words in failed.reason
    assert isinstance(again, p.Completion) and again.response == "recovered"
    assert sorted(terminal_ids(got)) == ["m1", "m2"]


async def test_codex_exiting_without_jsonl_reports_its_stderr(
    tmp_path: Path, codex_bin: Path
) -> None:
    async with open_mock_model() as mock:
        setup = real_shim(tmp_path, codex_bin, mock.base_url, "--codex-arg=--no-such-flag")
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                failed = await (await shim.send("work", message_id="m1")).wait(LIMIT)
                got = await events_so_far(shim, events)
    assert isinstance(failed, p.DeliveryFailed)
    errors = [e for e in got if isinstance(e, p.Error)]
    assert "exited with status 2" in errors[0].reason
    assert "--no-such-flag" in errors[0].reason  # the CLI's own stderr


async def test_a_thread_codex_no_longer_has_starts_fresh(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(Reply.text("first"), Reply.text("fresh start"))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                first = await (await shim.send("remember alpha")).wait(LIMIT)
                assert isinstance(first, p.Completion)
                shutil.rmtree(setup.codex_home / "sessions")  # Codex forgets the thread
                second = await (await shim.send("what was it?", message_id="m2")).wait(LIMIT)
                got = await events_so_far(shim, events)
    assert isinstance(second, p.Completion) and second.response == "fresh start"
    warnings = [e.message for e in got if isinstance(e, p.Warning)]
    assert any("earlier context was lost" in w for w in warnings)
    history = "\n".join(mock.responses_requests[-1].input_texts())
    assert "remember alpha" not in history and "what was it?" in history


async def test_context_warning_from_token_usage(tmp_path: Path, codex_bin: Path) -> None:
    async with open_mock_model() as mock:
        mock.script(Reply.text("a").with_usage(500, 10), Reply.text("b").with_usage(900, 20))
        args = ("--context-limit-tokens", "1000", "--context-warn-pct", "80")
        setup = real_shim(tmp_path, codex_bin, mock.base_url, "--stats-interval", "0.2", *args)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                events = shim.events()
                await (await shim.send("one")).wait(LIMIT)
                await (await shim.send("two")).wait(LIMIT)
                got: list[p.AnyEvent] = []
                async for event in events:
                    got.append(event)
                    if isinstance(event, p.SessionStats) and event.output_tokens == 30:
                        break
    warnings = [e for e in got if isinstance(e, p.ContextWarning)]
    assert len(warnings) == 1
    assert warnings[0].context_limit_tokens == 1000 and warnings[0].usage_pct >= 80
    assert warnings[0].model == "gpt-5.5"
    assert any(isinstance(e, p.ContextApproaching) for e in got)
    stats = [e for e in got if isinstance(e, p.SessionStats)][-1]
    assert stats.context_usage_pct == warnings[0].usage_pct


async def test_kill_during_an_agent_command_leaves_no_survivors(
    tmp_path: Path, codex_bin: Path
) -> None:
    marker = "317.5"  # an unusual sleep length marks the agent's processes
    async with open_mock_model() as mock:
        mock.script(Reply.shell(f"sleep {marker} & setsid sleep {marker} & sleep {marker}"))
        setup = real_shim(tmp_path, codex_bin, mock.base_url)
        with trio.fail_after(LIMIT):
            async with open_shim(setup.options) as shim:
                outcome = await shim.send("run forever", message_id="m1")
                await until(lambda: len(processes_with(f"sleep {marker}")) >= 2, LIMIT)
                await shim.kill()
                result = outcome.result
    assert isinstance(result, p.DeliveryFailed)
    assert processes_with(f"sleep {marker}") == []
    assert processes_with(str(setup.codex_home)) == []
