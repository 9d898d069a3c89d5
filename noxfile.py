"""Developer sessions.  Run through ``./run SESSION`` (it makes the venv first).

Every session runs in the project's ``.venv`` (``venv_backend="none"``), with
tools invoked as ``python -m TOOL`` so the venv's copies are used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

REPO = Path(__file__).resolve().parent
CODEX_VERSION = "0.169.0"
CODEX_DIR = REPO / ".codex-cli"
CODEX_BIN = CODEX_DIR / "node_modules" / ".bin" / "codex"
PY = sys.executable


def _codex_installed() -> bool:
    package = CODEX_DIR / "node_modules" / "@openai" / "codex" / "package.json"
    return CODEX_BIN.exists() and f'"version": "{CODEX_VERSION}"' in package.read_text()


@nox.session
def install_codex(session: nox.Session) -> None:
    """Install the pinned Codex CLI into ./.codex-cli (ignored by git)."""
    if _codex_installed():
        session.log(f"codex {CODEX_VERSION} already in {CODEX_DIR}")
        return
    CODEX_DIR.mkdir(exist_ok=True)
    session.log(f"installing @openai/codex@{CODEX_VERSION} from npm into {CODEX_DIR}")
    session.run(
        "npm",
        "install",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(CODEX_DIR),
        f"@openai/codex@{CODEX_VERSION}",
        external=True,
    )
    session.run(str(CODEX_BIN), "--version", external=True)


def compile_bytecode(session: nox.Session) -> None:
    """Write the package's bytecode, as an install does.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (it is on our machines), every
    shim the tests or the demo start would otherwise compile the package
    again: ~40 ms of each start-up, measured.
    """
    session.run(PY, "-m", "compileall", "-q", str(REPO / "trio_codex_shim"))


def _python_files() -> list[str]:
    dirs = ("trio_codex_shim", "tests", "examples", "benchmarks")
    return sorted(str(p) for d in dirs for p in (REPO / d).rglob("*.py"))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and flake8-async's checks that ruff lacks."""
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(PY, "-m", "ruff", "format", "--check", ".")
    startable = "serve_mock_model,supervise,_serve"  # functions meant for nursery.start
    session.run(
        PY, "-m", "flake8_async", f"--startable-in-context-manager={startable}", *_python_files()
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks."""
    session.run(PY, "-m", "mypy", "--strict")


@nox.session
def tests(session: nox.Session) -> None:
    """Everything: lint, types, then the whole pytest suite with the real Codex CLI."""
    install_codex(session)
    lint(session)
    typecheck(session)
    compile_bytecode(session)
    env = {"CODEX_BIN": os.environ.get("CODEX_BIN", str(CODEX_BIN))}
    session.run(PY, "-m", "pytest", *session.posargs, env=env)


@nox.session
def demo(session: nox.Session) -> None:
    """Mock model server + shim + real Codex CLI (fake CLI if absent), two messages."""
    install_codex(session)
    compile_bytecode(session)
    session.run(PY, "examples/demo.py", *session.posargs, env={"CODEX_BIN": str(CODEX_BIN)})


@nox.session
def fuzz(session: nox.Session) -> None:
    """The long Hypothesis profile for every property and stateful test, and the soak."""
    compile_bytecode(session)
    env = {"TRIO_CODEX_SHIM_FUZZ_PROFILE": "long"}
    targets = [
        "tests/test_core_machine.py",
        "tests/test_harness.py",
        "tests/test_protocol_golden.py",
        "tests/test_framing.py",
        "tests/test_faults.py",
        "tests/test_faults_orchestrator.py",
        "tests/test_soak.py",
    ]
    session.run(PY, "-m", "pytest", *targets, *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark table (figures, baselines and ratios) in one run."""
    install_codex(session)  # (the benchmarks compile the package's bytecode themselves)
    env = {"CODEX_BIN": str(CODEX_BIN), "PYTHONPATH": os.fspath(REPO)}
    session.run(PY, "-m", "benchmarks", *session.posargs, env=env)
