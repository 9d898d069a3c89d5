"""Classifying Codex failure text, and reading the retry time out of a usage limit."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_codex_shim.codex.classify import classify_text, parse_retry_at
from trio_codex_shim.codex.events import Failure, FailureKind

K = FailureKind

# A fixed, aware "now": 2026-04-16 01:00 at UTC-07:00.
TZ = dt.timezone(dt.timedelta(hours=-7))
NOW = dt.datetime(2026, 4, 16, 1, 0, tzinfo=TZ)


def epoch(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=TZ).timestamp())


# ---------------------------------------------------------------------------
# Phrases
# ---------------------------------------------------------------------------

PHRASES: list[tuple[str, FailureKind]] = [
    # context window
    (
        "Codex ran out of room in the model's context window. Start a new thread or clear "
        "earlier history before retrying.",
        K.CONTEXT_WINDOW,
    ),
    (
        "Codex ran out of room in the model\u2019s context window.",  # curly apostrophe
        K.CONTEXT_WINDOW,
    ),
    ("error code: context_length_exceeded", K.CONTEXT_WINDOW),
    ("Context window exceeded", K.CONTEXT_WINDOW),
    ("the context window is full", K.CONTEXT_WINDOW),
    ("This conversation is too long", K.CONTEXT_WINDOW),
    ("This model's maximum context length is 272000 tokens", K.CONTEXT_WINDOW),
    ("CONTEXT LIMIT REACHED", K.CONTEXT_WINDOW),
    ("output truncated due to context limit", K.CONTEXT_WINDOW),
    ("Your input exceeds the model's context window", K.CONTEXT_WINDOW),
    ("prompt is too long: 300000 tokens > 200000 maximum", K.CONTEXT_WINDOW),
    # usage limit
    ("You've hit your usage limit. Try again later.", K.USAGE_LIMIT),
    ("usage_limit_reached", K.USAGE_LIMIT),
    ("You are out of credits", K.USAGE_LIMIT),
    ("visit the settings page to purchase more credits", K.USAGE_LIMIT),
    ("You exceeded your current quota, please check your plan and billing details.", K.USAGE_LIMIT),
    # thread not found (checked before auth)
    ("Error: no rollout found for thread id 0199abcd", K.THREAD_NOT_FOUND),
    ("thread not found: 0199", K.THREAD_NOT_FOUND),
    ("No thread found with that id", K.THREAD_NOT_FOUND),
    ("Session not found", K.THREAD_NOT_FOUND),
    # auth
    ("unexpected status 401 Unauthorized: invalid token", K.AUTH),
    ("http status 401", K.AUTH),
    ("Incorrect API key provided: sk-xxx", K.AUTH),
    ("Invalid API key", K.AUTH),
    ("Your refresh token has already been used. Please log in again.", K.AUTH),
    ("Please run `codex login` first", K.AUTH),
    ("token_expired", K.AUTH),
    ("Not logged in", K.AUTH),
    # rate limit / overloaded / other
    ("exceeded retry limit, last status: 429 Too Many Requests", K.RATE_LIMIT),
    ("Rate limit reached for gpt-5.5. Please try again in 1.2s.", K.RATE_LIMIT),
    ("rate_limit_exceeded", K.RATE_LIMIT),
    ("The model is currently overloaded", K.OVERLOADED),
    ("503 Service Unavailable", K.OVERLOADED),
    ("server is busy, retry later", K.OVERLOADED),
    ("stream disconnected before completion", K.OTHER),
    ("", K.OTHER),
]


@pytest.mark.parametrize(("message", "kind"), PHRASES)
def test_phrases(message: str, kind: FailureKind) -> None:
    failure = classify_text(message, now=NOW)
    assert failure.kind is kind
    assert failure.message == message  # the CLI's own words are kept verbatim
    if kind is not K.USAGE_LIMIT:
        assert failure.retry_at_epoch_secs is None
        assert failure.retry_at_label is None


def test_context_wins_over_usage_and_auth() -> None:
    msg = "maximum context length exceeded (quota unaffected, 401 unrelated)"
    assert classify_text(msg).kind is K.CONTEXT_WINDOW
    assert classify_text("usage limit; thread not found").kind is K.USAGE_LIMIT
    assert classify_text("session not found; please log in again").kind is K.THREAD_NOT_FOUND


@given(st.text())
def test_classify_never_raises(message: str) -> None:
    failure = classify_text(message, now=NOW)
    assert isinstance(failure, Failure)
    assert failure.message == message


# ---------------------------------------------------------------------------
# Retry time
# ---------------------------------------------------------------------------


def test_bare_time_later_today() -> None:
    assert parse_retry_at("You've hit your usage limit. try again at 4:29 AM.", now=NOW) == (
        epoch(2026, 4, 16, 4, 29),
        "2026-04-16 04:29",
    )
    assert epoch(2026, 4, 16, 4, 29) == 1776338940  # 11:29 UTC


def test_dated_time() -> None:
    assert parse_retry_at("try again at Sep 29th, 2026 12:55 AM.", now=NOW) == (
        epoch(2026, 9, 29, 0, 55),
        "2026-09-29 00:55",
    )
    assert epoch(2026, 9, 29, 0, 55) == 1790668500


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("try again at Jan 1st, 2027 1:05 PM.", "2027-01-01 13:05"),
        ("try again at Feb 2nd, 2027 12:00 PM.", "2027-02-02 12:00"),
        ("try again at May 3rd, 2026 11:59 PM.", "2026-05-03 23:59"),
        ("try again at Dec 11th, 2026 12:01 AM.", "2026-12-11 00:01"),
        ("try again at Apr 22nd, 2026 9:00 am.", "2026-04-22 09:00"),
    ],
)
def test_dated_times_and_twelve_hour_clock(text: str, label: str) -> None:
    secs, got = parse_retry_at(text, now=NOW)
    assert got == label
    assert secs == int(dt.datetime.strptime(label, "%Y-%m-%d %H:%M").replace(tzinfo=TZ).timestamp())


def test_bare_time_already_past_today_is_tomorrow() -> None:
    now = dt.datetime(2026, 4, 16, 10, 0, tzinfo=TZ)
    assert parse_retry_at("try again at 4:29 AM.", now=now) == (
        epoch(2026, 4, 17, 4, 29),
        "2026-04-17 04:29",
    )
    assert parse_retry_at("try again at 9:58 AM.", now=now)[1] == "2026-04-17 09:58"
    # Codex rounds to the minute: the minute just gone is still today's.
    assert parse_retry_at("try again at 9:59 AM.", now=now)[1] == "2026-04-16 09:59"
    assert parse_retry_at("try again at 10:00 AM.", now=now)[1] == "2026-04-16 10:00"
    assert parse_retry_at("try again at 12:30 PM.", now=now)[1] == "2026-04-16 12:30"


def test_bare_time_crossing_the_year() -> None:
    now = dt.datetime(2026, 12, 31, 23, 0, tzinfo=TZ)
    assert parse_retry_at("try again at 12:15 AM", now=now)[1] == "2027-01-01 00:15"


def test_bare_time_within_the_current_minute_is_today() -> None:
    now = dt.datetime(2026, 4, 16, 4, 29, 40, tzinfo=TZ)
    assert parse_retry_at("try again at 4:29 AM.", now=now) == (
        epoch(2026, 4, 16, 4, 29),
        "2026-04-16 04:29",
    )


def test_no_retry_time() -> None:
    assert parse_retry_at("You've hit your usage limit. Try again later.", now=NOW) == (None, None)
    assert parse_retry_at("try again at noon", now=NOW) == (None, None)
    assert parse_retry_at("", now=NOW) == (None, None)


def test_usage_limit_failure_carries_the_retry_time() -> None:
    msg = (
        "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing), "
        "visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again "
        "at 4:29 AM."
    )
    assert classify_text(msg, now=NOW) == Failure(
        K.USAGE_LIMIT, msg, epoch(2026, 4, 16, 4, 29), "2026-04-16 04:29"
    )


def test_usage_limit_without_a_time() -> None:
    msg = "You've hit your usage limit. Try again later."
    assert classify_text(msg, now=NOW) == Failure(K.USAGE_LIMIT, msg, None, None)


def test_default_now_is_used_when_none_given() -> None:
    secs, label = parse_retry_at("try again at Sep 29th, 2030 12:55 AM.")
    assert label == "2030-09-29 00:55"
    assert secs is not None
    local = dt.datetime.now().astimezone().tzinfo
    assert secs == int(dt.datetime(2030, 9, 29, 0, 55, tzinfo=local).timestamp())


@pytest.mark.parametrize(
    ("message", "label"),
    [
        ("You've hit your usage limit. Try again at 4:29 AM.", "2026-04-16 04:29"),
        (
            "You\u2019ve hit your usage limit. Try again at Sep 29th, 2026 12:55 AM.",
            "2026-09-29 00:55",
        ),
    ],
)
def test_codex_capitalised_try_again(message: str, label: str) -> None:
    failure = classify_text(message, now=NOW)
    assert failure.kind is K.USAGE_LIMIT
    assert failure.retry_at_label == label
