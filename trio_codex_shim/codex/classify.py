"""Classify Codex failure messages by their text.

The app-server backend classifies on ``codexErrorInfo`` and only falls back
to this; the exec backend has nothing but the text.  The phrases are the
ones Codex 0.169.0 prints (``docs/codex-cli-observed.md``), plus batty's
older phrases, which still turn up from other Codex versions.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from .events import Failure, FailureKind

_CONTEXT_PHRASES: Final = (
    "ran out of room in the model's context window",
    "context_length_exceeded",
    "context window exceeded",
    "context window is full",
    "conversation is too long",
    "maximum context length",
    "context limit reached",
    "truncated due to context limit",
    "input exceeds the model",
    "prompt is too long",
)
_USAGE_PHRASES: Final = (
    "usage limit",
    "usage_limit_reached",
    "out of credits",
    "purchase more credits",
    "quota",
    "billing",
)
_AUTH_PHRASES: Final = (
    "401 unauthorized",
    "status 401",
    "invalid api key",
    "incorrect api key",
    "refresh token",
    "please log in again",
    "please run `codex login`",
    "codex login",
    "token_expired",
    "not logged in",
    "unauthorized",
)
_THREAD_PHRASES: Final = (
    "no rollout found",
    "thread not found",
    "no thread found",
    "session not found",
)
_RATE_PHRASES: Final = ("429 too many requests", "rate limit", "rate_limit")
_OVERLOADED_PHRASES: Final = (
    "overloaded",
    "high demand",
    "503 service unavailable",
    "server is busy",
)

_RETRY_AT: Final = re.compile(
    r"(?i:try again at)\s+"
    r"(?:(?P<mon>[A-Z][a-z]{2})\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,\s+(?P<year>\d{4})\s+)?"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp][Mm])",
)
_MONTHS: Final = {
    name: i + 1
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}


def classify_text(message: str, *, now: dt.datetime | None = None) -> Failure:
    """A :class:`Failure` for a Codex error message, judged by its words.

    ``now`` (aware, local) anchors a retry time printed without a date,
    which Codex does when the reset falls today.
    """
    lower = message.lower().replace("\u2019", "'")
    if _has(lower, _CONTEXT_PHRASES):
        return Failure(FailureKind.CONTEXT_WINDOW, message)
    if _has(lower, _USAGE_PHRASES):
        epoch, label = parse_retry_at(message, now=now)
        return Failure(FailureKind.USAGE_LIMIT, message, epoch, label)
    if _has(lower, _THREAD_PHRASES):
        return Failure(FailureKind.THREAD_NOT_FOUND, message)
    if _has(lower, _AUTH_PHRASES):
        return Failure(FailureKind.AUTH, message)
    if _has(lower, _RATE_PHRASES):
        return Failure(FailureKind.RATE_LIMIT, message)
    if _has(lower, _OVERLOADED_PHRASES):
        return Failure(FailureKind.OVERLOADED, message)
    return Failure(FailureKind.OTHER, message)


def parse_retry_at(
    message: str, *, now: dt.datetime | None = None
) -> tuple[int | None, str | None]:
    """The retry time in a usage-limit message: (Unix seconds, ``YYYY-MM-DD HH:MM``).

    Codex prints local time, ``try again at 4:29 AM`` when the reset is today
    and ``try again at Sep 29th, 2026 12:55 AM`` otherwise.  A bare time
    already past today is taken as tomorrow's.
    """
    match = _RETRY_AT.search(message)
    if match is None:
        return None, None
    now = now or dt.datetime.now().astimezone()
    hour = int(match["hour"]) % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    minute = int(match["minute"])
    if match["mon"] is not None and match["mon"] in _MONTHS:
        date = dt.date(int(match["year"]), _MONTHS[match["mon"]], int(match["day"]))
        when = dt.datetime.combine(date, dt.time(hour, minute), tzinfo=now.tzinfo)
    else:
        when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if when < now - dt.timedelta(minutes=1):
            when += dt.timedelta(days=1)
    return int(when.timestamp()), when.strftime("%Y-%m-%d %H:%M")


def _has(text: str, phrases: tuple[str, ...]) -> bool:
    return any(phrase in text for phrase in phrases)
