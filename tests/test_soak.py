"""A raw-frame soak: many pipelined frames, good and bad, against one running shim.

One shim process (a tiny ``/bin/sh`` stand-in for Codex that answers at once)
takes a stream of pipelined frames — Ping, GetState, CaptureScreen, Resize,
SendMessage, malformed JSON, wrong types, unknown tags, invalid UTF-8, deep
nesting, frames at the 1 MiB cap — while a concurrent reader checks every
answer in order.  Zero failures means: every valid command got its answer,
every bad frame its ``Error``, every message id exactly one terminal event,
and the shim was alive at the end and exited cleanly with nothing left.

The normal run sends 20,000 frames; ``nox -s fuzz``
(``TRIO_CODEX_SHIM_FUZZ_PROFILE=long``) runs the ``soak``-marked test with
1,000,000.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, deque
from pathlib import Path
from typing import Final

import msgspec
import pytest
import trio
from fault_helpers import raw_shim, read_events_to_end

from trio_codex_shim import process_tree
from trio_codex_shim import protocol as p
from trio_codex_shim.framing import frame
from trio_codex_shim.testing.hypothesis_profiles import PROFILE_ENV
from trio_codex_shim.testing.strategies import CapFrame, cap_frame

SEED: Final = 20_260_401
THREAD: Final = "019a2000-0000-7000-8000-00000000500a"

_ANSWER: Final[dict[type[p.Command], str | None]] = {
    p.Ping: "Pong",
    p.GetState: "State",
    p.CaptureScreen: "ScreenCapture",
    p.Resize: None,
}
_ANSWER_OF_EVENT: Final[dict[type[p.Event], str]] = {
    p.Pong: "Pong",
    p.State: "State",
    p.ScreenCapture: "ScreenCapture",
}

_FAST_CODEX: Final = """#!/bin/sh
echo $$ >> {pids}
cat > /dev/null
printf '%s\\n' \\
  '{{"type":"thread.started","thread_id":"{thread}"}}' \\
  '{{"type":"turn.started"}}' \\
  '{{"type":"item.completed","item":{{"id":"i0","type":"agent_message","text":"ok"}}}}' \\
  '{{"type":"turn.completed","usage":{{"input_tokens":1,"output_tokens":1}}}}'
"""


def _fast_codex(tmp: Path) -> tuple[Path, Path]:
    """A Codex stand-in that reads the prompt and answers at once; and its pids file."""
    pids = tmp / "codex.pids"
    script = tmp / "codex"
    script.write_text(_FAST_CODEX.format(pids=pids, thread=THREAD))
    script.chmod(0o755)
    return script, pids


# ---------------------------------------------------------------------------
# The frames
# ---------------------------------------------------------------------------


def _bad_payloads(rng: random.Random, n: int) -> list[bytes]:
    """Payloads of every kind of bad message (checked against the decoder later)."""
    good = [
        p.encode(p.Ping()),
        p.encode(p.GetState()),
        p.encode(p.Resize(rows=24, cols=80)),
        p.encode(p.CaptureScreen(last_n_lines=3)),
        p.encode(p.SendMessage(sender="soak", body="hello", message_id="x")),
    ]
    fixed = [
        b"",
        b"null",
        b"[]",
        b"42",
        b'"Ping"',
        b"{",
        b'{"cmd":"Explode"}',
        b'{"cmd":"ping"}',
        b'{"cmd":null}',
        b'{"cmd":["Ping"]}',
        b'{"cmd":"Resize","rows":"tall","cols":1}',
        b'{"cmd":"Resize","rows":-1,"cols":1}',
        b'{"cmd":"Resize","rows":70000,"cols":1}',
        b'{"cmd":"CaptureScreen","last_n_lines":-3}',
        b'{"cmd":"CaptureScreen","last_n_lines":"3"}',
        b'{"cmd":"SendMessage","from":1,"body":"x"}',
        b'{"cmd":"SendMessage","from":"x"}',
        b'{"cmd":"Shutdown","timeout_secs":"soon"}',
        b'{"cmd":"Shutdown","timeout_secs":-1}',
        b'{"cmd":"SendMessage","from":"\xc3\x28","body":"x"}',
        b"\xff\xfe\xfd\xfc",
        b'{"cmd":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"cmd":"Ping","x":' + b"{" * 50_000 + b"}",
    ]
    out = list(fixed)
    while len(out) < n:
        kind = rng.randrange(4)
        base = rng.choice(good)
        if kind == 0:  # random bytes
            out.append(rng.randbytes(rng.randrange(1, 48)))
        elif kind == 1:  # cut short
            out.append(base[: rng.randrange(1, len(base))])
        elif kind == 2:  # bytes flipped
            data = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            out.append(bytes(data))
        else:  # a known tag with a field of the wrong type
            obj = msgspec.json.decode(base)
            fields = [k for k in obj if k != "cmd"] or ["extra"]
            obj[rng.choice(fields)] = rng.choice([None, [], {}, "s", -5, 2.5, True])
            out.append(msgspec.json.encode(obj))
    return out


class _Plan:
    """Draws the frames and knows, for each, what the shim must answer."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.bad: list[tuple[bytes, str | None]] = []
        for payload in _bad_payloads(self.rng, 2_000):
            try:
                cmd = p.decode_command(payload)
            except p.BadMessage:
                self.bad.append((frame(payload), "Error"))
                continue
            if type(cmd) in _ANSWER:  # a mutation that happens to be valid
                self.bad.append((frame(payload), _ANSWER[type(cmd)]))
        self.valid = [
            (frame(p.encode(p.Ping())), "Pong"),
            (frame(p.encode(p.GetState())), "State"),
            (frame(p.encode(p.CaptureScreen(last_n_lines=None))), "ScreenCapture"),
            (frame(p.encode(p.CaptureScreen(last_n_lines=2))), "ScreenCapture"),
            (frame(p.encode(p.Resize(rows=50, cols=220))), None),
        ]
        self.at_cap = [
            (cap_frame(CapFrame.PING_AT_CAP), "Pong"),
            (cap_frame(CapFrame.GARBAGE_AT_CAP), "Error"),
        ]
        self.messages = 0
        self.kinds: Counter[str] = Counter()

    def draw(self) -> tuple[bytes, str | None, str | None]:
        """A frame, the answer it must get (in order), and its message id if any."""
        roll = self.rng.random()
        answer: str | None
        if roll < 0.005:
            self.messages += 1
            mid = f"soak-{self.messages}"
            self.kinds["SendMessage"] += 1
            cmd = p.SendMessage(sender="soak", body=f"task {self.messages}", message_id=mid)
            return frame(p.encode(cmd)), None, mid
        if roll < 0.0052:
            data, answer = self.rng.choice(self.at_cap)
            self.kinds["at the cap"] += 1
        elif roll < 0.30:
            data, answer = self.rng.choice(self.bad)
            self.kinds["malformed"] += 1
        else:
            data, answer = self.rng.choice(self.valid)
            self.kinds["valid"] += 1
        return data, answer, None


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


class _Tally:
    def __init__(self) -> None:
        self.expected: deque[str] = deque()
        self.sent_frames = 0
        self.answers = 0
        self.failures: list[str] = []
        self.ids: set[str] = set()
        self.terminal: Counter[str] = Counter()
        self.completed = 0
        self.progress = trio.lowlevel.ParkingLot()

    def fail(self, why: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(why)
        else:
            self.failures[-1] = f"... and more ({why})"

    @property
    def settled(self) -> bool:
        return not self.expected and all(self.terminal[mid] >= 1 for mid in self.ids)

    def see(self, event: p.AnyEvent) -> None:
        kind: str | None = _ANSWER_OF_EVENT.get(type(event))
        if isinstance(event, p.Error):
            if event.reason.startswith("bad message"):
                kind = "Error"
            else:
                self.fail(f"unexpected {event!r}")
        elif isinstance(event, p.Completion | p.DeliveryFailed):
            mid = event.message_id if isinstance(event, p.Completion) else event.id
            if mid not in self.ids:
                self.fail(f"terminal event for an unknown id: {event!r}")
            self.terminal[mid or ""] += 1
            self.completed += isinstance(event, p.Completion)
        if kind is not None:
            self.answers += 1
            want = self.expected.popleft() if self.expected else None
            if want != kind:
                self.fail(f"answer #{self.answers}: wanted {want}, got {event!r}")
        self.progress.unpark_all()


async def soak(tmp: Path, n_frames: int, seed: int = SEED) -> tuple[_Tally, float, Counter[str]]:
    codex, pids = _fast_codex(tmp)
    work = tmp / "work"
    work.mkdir()
    args = ["--codex", str(codex), "--cwd", str(work), "--log-level", "error", "--stop-grace", "1"]
    plan = _Plan(seed)
    tally = _Tally()
    start = time.monotonic()
    async with raw_shim(args, log_path=tmp / "shim.log") as shim:

        async def read() -> None:
            while (event := await shim.next_event()) is not None:
                tally.see(event)
            tally.progress.unpark_all()

        async def write() -> None:
            batch: list[bytes] = []
            size = 0
            for _ in range(n_frames):
                data, answer, mid = plan.draw()
                if answer is not None:
                    tally.expected.append(answer)
                if mid is not None:
                    tally.ids.add(mid)
                batch.append(data)
                size += len(data)
                tally.sent_frames += 1
                if size >= 64 * 1024:
                    await shim.stream.send_all(b"".join(batch))
                    batch, size = [], 0
            tally.expected.append("Pong")  # the shim is alive after all of it
            tally.sent_frames += 1
            await shim.stream.send_all(b"".join([*batch, frame(p.encode(p.Ping()))]))
            while not tally.settled:
                await tally.progress.park()
            await shim.send(p.Shutdown(timeout_secs=5))
            tally.sent_frames += 1

        with trio.fail_after(max(120.0, n_frames / 2_000)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await write()
            await read_events_to_end(shim)
            code = await shim.wait()
    elapsed = time.monotonic() - start
    if code != 0:
        tally.fail(f"exit code {code}")
    for mid in tally.ids:
        if tally.terminal[mid] != 1:
            tally.fail(f"{mid}: {tally.terminal[mid]} terminal events")
    alive = [int(x) for x in pids.read_text().split() if process_tree.is_alive(int(x))]
    if alive:
        tally.fail(f"left alive: {alive}")
    return tally, elapsed, plan.kinds


def _report(tally: _Tally, elapsed: float, kinds: Counter[str]) -> str:
    return (
        f"soak: {tally.sent_frames} frames sent ({dict(kinds)}), {tally.answers} answers, "
        f"{len(tally.ids)} messages, {sum(tally.terminal.values())} terminal events "
        f"({tally.completed} completions), "
        f"{len(tally.failures)} failures, {elapsed:.1f}s"
    )


async def test_soak_short(tmp_path: Path) -> None:
    tally, elapsed, kinds = await soak(tmp_path, 20_000)
    print(_report(tally, elapsed, kinds))
    assert tally.failures == []
    assert tally.answers > 10_000


@pytest.mark.soak
@pytest.mark.skipif(
    os.environ.get(PROFILE_ENV) != "long", reason=f"the long soak runs with {PROFILE_ENV}=long"
)
async def test_soak_a_million_frames(tmp_path: Path) -> None:
    tally, elapsed, kinds = await soak(tmp_path, 1_000_000)
    print(_report(tally, elapsed, kinds))
    assert tally.failures == []
    assert tally.sent_frames >= 1_000_000
