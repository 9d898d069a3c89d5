"""Text rules shared with batty: the message header and summary lines."""

from __future__ import annotations

from typing import Final

SUMMARY_LINES: Final = 5
"""How many trailing lines of the response a summary or ``last_lines`` carries."""

_APPROACHING_PHRASES: Final = (
    "automatically compress prior messages",
    "context window is approaching",
    "approaching context limit",
    "context is getting large",
    "conversation history has been compressed",
    "messages were compressed",
    "running low on context",
    "nearing the context limit",
)


def last_lines(text: str, n: int) -> str:
    """The last ``n`` lines of ``text`` joined by newlines (batty's rule)."""
    if n <= 0:
        return ""
    return "\n".join(text.splitlines()[-n:])


def format_injected_message(sender: str, body: str) -> str:
    """The prompt Codex sees: ``body`` under the header batty's agents expect."""
    return (
        f"--- Message from {sender} ---\n"
        f"Reply-To: {sender}\n"
        f'If you need to reply, use: batty send {sender} "<your reply>"\n'
        "\n"
        f"{body}"
    )


def mentions_context_pressure(text: str) -> bool:
    """Whether agent text says its context is filling up (an early warning)."""
    lower = text.lower()
    # Every phrase says "context" or "compress": most messages stop here.
    if "context" not in lower and "compress" not in lower:
        return False
    return any(phrase in lower for phrase in _APPROACHING_PHRASES)
