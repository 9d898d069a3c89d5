"""How the shim starts Codex: the one helper both backends share."""

from __future__ import annotations

import os
from pathlib import Path

from trio_codex_shim.codex.spawn import PIPE_BYTES, widen_pipe


def test_a_pipe_is_widened_and_reports_its_new_capacity() -> None:
    read_end, write_end = os.pipe()
    try:
        assert widen_pipe(read_end, 128 * 1024) == 128 * 1024
        os.set_blocking(write_end, False)
        written = 0
        try:
            while True:
                written += os.write(write_end, b"x" * 4096)
        except BlockingIOError:
            pass
        assert written == 128 * 1024  # the kernel really holds that much now
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_is_not_a_pipe_and_gets_the_default(tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as f:
        assert widen_pipe(f.fileno(), 128 * 1024) == PIPE_BYTES
