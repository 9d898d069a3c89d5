"""Translate ``codex app-server`` notifications into normalised Codex events.

Sans-IO: :class:`TurnTranslator` is fed the ``(method, params)`` of every
notification while one turn runs and answers with :data:`CodexEvent`
values; it also says when the turn is over and how.  Failures arrive
classified by Codex (``codexErrorInfo``); :func:`classify_turn_error` maps
that onto :class:`FailureKind` and falls back to the text only where Codex
gave no classification.  Unknown notifications and item types are ignored.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Final, Literal

import msgspec

from .app_server_rpc import ERROR_INVALID_REQUEST, RpcRemoteError, decode_raw
from .classify import classify_text, parse_retry_at
from .events import (
    AgentMessage,
    CodexEvent,
    Failure,
    FailureKind,
    Notice,
    TokenUsage,
    TurnFailed,
)

log = logging.getLogger(__name__)

TurnStatus = Literal["completed", "interrupted", "failed"]

# -- notification params (only what the shim reads) ------------------------------


class TurnError(msgspec.Struct, frozen=True, rename="camel"):
    """``turn.error`` / ``error.error``: Codex's message and its classification."""

    message: str = ""
    codex_error_info: Any = None
    additional_details: str | None = None


class _Turn(msgspec.Struct, frozen=True):
    id: str = ""
    status: str = ""
    error: TurnError | None = None


class _TurnParams(msgspec.Struct, frozen=True, rename="camel"):
    thread_id: str = ""
    turn: _Turn = _Turn()


class _ErrorParams(msgspec.Struct, frozen=True, rename="camel"):
    error: TurnError = TurnError()
    will_retry: bool = False
    thread_id: str = ""
    turn_id: str = ""


class _Breakdown(msgspec.Struct, frozen=True, rename="camel"):
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0


class _ThreadTokenUsage(msgspec.Struct, frozen=True, rename="camel"):
    total: _Breakdown = _Breakdown()
    last: _Breakdown = _Breakdown()
    model_context_window: int | None = None


class _TokenParams(msgspec.Struct, frozen=True, rename="camel"):
    thread_id: str = ""
    turn_id: str = ""
    token_usage: _ThreadTokenUsage = _ThreadTokenUsage()


class _Item(msgspec.Struct, frozen=True):
    type: str = ""
    text: str | None = None


class _ItemParams(msgspec.Struct, frozen=True, rename="camel"):
    thread_id: str = ""
    turn_id: str = ""
    item: _Item = _Item()


class _WarningParams(msgspec.Struct, frozen=True, rename="camel"):
    message: str = ""
    thread_id: str | None = None


# -- classification ----------------------------------------------------------------

_BY_INFO: Final = {
    "contextWindowExceeded": FailureKind.CONTEXT_WINDOW,
    "usageLimitExceeded": FailureKind.USAGE_LIMIT,
    "unauthorized": FailureKind.AUTH,
    "rateLimitExceeded": FailureKind.RATE_LIMIT,
    "serverOverloaded": FailureKind.OVERLOADED,
}


def _kind_of_info(info: Any) -> FailureKind:
    if isinstance(info, str):
        return _BY_INFO.get(info, FailureKind.OTHER)
    if isinstance(info, dict):
        # {"httpConnectionFailed": {"httpStatusCode": 401}} and its siblings.
        for detail in info.values():
            if isinstance(detail, dict) and detail.get("httpStatusCode") == 401:
                return FailureKind.AUTH
    return FailureKind.OTHER


def classify_turn_error(error: TurnError, *, now: dt.datetime | None = None) -> Failure:
    """A :class:`Failure` for a turn error: by ``codexErrorInfo``, else by its text."""
    message = error.message or "codex turn failed"
    if error.additional_details:
        message = f"{message} ({error.additional_details})"
    if error.codex_error_info is None:
        return classify_text(message, now=now)
    kind = _kind_of_info(error.codex_error_info)
    if kind is FailureKind.USAGE_LIMIT:
        epoch, label = parse_retry_at(message, now=now)
        return Failure(kind, message, epoch, label)
    return Failure(kind, message)


def classify_rpc_error(exc: RpcRemoteError, *, now: dt.datetime | None = None) -> Failure:
    """A :class:`Failure` for a refused request (``thread/resume`` of an unknown thread …)."""
    message = f"codex app-server refused {exc.method}: {exc.message}"
    failure = classify_text(exc.message, now=now)
    if failure.kind is FailureKind.THREAD_NOT_FOUND and exc.code != ERROR_INVALID_REQUEST:
        return Failure(FailureKind.OTHER, message)
    return Failure(failure.kind, message, failure.retry_at_epoch_secs, failure.retry_at_label)


# -- the translator ---------------------------------------------------------------


class TurnTranslator:
    """The notifications of one turn on thread ``thread_id``, as normalised events.

    ``turn_id`` is learnt from the ``turn/start`` result (:meth:`started`) or
    from ``turn/started``, whichever comes first; notifications naming
    another thread, another turn, or a turn in ``stale`` are ignored, so a
    late ``turn/completed`` of an abandoned turn never ends this one.
    """

    def __init__(
        self,
        thread_id: str,
        *,
        stale: frozenset[str] = frozenset(),
        now: dt.datetime | None = None,
    ) -> None:
        self.thread_id = thread_id
        self.turn_id: str | None = None
        self.status: TurnStatus | None = None
        self.failure: Failure | None = None
        self._stale = stale
        self._now = now
        self._last_error: TurnError | None = None

    @property
    def done(self) -> bool:
        """``turn/completed`` arrived for this turn."""
        return self.status is not None

    def started(self, turn_id: str) -> None:
        """The ``turn/start`` result named the turn."""
        self.turn_id = turn_id

    def feed(self, method: str, params: msgspec.Raw) -> list[CodexEvent]:
        """Events for one notification (possibly none)."""
        if self.done:
            return []
        try:
            return self._feed(method, params)
        except (ValueError, RecursionError) as exc:  # DecodeError, bad UTF-8, deep nesting
            log.warning("ignoring a malformed %s notification: %s", method, exc)
            return []

    def _feed(self, method: str, params: msgspec.Raw) -> list[CodexEvent]:
        if method == "item/completed":
            item = decode_raw(params, _ItemParams)
            ours = self._ours(item.thread_id, item.turn_id)
            if ours and item.item.type == "agentMessage" and item.item.text:
                return [AgentMessage(item.item.text)]
        elif method == "thread/tokenUsage/updated":
            tokens = decode_raw(params, _TokenParams)
            if self._ours(tokens.thread_id, tokens.turn_id):
                return [_token_usage(tokens.token_usage)]
        elif method == "turn/started":
            started = decode_raw(params, _TurnParams)
            if self._ours(started.thread_id, started.turn.id) and self.turn_id is None:
                self.turn_id = started.turn.id or None
        elif method == "error":
            err = decode_raw(params, _ErrorParams)
            if self._ours(err.thread_id, err.turn_id):
                if err.will_retry:
                    log.info("codex will retry after: %s", err.error.message)
                else:
                    self._last_error = err.error
        elif method == "turn/completed":
            completed = decode_raw(params, _TurnParams)
            if self._ours(completed.thread_id, completed.turn.id):
                return self._completed(completed.turn)
        elif method == "warning":
            warning = decode_raw(params, _WarningParams)
            if warning.message and warning.thread_id in (None, self.thread_id):
                return [Notice(f"codex: {warning.message}")]
        else:
            log.debug("ignoring notification %s", method)
        return []

    def _completed(self, turn: _Turn) -> list[CodexEvent]:
        status = turn.status
        if status == "failed":
            self.status = "failed"
            error = turn.error or self._last_error or TurnError("codex turn failed")
            self.failure = classify_turn_error(error, now=self._now)
            return [TurnFailed(self.failure)]
        if status == "interrupted":
            self.status = "interrupted"
        else:
            if status != "completed":
                log.warning("turn/completed with unexpected status %r", status)
            self.status = "completed"
        return []

    def _ours(self, thread_id: str, turn_id: str) -> bool:
        if thread_id and thread_id != self.thread_id:
            return False
        if not turn_id:
            return True
        if turn_id in self._stale:
            return False
        return self.turn_id is None or turn_id == self.turn_id


def _token_usage(usage: _ThreadTokenUsage) -> TokenUsage:
    total, last = usage.total, usage.last
    return TokenUsage(
        scope="thread",
        input_tokens=total.input_tokens,
        cached_input_tokens=total.cached_input_tokens,
        output_tokens=total.output_tokens,
        reasoning_output_tokens=total.reasoning_output_tokens,
        last_input_tokens=last.input_tokens,
        last_output_tokens=last.output_tokens,
        context_window=usage.model_context_window,
    )


# -- requests the server sends us --------------------------------------------------

_DECLINE: Final = "the shim runs unattended: nobody can answer"

_ANSWERS: Final[dict[str, Any]] = {
    "item/commandExecution/requestApproval": {"decision": "decline"},
    "item/fileChange/requestApproval": {"decision": "decline"},
    "item/permissions/requestApproval": {"permissions": {}, "scope": "turn"},
    "item/tool/requestUserInput": {"answers": {}},
    "mcpServer/elicitation/request": {"action": "decline"},
    "item/tool/call": {"contentItems": [], "success": False},
    "execCommandApproval": {"decision": {"denied": {"rejection": _DECLINE}}},
    "applyPatchApproval": {"decision": {"denied": {"rejection": _DECLINE}}},
}


class ServerRequestAnswer(msgspec.Struct, frozen=True):
    """How to answer a request from the server: a ``result``, or an error when None."""

    result: Any
    notice: str


def answer_server_request(method: str) -> ServerRequestAnswer:
    """The refusal for a server request (shapes from ``ServerRequest.json``, 0.169.0).

    Approvals are declined, questions get no answers, permission requests
    are granted nothing; anything else (token refresh, attestation, methods
    newer than this shim) is refused with a JSON-RPC error.
    """
    result = _ANSWERS.get(method)
    what = "declined" if result is not None else "refused"
    notice = f"codex asked the shim {method!r}; {what} ({_DECLINE})"
    return ServerRequestAnswer(result, notice)
