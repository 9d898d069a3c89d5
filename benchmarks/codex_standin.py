"""A Codex stand-in that streams canned ``codex exec --json`` output as fast as a pipe takes it.

Run as ``python codex_standin.py SPEC [codex arguments...]`` (a launcher written by
:func:`benchmarks.jsonl.write_standin` puts the shim's Codex argv after SPEC).
SPEC is a JSON file: ``{"block": PATH, "repeat": N}``.  The stand-in reads the
prompt from stdin to EOF, prints ``thread.started`` (the resumed id for
``resume ID``) and ``turn.started``, writes the bytes of ``block`` ``repeat``
times, then an agent message and ``turn.completed``, and exits 0.

Standard library only, so it starts quickly; writes go straight to fd 1.
"""

import json
import os
import sys

_NEW_THREAD = "0199a000-0000-7000-8000-00000000bench"


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        spec = json.loads(f.read())
    args = sys.argv[2:]
    thread = args[args.index("resume") + 1] if "resume" in args else _NEW_THREAD
    while os.read(0, 65536):
        pass
    with open(spec["block"], "rb") as f:
        block = f.read()
    _write(b'{"type":"thread.started","thread_id":"%s"}\n' % thread.encode())
    _write(b'{"type":"turn.started"}\n')
    for _ in range(spec["repeat"]):
        _write(block)
    _write(
        b'{"type":"item.completed","item":{"id":"item_z","type":"agent_message","text":"done"}}\n'
    )
    _write(
        b'{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":0,'
        b'"cache_write_input_tokens":0,"output_tokens":10,"reasoning_output_tokens":0}}\n'
    )


if __name__ == "__main__":
    main()
