"""ExecTranslator: ``codex exec --json`` lines in, normalised Codex events out."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_codex_shim.codex.events import (
    AgentMessage,
    Failure,
    FailureKind,
    Notice,
    ThreadStarted,
    TokenUsage,
    TurnFailed,
)
from trio_codex_shim.codex.exec_jsonl import ExecTranslator

TZ = dt.timezone(dt.timedelta(hours=2))
NOW = dt.datetime(2026, 4, 16, 1, 0, tzinfo=TZ)
THREAD = "01a20fa3-570f-7d70-9d62-4eaf31dd5da1"

# The transcript of a whole turn, verbatim from codex-exec.md.
TRANSCRIPT = [
    b'{"type":"thread.started","thread_id":"01a20fa3-570f-7d70-9d62-4eaf31dd5da1"}',
    b'{"type":"turn.started"}',
    b'{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"thinking..."}}',
    b'{"type":"item.started","item":{"id":"item_1","type":"command_execution","command":'
    b'"/bin/bash -c \'echo hi\'","aggregated_output":"","exit_code":null,"status":"in_progress"}}',
    b'{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":'
    b'"/bin/bash -c \'echo hi\'","aggregated_output":"hi\\n","exit_code":0,"status":"completed"}}',
    b'{"type":"item.started","item":{"id":"item_2","type":"file_change","changes":'
    b'[{"path":"/abs/hello.txt","kind":"add"}],"status":"in_progress"}}',
    b'{"type":"item.completed","item":{"id":"item_2","type":"file_change","changes":'
    b'[{"path":"/abs/hello.txt","kind":"add"}],"status":"completed"}}',
    b'{"type":"item.completed","item":{"id":"item_3","type":"agent_message","text":"Done"}}',
    b'{"type":"turn.completed","usage":{"input_tokens":190,"cached_input_tokens":0,'
    b'"cache_write_input_tokens":0,"output_tokens":15,"reasoning_output_tokens":0}}',
]


def feed_all(tr: ExecTranslator, lines: list[bytes]) -> list[object]:
    out: list[object] = []
    for line in lines:
        out += tr.feed(line)
    return out


def test_a_whole_turn() -> None:
    tr = ExecTranslator(resuming=None, now=NOW)
    assert feed_all(tr, TRANSCRIPT) == [
        ThreadStarted(THREAD),
        AgentMessage("Done"),
        # Codex 0.169's turn.completed usage is the thread's running total.
        TokenUsage(
            scope="thread",
            input_tokens=190,
            cached_input_tokens=0,
            output_tokens=15,
            reasoning_output_tokens=0,
            last_input_tokens=None,
            last_output_tokens=None,
            context_window=None,
        ),
    ]
    assert tr.completed
    assert not tr.failed
    assert tr.json_lines == len(TRANSCRIPT)
    assert tr.bad_lines == 0
    assert tr.finish(0, "") == []
    assert tr.finish(1, "You've hit your usage limit") == []  # completed wins


def test_usage_fields_are_mapped() -> None:
    tr = ExecTranslator(resuming=None)
    line = (
        b'{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":10,'
        b'"output_tokens":3,"reasoning_output_tokens":1}}'
    )
    assert tr.feed(line) == [
        TokenUsage(
            scope="thread",
            input_tokens=100,
            cached_input_tokens=10,
            output_tokens=3,
            reasoning_output_tokens=1,
        )
    ]


def test_turn_completed_without_usage() -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.feed(b'{"type":"turn.completed"}') == []
    assert tr.completed
    tr2 = ExecTranslator(resuming=None)
    assert tr2.feed(b'{"type":"turn.completed","usage":{}}') == [TokenUsage("thread", 0, 0, 0, 0)]


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"item.completed","item":{"type":"agent_message","text":""}}',
        b'{"type":"item.completed","item":{"type":"agent_message"}}',
        b'{"type":"item.completed","item":{"type":"agent_message","text":null}}',
        b'{"type":"item.started","item":{"type":"agent_message","text":"partial"}}',
        b'{"type":"item.updated","item":{"type":"agent_message","text":"partial"}}',
        b'{"type":"item.completed","item":{"type":"reasoning","text":"hmm"}}',
        b'{"type":"item.completed"}',
    ],
)
def test_only_completed_agent_messages_with_text_count(line: bytes) -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.feed(line) == []
    assert tr.json_lines == 1
    assert tr.bad_lines == 0


def test_multi_line_agent_message_kept_verbatim() -> None:
    tr = ExecTranslator(resuming=None)
    text = "line 1\nline 2\n\u00e9 \U0001f600"
    line = json.dumps({"type": "item.completed", "item": {"type": "agent_message", "text": text}})
    assert tr.feed(line.encode()) == [AgentMessage(text)]


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"turn.started"}',
        b'{"type":"item.completed","item":{"id":"i","type":"mcp_tool_call","server":"s",'
        b'"tool":"t","arguments":{},"result":{"content":[]},"status":"completed"}}',
        b'{"type":"item.completed","item":{"id":"i","type":"web_search","query":"q"}}',
        b'{"type":"item.updated","item":{"id":"i","type":"todo_list","items":'
        b'[{"text":"a","completed":false}]}}',
        b'{"type":"item.completed","item":{"id":"i","type":"error","message":"non-fatal"}}',
        b'{"type":"some.future.event","payload":{"deep":[1,2,{"x":null}]}}',
        b'{"no_type_at_all":true}',
        b"{}",
    ],
)
def test_unknown_types_are_skipped_not_garbage(line: bytes) -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.feed(line) == []
    assert tr.json_lines == 1
    assert tr.bad_lines == 0
    assert not tr.completed
    assert not tr.failed


@pytest.mark.parametrize(
    "line",
    [
        b"not json at all",
        b"{",
        b'{"type":"turn.completed"',
        b"[1,2,3]",
        b'"a string"',
        b"42",
        b'{"type":5}',
        b'{"type":"thread.started","thread_id":7}',
        b"\xff\xfe\x00",
    ],
)
def test_garbage_lines_are_counted_and_skipped(line: bytes) -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.feed(line) == []
    assert tr.bad_lines == 1
    assert tr.json_lines == 0
    # Reading goes on.
    assert tr.feed(TRANSCRIPT[0]) == [ThreadStarted(THREAD)]
    assert tr.json_lines == 1


@pytest.mark.parametrize("line", [b"", b"   ", b"\t\r", b"\r"])
def test_blank_lines_are_neither_json_nor_garbage(line: bytes) -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.feed(line) == []
    assert (tr.json_lines, tr.bad_lines) == (0, 0)


@pytest.mark.parametrize(
    "tid",
    ["-rf", "--dangerously-bypass-approvals-and-sandbox", "", "a b", "x" * 200, "../etc", "\n"],
)
def test_malformed_thread_ids_become_a_notice(tid: str) -> None:
    tr = ExecTranslator(resuming=None)
    out = tr.feed(json.dumps({"type": "thread.started", "thread_id": tid}).encode())
    assert len(out) == 1
    assert isinstance(out[0], Notice)
    assert not any(isinstance(e, ThreadStarted) for e in out)


def test_thread_started_without_id_is_a_notice() -> None:
    tr = ExecTranslator(resuming=None)
    (notice,) = tr.feed(b'{"type":"thread.started"}')
    assert isinstance(notice, Notice)


# ---------------------------------------------------------------------------
# Failures: `error` then `turn.failed`
# ---------------------------------------------------------------------------


def test_error_then_turn_failed_uses_the_turn_failed_message() -> None:
    tr = ExecTranslator(resuming=None, now=NOW)
    assert tr.feed(b'{"type":"error","message":"stream error: reconnecting 1/5"}') == []
    assert not tr.failed
    out = tr.feed(
        b'{"type":"turn.failed","error":{"message":"Codex ran out of room in the '
        b"model's context window.\"}}"
    )
    assert out == [
        TurnFailed(
            Failure(
                FailureKind.CONTEXT_WINDOW, "Codex ran out of room in the model's context window."
            )
        )
    ]
    assert tr.failed
    assert tr.finish(1, "") == []


def test_turn_failed_without_error_falls_back_to_the_last_error_line() -> None:
    tr = ExecTranslator(resuming=None, now=NOW)
    tr.feed(b'{"type":"error","message":"first"}')
    tr.feed(b'{"type":"error","message":"You\'ve hit your usage limit. or try again at 4:29 AM."}')
    (event,) = tr.feed(b'{"type":"turn.failed"}')
    assert isinstance(event, TurnFailed)
    assert event.failure.kind is FailureKind.USAGE_LIMIT
    assert event.failure.message == "You've hit your usage limit. or try again at 4:29 AM."
    assert event.failure.retry_at_label == "2026-04-16 04:29"
    assert event.failure.retry_at_epoch_secs == int(
        dt.datetime(2026, 4, 16, 4, 29, tzinfo=TZ).timestamp()
    )


def test_error_with_nested_message() -> None:
    tr = ExecTranslator(resuming=None)
    tr.feed(b'{"type":"error","error":{"message":"401 Unauthorized"}}')
    (event,) = tr.feed(b'{"type":"turn.failed"}')
    assert event == TurnFailed(Failure(FailureKind.AUTH, "401 Unauthorized"))


def test_turn_failed_with_nothing_said() -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.feed(b'{"type":"turn.failed"}') == [
        TurnFailed(Failure(FailureKind.OTHER, "turn failed"))
    ]


# ---------------------------------------------------------------------------
# finish()
# ---------------------------------------------------------------------------


def test_finish_after_an_error_line_without_turn_failed() -> None:
    tr = ExecTranslator(resuming=None)
    tr.feed(b'{"type":"error","message":"unexpected status 401 Unauthorized"}')
    assert tr.finish(1, "") == [
        TurnFailed(Failure(FailureKind.AUTH, "unexpected status 401 Unauthorized"))
    ]


@pytest.mark.parametrize("code", [0, None])
def test_finish_clean_exit_says_nothing(code: int | None) -> None:
    tr = ExecTranslator(resuming=None)
    assert tr.finish(code, "usage limit") == []


@pytest.mark.parametrize("tail", ["", "   \n", "panic: something broke\n", "429 rate limit"])
def test_finish_leaves_plain_crashes_to_the_core(tail: str) -> None:
    # OTHER (and the transient kinds) are reported by the core from exit status + tail.
    tr = ExecTranslator(resuming=None)
    if "rate limit" in tail:
        (event,) = tr.finish(1, tail)
        assert event == TurnFailed(Failure(FailureKind.RATE_LIMIT, tail.strip()))
    else:
        assert tr.finish(1, tail) == []


def test_finish_classifies_a_stderr_usage_limit() -> None:
    tr = ExecTranslator(resuming=None, now=NOW)
    tail = "WARN x\nERROR: You've hit your usage limit. or try again at 4:29 AM.\n"
    (event,) = tr.finish(1, tail)
    assert isinstance(event, TurnFailed)
    assert event.failure.kind is FailureKind.USAGE_LIMIT
    assert event.failure.message == tail.strip()
    assert event.failure.retry_at_label == "2026-04-16 04:29"


def test_finish_classifies_a_stderr_context_error() -> None:
    tr = ExecTranslator(resuming=THREAD)
    tr.feed(TRANSCRIPT[0])
    (event,) = tr.finish(1, "context_length_exceeded")
    assert event == TurnFailed(Failure(FailureKind.CONTEXT_WINDOW, "context_length_exceeded"))


def test_finish_thread_not_found_only_for_a_silent_resume() -> None:
    tail = "Error: thread/resume failed: no rollout found for thread id " + THREAD
    silent_resume = ExecTranslator(resuming=THREAD)
    assert silent_resume.finish(1, tail) == [
        TurnFailed(Failure(FailureKind.THREAD_NOT_FOUND, tail))
    ]

    fresh = ExecTranslator(resuming=None)
    assert fresh.finish(1, tail) == []

    chatty_resume = ExecTranslator(resuming=THREAD)
    chatty_resume.feed(b'{"type":"turn.started"}')
    assert chatty_resume.finish(1, tail) == []

    garbage_only = ExecTranslator(resuming=THREAD)
    garbage_only.feed(b"not json")
    assert garbage_only.finish(1, tail) == [TurnFailed(Failure(FailureKind.THREAD_NOT_FOUND, tail))]


def test_finish_after_turn_failed_is_silent() -> None:
    tr = ExecTranslator(resuming=THREAD)
    tr.feed(b'{"type":"turn.failed","error":{"message":"boom"}}')
    assert tr.finish(1, "no rollout found") == []


@given(st.lists(st.binary(max_size=60), max_size=20))
def test_arbitrary_bytes_never_raise(lines: list[bytes]) -> None:
    tr = ExecTranslator(resuming=None)
    for line in lines:
        tr.feed(line)
    assert tr.json_lines + tr.bad_lines <= len(lines)
    tr.finish(1, "")


# ---------------------------------------------------------------------------
# The relay's bulk path: a block of lines gives what its lines give one by one
# ---------------------------------------------------------------------------

_BLOCK_LINES = st.sampled_from(
    [
        *TRANSCRIPT,
        b'{"type":"error","message":"stream error: reconnecting 1/5"}',
        b'{"type":"turn.failed","error":{"message":"You\'ve hit your usage limit."}}',
        b'{"type":"thread.started","thread_id":"-not-an-id"}',
        b"",
        b"   ",
        b"\r",
        b"not json",
        b"{",
        b"42",
        b'{"type":5}',
        b"\xff\xfe",
        b'{"type":"turn.completed",',  # one value broken across two lines...
        b'"usage":{"input_tokens":5}}',  # ...is two bad lines, not one event
    ]
) | st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"{" not in b)


@given(st.lists(_BLOCK_LINES, min_size=1, max_size=25))
def test_a_block_gives_what_its_lines_give(lines: list[bytes]) -> None:
    one_by_one = ExecTranslator(resuming=THREAD, now=NOW)
    expected = [event for line in lines for event in one_by_one.feed(line)]
    bulk = ExecTranslator(resuming=THREAD, now=NOW)
    assert bulk.feed_block(b"\n".join(lines)) == expected
    assert (bulk.json_lines, bulk.bad_lines, bulk.completed, bulk.failed) == (
        one_by_one.json_lines,
        one_by_one.bad_lines,
        one_by_one.completed,
        one_by_one.failed,
    )
    assert bulk.finish(1, "no rollout found") == one_by_one.finish(1, "no rollout found")


def test_a_whole_turn_as_one_block() -> None:
    tr = ExecTranslator(resuming=None, now=NOW)
    assert tr.feed_block(b"\n".join(TRANSCRIPT)) == feed_all(
        ExecTranslator(resuming=None, now=NOW), TRANSCRIPT
    )
    assert (tr.json_lines, tr.bad_lines, tr.completed) == (len(TRANSCRIPT), 0, True)


def test_garbage_in_a_block_is_counted_line_by_line() -> None:
    tr = ExecTranslator(resuming=None)
    block = b"\n".join([TRANSCRIPT[0], b"not json", b"", TRANSCRIPT[-2]])
    assert tr.feed_block(block) == [ThreadStarted(THREAD), AgentMessage("Done")]
    assert (tr.json_lines, tr.bad_lines) == (2, 1)
