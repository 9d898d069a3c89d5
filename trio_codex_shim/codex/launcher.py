"""Skip the npm package's Node launcher and run the native Codex binary it wraps.

``npm install @openai/codex`` installs ``bin/codex.js``, a Node script that
finds the platform package's native binary and spawns it (on Node 20; newer
Nodes ``execve`` it), adding ``CODEX_MANAGED_PACKAGE_ROOT`` and
``CODEX_MANAGED_BY_NPM=1`` to its environment.  Starting Node costs about
120 ms a turn and, when Node spawns, a SIGKILL to it orphans the binary.  As
the official TypeScript SDK does, the shim resolves the binary itself and
keeps the environment the launcher would set.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Final

import msgspec

_TRIPLES: Final = {
    ("Linux", "x86_64"): ("x86_64-unknown-linux-musl", "@openai/codex-linux-x64"),
    ("Linux", "aarch64"): ("aarch64-unknown-linux-musl", "@openai/codex-linux-arm64"),
    ("Darwin", "x86_64"): ("x86_64-apple-darwin", "@openai/codex-darwin-x64"),
    ("Darwin", "arm64"): ("aarch64-apple-darwin", "@openai/codex-darwin-arm64"),
}
_MANAGED_BY: Final = (
    "CODEX_MANAGED_BY_NPM",
    "CODEX_MANAGED_BY_BUN",
    "CODEX_MANAGED_BY_PNPM",
    "CODEX_MANAGED_BY_VITE_PLUS",
)


class ResolvedCodex(msgspec.Struct, frozen=True):
    """The program to start and the environment changes the launcher would make."""

    program: str
    set_env: dict[str, str] = {}
    unset_env: tuple[str, ...] = ()
    native: bool = False


def resolve_codex(program: str) -> ResolvedCodex:
    """The native binary behind ``program`` if it is the npm launcher, else ``program``."""
    found = shutil.which(program)
    if found is None:
        return ResolvedCodex(program)
    real = Path(found).resolve()
    if real.name != "codex.js" or real.parent.name != "bin":
        return ResolvedCodex(program)
    package_root = real.parent.parent
    binary = _native_binary(package_root)
    if binary is None:
        return ResolvedCodex(program)
    return ResolvedCodex(
        os.fspath(binary),
        set_env={
            "CODEX_MANAGED_PACKAGE_ROOT": os.fspath(package_root),
            "CODEX_MANAGED_BY_NPM": "1",
        },
        unset_env=_MANAGED_BY[1:],
        native=True,
    )


def _native_binary(package_root: Path) -> Path | None:
    key = (platform.system(), platform.machine())
    if key not in _TRIPLES:
        return None
    triple, platform_package = _TRIPLES[key]
    scope_dir = package_root.parent  # node_modules/@openai
    candidates = [
        scope_dir / platform_package.split("/")[1] / "vendor" / triple / "bin" / "codex",
        package_root / "node_modules" / platform_package / "vendor" / triple / "bin" / "codex",
        package_root / "vendor" / triple / "bin" / "codex",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def apply_env(env: dict[str, str], resolved: ResolvedCodex) -> dict[str, str]:
    """``env`` changed as the launcher would change it for the binary."""
    out = {k: v for k, v in env.items() if k not in resolved.unset_env}
    out.update(resolved.set_env)
    return out
