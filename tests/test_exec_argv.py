"""The ``codex exec`` command line, and the environment Codex inherits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_codex_shim.codex.environment import ALWAYS_DROPPED, codex_environment
from trio_codex_shim.codex.exec_argv import exec_argv
from trio_codex_shim.codex.thread_id import is_valid_thread_id
from trio_codex_shim.options import Sandbox, ShimOptions

THREAD = "01a20fa3-570f-7d70-9d62-4eaf31dd5da1"

# ---------------------------------------------------------------------------
# argv
# ---------------------------------------------------------------------------


def test_default_argv_matches_batty() -> None:
    assert exec_argv(ShimOptions(), "codex", None) == [
        "codex",
        "exec",
        "--json",
        "-m",
        "gpt-5.5",
        "-c",
        'model_reasoning_effort="high"',
        "--dangerously-bypass-approvals-and-sandbox",
        "-",
    ]


def test_resume_goes_after_every_option_and_before_the_stdin_dash() -> None:
    options = ShimOptions(
        model="o4",
        reasoning_effort=None,
        sandbox=Sandbox.WORKSPACE_WRITE,
        codex_args=("--skip-git-repo-check", "-C", "/work"),
        codex_config=('model_provider="mock"', "features.x=true"),
    )
    assert exec_argv(options, "/opt/codex", THREAD) == [
        "/opt/codex",
        "exec",
        "--json",
        "-m",
        "o4",
        "-c",
        'model_provider="mock"',
        "-c",
        "features.x=true",
        "--sandbox",
        "workspace-write",
        "--skip-git-repo-check",
        "-C",
        "/work",
        "resume",
        THREAD,
        "-",
    ]


def test_empty_model_and_effort_are_left_out() -> None:
    argv = exec_argv(
        ShimOptions(model="", reasoning_effort="", sandbox=Sandbox.READ_ONLY), "codex", None
    )
    assert argv == ["codex", "exec", "--json", "--sandbox", "read-only", "-"]


@pytest.mark.parametrize("sandbox", list(Sandbox))
def test_every_sandbox(sandbox: Sandbox) -> None:
    argv = exec_argv(ShimOptions(sandbox=sandbox), "codex", None)
    if sandbox is Sandbox.BYPASS:
        assert "--dangerously-bypass-approvals-and-sandbox" in argv
        assert "--sandbox" not in argv
    else:
        i = argv.index("--sandbox")
        assert argv[i + 1] == sandbox.value
        assert "--dangerously-bypass-approvals-and-sandbox" not in argv


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "resume",
        "exec",
        "-",
        "-rf",
        "--dangerously-bypass-approvals-and-sandbox",
        "_leading-underscore",
        ".hidden",
        "has space",
        "new\nline",
        "abc\n",
        "semi;colon",
        "slash/inside",
        "x" * 129,
        "\u0661\u0662",  # non-ASCII digits
        "caf\u00e9",
    ],
)
def test_malformed_thread_ids_are_refused(bad: str) -> None:
    assert not is_valid_thread_id(bad)
    with pytest.raises(ValueError, match="malformed thread id"):
        exec_argv(ShimOptions(), "codex", bad)


@pytest.mark.parametrize(
    "good", [THREAD, "a1", "0", "x" * 127 + "1", "thread_1.2:3-4", "019a20fa-570f-7d70"]
)
def test_well_formed_thread_ids(good: str) -> None:
    assert is_valid_thread_id(good)
    argv = exec_argv(ShimOptions(), "codex", good)
    assert argv[-3:] == ["resume", good, "-"]


@given(st.text(max_size=140))
def test_no_thread_id_can_become_an_option(tid: str) -> None:
    try:
        argv = exec_argv(ShimOptions(codex_args=()), "codex", tid)
    except ValueError:
        assert not is_valid_thread_id(tid)
        return
    assert argv[-3:] == ["resume", tid, "-"]
    assert not tid.startswith("-")
    assert tid.strip() == tid
    assert 1 <= len(tid) <= 128
    assert argv.count("resume") == 1


@given(
    model=st.text(max_size=10),
    effort=st.none() | st.text(max_size=10),
    sandbox=st.sampled_from(list(Sandbox)),
    codex_args=st.lists(st.text(max_size=8), max_size=4).map(tuple),
    codex_config=st.lists(st.text(max_size=8), max_size=4).map(tuple),
)
def test_argv_shape(
    model: str,
    effort: str | None,
    sandbox: Sandbox,
    codex_args: tuple[str, ...],
    codex_config: tuple[str, ...],
) -> None:
    options = ShimOptions(
        model=model,
        reasoning_effort=effort,
        sandbox=sandbox,
        codex_args=codex_args,
        codex_config=codex_config,
    )
    argv = exec_argv(options, "prog", None)
    assert argv[:3] == ["prog", "exec", "--json"]
    assert argv[-1] == "-"  # the prompt comes on stdin, never on argv
    # The operator's extra args sit right before the final "-".
    n = len(codex_args)
    assert tuple(argv[len(argv) - 1 - n : -1]) == codex_args
    head = argv[3 : len(argv) - 1 - n]
    expected: list[str] = []
    if model:
        expected += ["-m", model]
    if effort:
        expected += ["-c", f'model_reasoning_effort="{effort}"']
    for setting in codex_config:
        expected += ["-c", setting]
    assert head[: len(expected)] == expected
    sandbox_flags = head[len(expected) :]
    if sandbox is Sandbox.BYPASS:
        assert sandbox_flags == ["--dangerously-bypass-approvals-and-sandbox"]
    else:
        assert sandbox_flags == ["--sandbox", sandbox.value]


# ---------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------

BASE = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "CLAUDECODE": "1",
    "OPENAI_API_KEY": "sk-test",
    "SECRET_TOKEN": "t",
}


def test_claudecode_is_always_dropped() -> None:
    assert "CLAUDECODE" in ALWAYS_DROPPED
    env = codex_environment(BASE)
    assert env == {k: v for k, v in BASE.items() if k != "CLAUDECODE"}


def test_claudecode_is_dropped_even_when_allowed() -> None:
    env = codex_environment(BASE, allow=("PATH", "CLAUDECODE"))
    assert env == {"PATH": "/usr/bin"}


def test_drop() -> None:
    env = codex_environment(BASE, drop=("SECRET_TOKEN", "NOT_SET"))
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "OPENAI_API_KEY": "sk-test"}


def test_allow_only_the_named() -> None:
    env = codex_environment(BASE, allow=("PATH", "OPENAI_API_KEY", "MISSING"))
    assert env == {"PATH": "/usr/bin", "OPENAI_API_KEY": "sk-test"}


def test_allow_empty_means_nothing() -> None:
    assert codex_environment(BASE, allow=()) == {}


def test_drop_beats_allow() -> None:
    env = codex_environment(BASE, drop=("HOME",), allow=("HOME", "PATH"))
    assert env == {"PATH": "/usr/bin"}


def test_names_are_case_sensitive_and_base_is_untouched() -> None:
    base = dict(BASE)
    env = codex_environment(base, drop=("path",))
    assert env["PATH"] == "/usr/bin"
    assert base == BASE
    env["NEW"] = "x"
    assert "NEW" not in base


@given(
    base=st.dictionaries(st.sampled_from(["A", "B", "C", "CLAUDECODE", "D"]), st.text(max_size=3)),
    drop=st.lists(st.sampled_from(["A", "B", "X"]), max_size=3).map(tuple),
    allow=st.none() | st.lists(st.sampled_from(["A", "C", "CLAUDECODE"]), max_size=3).map(tuple),
)
def test_environment_property(
    base: dict[str, str], drop: tuple[str, ...], allow: tuple[str, ...] | None
) -> None:
    env = codex_environment(base, drop=drop, allow=allow)
    assert "CLAUDECODE" not in env
    for name, value in env.items():
        assert base[name] == value
        assert name not in drop
        assert allow is None or name in allow
    for name in base:
        if name != "CLAUDECODE" and name not in drop and (allow is None or name in allow):
            assert name in env
