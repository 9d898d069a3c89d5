"""Classification against what the real Codex 0.169 CLI printed (golden JSONL).

Each fixture in ``tests/fixtures/codex_exec`` is real ``codex exec --json``
output captured against the mock model server (``docs/codex-cli-observed.md``);
``index.json`` holds each run's exit code and stderr.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from trio_codex_shim.codex.events import (
    AgentMessage,
    CodexEvent,
    FailureKind,
    ThreadStarted,
    TokenUsage,
    TurnFailed,
)
from trio_codex_shim.codex.exec_jsonl import ExecTranslator

FIXTURES = Path(__file__).parent / "fixtures" / "codex_exec"
INDEX: dict[str, dict[str, object]] = json.loads((FIXTURES / "index.json").read_text())
RESUMED = "019a0000-0000-7000-0000-000000000001"

EXPECTED: dict[str, FailureKind | None] = {
    "plain": None,
    "reasoning": None,
    "exec_command": None,
    "exec_command_failing": None,
    "apply_patch": None,
    "apply_patch_failing": None,
    "resume_turn1": None,
    "resume_turn2": None,
    "resume_turn3": None,
    "resume_after_failure_turn1": None,
    "resume_after_failure_turn2": FailureKind.OVERLOADED,
    "resume_after_failure_turn3": None,
    "resume_unknown_uuid": FailureKind.THREAD_NOT_FOUND,
    "resume_not_a_uuid": None,
    "usage_limit_plus_today": FailureKind.USAGE_LIMIT,
    "usage_limit_plus_other_day": FailureKind.USAGE_LIMIT,
    "usage_limit_no_plan": FailureKind.USAGE_LIMIT,
    "usage_limit_pro": FailureKind.USAGE_LIMIT,
    "usage_limit_free": FailureKind.USAGE_LIMIT,
    "usage_limit_team": FailureKind.USAGE_LIMIT,
    "usage_limit_resets_in_seconds_only": FailureKind.USAGE_LIMIT,
    "usage_limit_tz_los_angeles": FailureKind.USAGE_LIMIT,
    "http_429_rate_limit": FailureKind.RATE_LIMIT,
    "http_429_insufficient_quota": FailureKind.USAGE_LIMIT,
    "http_401": FailureKind.AUTH,
    "http_403": FailureKind.OTHER,
    "http_403_cloudflare": FailureKind.OTHER,
    "http_400_context_length": FailureKind.CONTEXT_WINDOW,
    "http_400_other": FailureKind.OTHER,
    "http_500": FailureKind.OVERLOADED,
    "http_503": FailureKind.OVERLOADED,
    "failed_context_length": FailureKind.CONTEXT_WINDOW,
    "failed_server_error": FailureKind.OTHER,
    "failed_rate_limit": FailureKind.RATE_LIMIT,
    "failed_insufficient_quota": FailureKind.USAGE_LIMIT,
    "failed_usage_limit": FailureKind.USAGE_LIMIT,
    "cut_close": FailureKind.OTHER,
    "cut_close_after_message": FailureKind.OTHER,
    "cut_eof": FailureKind.OTHER,
    "stall_idle_timeout": FailureKind.OTHER,
    "cut_then_stream_retry": None,
    "http_500_then_request_retry": None,
    "interrupted_sigint": None,  # no JSONL failure: the core reports the exit status
}


def _translate(
    name: str, now: dt.datetime | None = None
) -> tuple[ExecTranslator, list[CodexEvent]]:
    meta = INDEX[name]
    translator = ExecTranslator(resuming=RESUMED if name.startswith("resume") else None, now=now)
    events: list[CodexEvent] = []
    for line in (FIXTURES / f"{name}.jsonl").read_bytes().split(b"\n"):
        events += translator.feed(line)
    exit_code = meta["exit_code"]
    assert isinstance(exit_code, int)
    stderr = meta["stderr"]
    assert isinstance(stderr, list)
    events += translator.finish(exit_code, "\n".join(map(str, stderr)))
    return translator, events


def test_every_fixture_has_an_expectation() -> None:
    assert set(EXPECTED) == set(INDEX)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_classification(name: str) -> None:
    translator, events = _translate(name)
    failures = [e.failure for e in events if isinstance(e, TurnFailed)]
    expected = EXPECTED[name]
    if expected is None:
        assert failures == []
    else:
        assert [f.kind for f in failures] == [expected]
        assert failures[0].message  # the CLI's own words reach the orchestrator
    if INDEX[name]["exit_code"] == 0:
        assert translator.completed
        assert any(isinstance(e, AgentMessage) for e in events)
        assert any(isinstance(e, TokenUsage) and e.scope == "thread" for e in events)
    assert translator.bad_lines == 0


def test_resumed_turns_report_running_totals() -> None:
    totals = []
    for name in ("resume_turn1", "resume_turn2", "resume_turn3"):
        _, events = _translate(name)
        usage = [e for e in events if isinstance(e, TokenUsage)]
        totals.append(usage[-1].input_tokens)
    assert totals == sorted(totals) and totals[0] < totals[1] < totals[2]
    assert totals[2] == 600  # 100 + 200 + 300 scripted: a running total, not per turn


def test_resume_keeps_the_thread_id() -> None:
    ids = set()
    for name in ("resume_turn1", "resume_turn2", "resume_turn3"):
        _, events = _translate(name)
        ids |= {e.thread_id for e in events if isinstance(e, ThreadStarted)}
    assert len(ids) == 1


def test_usage_limit_retry_time_is_parsed() -> None:
    utc = dt.UTC
    now = dt.datetime(2026, 11, 25, 23, 0, tzinfo=utc)
    _, today = _translate("usage_limit_plus_today", now=now)
    _, other = _translate("usage_limit_plus_other_day", now=now)
    _, later = _translate("usage_limit_resets_in_seconds_only", now=now)
    (f_today,) = [e.failure for e in today if isinstance(e, TurnFailed)]
    (f_other,) = [e.failure for e in other if isinstance(e, TurnFailed)]
    (f_later,) = [e.failure for e in later if isinstance(e, TurnFailed)]
    assert f_today.retry_at_label is not None and f_today.retry_at_label.startswith("2026-11-2")
    assert f_today.retry_at_epoch_secs is not None
    assert f_other.retry_at_label is not None
    assert f_other.retry_at_epoch_secs is not None
    assert f_other.retry_at_epoch_secs > f_today.retry_at_epoch_secs
    assert f_later.retry_at_epoch_secs is None  # "try again later": no time given
