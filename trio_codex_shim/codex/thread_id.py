"""Validate Codex thread ids before they reach an argv or a request."""

from __future__ import annotations

import re
from typing import Final

# An id starts with a letter or digit and holds at least one digit (Codex uses UUIDs),
# so neither an option (``-x``) nor a word such as ``resume`` passes.
_THREAD_ID: Final = re.compile(r"(?=[^0-9]*[0-9])[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def is_valid_thread_id(value: str) -> bool:
    """Whether ``value`` looks like a Codex thread id (UUID-like; never ``-x`` or a word)."""
    return _THREAD_ID.fullmatch(value) is not None
