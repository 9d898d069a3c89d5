"""Hypothesis settings profiles, chosen by ``$TRIO_CODEX_SHIM_FUZZ_PROFILE``.

- ``ci`` (the default): quick enough for every test run.
- ``long``: what ``nox -s fuzz`` runs; many more examples and longer
  stateful runs.

:func:`load_profile` registers and loads the chosen profile for every
Hypothesis test; the real-process harness (:mod:`.harness`) is slower by
nature, so it scales its own example and step counts with the profile
through :func:`harness_settings`.  Every profile prints the
``@reproduce_failure`` blob of a failure (``print_blob=True``).
"""

from __future__ import annotations

import os
from typing import Final, NamedTuple

from hypothesis import HealthCheck, settings

PROFILE_ENV: Final = "TRIO_CODEX_SHIM_FUZZ_PROFILE"
DEFAULT_PROFILE: Final = "ci"


class _Scale(NamedTuple):
    max_examples: int
    stateful_step_count: int


_GENERAL: Final = {
    "ci": _Scale(max_examples=100, stateful_step_count=50),
    "long": _Scale(max_examples=5000, stateful_step_count=200),
}
"""Pure tests (no processes): strategies, schema, the sans-IO core."""

_HARNESS: Final = {
    "ci": _Scale(max_examples=6, stateful_step_count=10),
    "long": _Scale(max_examples=150, stateful_step_count=40),
}
"""The stateful harness, which starts a real shim for every example."""


def active_profile() -> str:
    """The profile ``$TRIO_CODEX_SHIM_FUZZ_PROFILE`` names (default ``ci``)."""
    name = os.environ.get(PROFILE_ENV, DEFAULT_PROFILE) or DEFAULT_PROFILE
    if name not in _GENERAL:
        raise ValueError(f"${PROFILE_ENV}={name!r}: expected one of {sorted(_GENERAL)}")
    return name


def register_profiles() -> None:
    """Register ``ci`` and ``long`` with Hypothesis (idempotent)."""
    for name, scale in _GENERAL.items():
        settings.register_profile(
            name,
            max_examples=scale.max_examples,
            stateful_step_count=scale.stateful_step_count,
            deadline=None,  # shared CI machines stall; a deadline there only flakes
            print_blob=True,
        )


def load_profile() -> str:
    """Register the profiles and load the active one; its name."""
    register_profiles()
    name = active_profile()
    settings.load_profile(name)
    return name


def harness_settings(
    max_examples: int | None = None, stateful_step_count: int | None = None
) -> settings:
    """Settings for the real-process stateful harness under the active profile."""
    scale = _HARNESS[active_profile()]
    return settings(
        max_examples=scale.max_examples if max_examples is None else max_examples,
        stateful_step_count=(
            scale.stateful_step_count if stateful_step_count is None else stateful_step_count
        ),
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
