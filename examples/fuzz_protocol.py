"""Fuzz a shim through its wire protocol with the stateful Hypothesis harness.

Each example starts a real shim process with the fake Codex CLI, drives it
with a drawn sequence of commands, bad frames and a final Kill, Shutdown or
broken stream, and checks the protocol's promises after every step (see
:mod:`trio_codex_shim.testing.harness`)::

    .venv/bin/python examples/fuzz_protocol.py --examples 50
    .venv/bin/python examples/fuzz_protocol.py --examples 20 --steps 30 \\
        --shim "python -m trio_codex_shim" --shim-arg=--stats-interval=0.5

A failure prints the shrunk sequence of steps and a ``@reproduce_failure``
blob, and exits 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from trio_codex_shim.testing.harness import make_shim_machine, run_shim_machine


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Stateful protocol fuzzing of a shim.")
    parser.add_argument("--examples", type=int, default=20, help="shim runs (default 20)")
    parser.add_argument("--steps", type=int, default=None, help="max steps per run")
    parser.add_argument(
        "--shim",
        default=None,
        help="command that starts the shim (it gets --fd 3 and the harness's options); "
        "default: this package",
    )
    parser.add_argument(
        "--shim-arg", action="append", default=[], help="extra shim argument (repeatable)"
    )
    args = parser.parse_args(argv)
    machine = make_shim_machine(
        argv=None if args.shim is None else tuple(shlex.split(args.shim)),
        extra_args=tuple(args.shim_arg),
    )
    start = time.monotonic()
    try:
        run_shim_machine(machine, max_examples=args.examples, steps=args.steps)
    except Exception as exc:  # Hypothesis has printed the reproducible example
        print(f"FAILED after {time.monotonic() - start:.1f}s: {type(exc).__name__}: {exc}")
        return 1
    print(f"OK: {args.examples} example(s) in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
