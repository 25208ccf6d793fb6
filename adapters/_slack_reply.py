"""Streams one answer into Slack: native chat streaming when possible, post-and-edit otherwise.

Text is appended with :meth:`ReplyWriter.feed` while the orchestrator produces it; a background
flusher sends whatever has accumulated, waiting on the workspace's shared call budgets, so chunks are
coalesced into fewer calls when the budget is tight. Nothing is dropped: when a native stream is
refused or expires, or a message would pass the length limit, the rest continues in a new message;
when a message cannot be posted at all, :meth:`ReplyWriter.finish` tries the rest again, or apologises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncServerErrorRetryHandler, async_default_handlers
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters._slack_format import defuse_broadcasts, fit_message, open_fence, to_mrkdwn, unfinished_token
from adapters._slack_pacing import BudgetRegistry
from flowagents import observability

__all__ = ["ReplyWriter", "retry_after_seconds", "web_api_retry_handlers"]

log = logging.getLogger("adapters.slack")

MAX_429_RETRIES = 8
MAX_SERVER_ERROR_RETRIES = 2
# Slack documents these as transient (some come with HTTP 200). Not fatal_error: Slack calls it catastrophic.
TRANSIENT_ERRORS = frozenset({"internal_error", "service_unavailable"})
UNDELIVERED = "Sorry, the rest of this answer could not be delivered. Please try again in a moment."


class _TransientErrorRetryHandler(AsyncRetryHandler):
    """Retries what Slack answers for a passing fault besides 500/503: a transient ``ok: false``, 502, 504."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None:
            return False
        if response.status_code in (502, 504):
            return True
        body = response.body
        return isinstance(body, dict) and body.get("ok") is False and body.get("error") in TRANSIENT_ERRORS


def web_api_retry_handlers() -> list[AsyncRetryHandler]:
    """slack_sdk's default retries (connection errors) plus retries of server errors and transient errors.

    429s are not retried here: :class:`ReplyWriter` cools off the workspace's shared budget instead.
    """
    return [
        *async_default_handlers(),
        AsyncServerErrorRetryHandler(max_retry_count=MAX_SERVER_ERROR_RETRIES),
        _TransientErrorRetryHandler(max_retry_count=MAX_SERVER_ERROR_RETRIES),
    ]


def retry_after_seconds(error: SlackApiError, default: float = 1.0) -> float:
    """The Retry-After of a 429 answer, in seconds."""
    headers = getattr(error.response, "headers", None) or {}
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return default
    return default


class ReplyWriter:
    """Writes one turn's answer into a Slack conversation."""

    def __init__(
        self,
        client: AsyncWebClient,
        budgets: BudgetRegistry,
        *,
        workspace: str,
        channel: str,
        thread_ts: str | None,
        recipient_team_id: str | None,
        recipient_user_id: str | None,
        native_streaming: bool,
        max_chars: int,
        edit_interval: float,
    ) -> None:
        self._client = client
        self._budgets = budgets
        self._workspace = workspace
        self._channel = channel
        self._thread_ts = thread_ts
        self._recipient_team_id = recipient_team_id
        self._recipient_user_id = recipient_user_id
        # chat.startStream needs a thread to reply in (top-level DMs use post-and-edit).
        self._native = native_streaming and thread_ts is not None
        self._max_chars = max_chars
        self._edit_interval = edit_interval
        self._pending = ""
        self._held = False
        self._ts: str | None = None  # the message currently being written
        self._streaming = False  # is the current message a native stream?
        self._sent = ""  # text already in the current message
        self.message_ts: list[str] = []
        self.text = ""  # everything fed so far
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._done = False
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ public

    @property
    def started(self) -> bool:
        """True once any text has been fed."""
        return bool(self.text)

    def hold(self) -> None:
        """Keep text back until :meth:`finish` (used for no-match help replies)."""
        self._held = True

    def feed(self, text: str) -> None:
        """Queue more answer text."""
        if not text:
            return
        self.text += text
        self._pending += text
        if not self._held:
            self._ensure_task()
            self._wake.set()

    async def finish(
        self, *, blocks: list[dict[str, Any]] | None = None, fallback_text: str | None = None
    ) -> None:
        """Send everything still pending, close the stream and add ``blocks`` to the last message."""
        self._done = True
        self._finished.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        if blocks is not None and not self.message_ts and self._held:
            # A help reply that was held back: one message with text fallback and Block Kit.
            await self._post(fallback_text or self._pending or " ", blocks=blocks)
            self._pending = ""
            return
        rest, self._pending = self._pending, ""
        if rest:
            try:
                await self._send(rest)
            except _UNDELIVERED_ERRORS as exc:
                log.warning("slack could not deliver the rest of an answer (%s); apologising", _describe(exc))
                self._pending = ""
                await self._close_current()
                await self._post(UNDELIVERED)  # if this fails too, the caller logs it
        await self._close_current(blocks=blocks)

    # ------------------------------------------------------------------ flusher

    def _ensure_task(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._done:
                return  # finish() sends the rest itself
            # A trailing "<..." waits for its end (or for finish()): a mention is sent whole, so defused.
            cut = unfinished_token(self._pending)
            if not cut:
                continue
            chunk, self._pending = self._pending[:cut], self._pending[cut:]
            try:
                await self._send(chunk)
            except _UNDELIVERED_ERRORS as exc:
                # Slack's own retries did not help: keep the rest for finish() to try again.
                log.warning(
                    "slack answer paused: a call failed (%s); the rest follows at the end",
                    _describe(exc),
                )
                return
            # Coalesce: while we pause, new chunks pile up into one call. Pause longer when tight.
            method = "chat.appendStream" if self._streaming else "chat.update"
            budget = self._budgets.get(self._workspace, method, self._channel)
            pause = self._edit_interval * (3 if budget is not None and budget.tight else 1)
            if pause > 0 and not self._finished.is_set():
                try:
                    await asyncio.wait_for(self._finished.wait(), pause)
                except TimeoutError:
                    pass

    # ------------------------------------------------------------------ sending

    async def _send(self, text: str) -> None:
        """Append ``text`` to the conversation, opening new messages as needed.

        When a call fails, the text not sent goes back in front of the pending text and the error is raised.
        """
        try:
            while text:
                # Never mid-word, link or code span; a code block cut in two is closed, then reopened.
                head, rest = fit_message(self._sent, text, self._max_chars)
                if head:
                    await self._append(head)
                text = rest
                if text:
                    await self._close_current()
        except BaseException:
            self._pending = text + self._pending
            raise

    async def _append(self, text: str) -> None:
        if self._ts is None:
            await self._open(text)
            return
        if self._streaming:
            try:
                await self._call(
                    "chat.appendStream",
                    lambda: self._client.chat_appendStream(
                        channel=self._channel, ts=self._ts or "", markdown_text=defuse_broadcasts(text)
                    ),
                )
                self._sent += text
                return
            except SlackApiError as exc:
                # The stream expired or was stopped: what was appended stays; continue in a new message.
                log.info(
                    "slack stream %s ended early (%s); continuing in a new message", self._ts, _code(exc)
                )
                self._native = False
                await self._open(self._reopened(text))
                return
        new_text = self._sent + text
        try:
            await self._call(
                "chat.update",
                lambda: self._client.chat_update(
                    channel=self._channel, ts=self._ts or "", text=to_mrkdwn(new_text)
                ),
            )
            self._sent = new_text
        except SlackApiError as exc:
            log.warning("slack chat.update failed (%s); continuing in a new message", _code(exc))
            await self._open(self._reopened(text))

    def _reopened(self, text: str) -> str:
        """End the current message (it could not take ``text``); ``text``, reopening its open code block."""
        opening = open_fence(self._sent)
        self._end_current()
        return f"{opening}\n{text}" if opening else text

    async def _open(self, text: str) -> None:
        if not text.strip():  # Slack refuses a message of blanks (no_text): the next words open it
            return
        if self._native:
            try:
                resp = await self._call(
                    "chat.startStream",
                    lambda: self._client.chat_startStream(
                        channel=self._channel,
                        thread_ts=self._thread_ts or "",
                        markdown_text=defuse_broadcasts(text),
                        recipient_team_id=self._recipient_team_id,
                        recipient_user_id=self._recipient_user_id,
                    ),
                    wait=False,
                )
                self._begin(str(resp["ts"]), text, streaming=True)
                return
            except SlackApiError as exc:
                log.info("slack native streaming refused (%s); posting and editing instead", _code(exc))
                self._native = False
            except _NoBudget:
                log.info("slack chat.startStream budget spent; posting and editing this answer")
        await self._post(text)

    async def _post(self, text: str, *, blocks: list[dict[str, Any]] | None = None) -> None:
        kwargs: dict[str, Any] = {"channel": self._channel, "text": to_mrkdwn(text)}
        if self._thread_ts:
            kwargs["thread_ts"] = self._thread_ts
        if blocks is not None:
            kwargs["blocks"] = blocks
        resp = await self._call("chat.postMessage", lambda: self._client.chat_postMessage(**kwargs))
        self._begin(str(resp["ts"]), text, streaming=False)

    def _begin(self, ts: str, text: str, *, streaming: bool) -> None:
        self._ts, self._sent, self._streaming = ts, text, streaming
        self.message_ts.append(ts)

    def _end_current(self) -> None:
        self._ts, self._sent, self._streaming = None, "", False

    async def _close_current(self, *, blocks: list[dict[str, Any]] | None = None) -> None:
        """Finish the current message (stop its stream; attach blocks)."""
        if self._ts is None:
            if blocks is not None:
                await self._post(" ", blocks=blocks)
                self._end_current()
            return
        ts, sent = self._ts, self._sent
        if self._streaming:
            try:
                await self._call(
                    "chat.stopStream",
                    lambda: self._client.chat_stopStream(channel=self._channel, ts=ts, blocks=blocks),
                )
            except SlackApiError as exc:
                log.info("slack chat.stopStream failed (%s); the streamed text stays", _code(exc))
                if blocks is not None:
                    self._end_current()
                    await self._post(" ", blocks=blocks)
        elif blocks is not None:
            try:
                await self._call(
                    "chat.update",
                    lambda: self._client.chat_update(
                        channel=self._channel, ts=ts, text=to_mrkdwn(sent), blocks=_with_text(sent, blocks)
                    ),
                )
            except SlackApiError as exc:
                log.warning("slack chat.update with blocks failed (%s)", _code(exc))
        self._end_current()

    async def _call(
        self,
        method: str,
        call: Callable[[], Awaitable[AsyncSlackResponse]],
        *,
        wait: bool = True,
    ) -> AsyncSlackResponse:
        """Make one Web API call within the workspace budget, cooling off and retrying after a 429.

        With ``wait=False`` the call is made only if the budget has room now (else ``_NoBudget``)
        and a 429 is not retried.
        """
        budget = self._budgets.get(self._workspace, method, self._channel)
        for _ in range(MAX_429_RETRIES):
            if budget is None:
                holder: AbstractAsyncContextManager[None] = contextlib.nullcontext()
            elif wait:
                holder = budget.slot()
            else:
                maybe = budget.try_slot()
                if maybe is None:
                    raise _NoBudget(method)
                holder = maybe
            try:
                async with holder:
                    with observability.span("slack.api", method=method):
                        return await call()
            except SlackApiError as exc:
                if exc.response.status_code != 429:
                    raise
                delay = retry_after_seconds(exc)
                log.warning("slack %s rate limited; cooling off %.1fs", method, delay)
                observability.platform_rate_limited("slack", delay)
                if budget is not None:
                    budget.cool_off(delay)
                if not wait:
                    raise
                observability.platform_retry("slack")
                if budget is None:
                    await asyncio.sleep(delay)
        raise _NoBudget(f"{method} still rate limited after {MAX_429_RETRIES} tries")


class _NoBudget(Exception):
    """No room in the budget for an optional call (or a call stayed rate limited)."""


_UNDELIVERED_ERRORS = (SlackApiError, _NoBudget, aiohttp.ClientError, TimeoutError)
"""What a call can fail with once slack_sdk's own retries are spent (an error answer, a network fault)."""


def _with_text(text: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks replace a message's text on screen, so put the text first as its own section."""
    sections: list[dict[str, Any]] = []
    rest = to_mrkdwn(text.strip())
    while rest:
        head, rest = fit_message("", rest, 3000)
        sections.append({"type": "section", "text": {"type": "mrkdwn", "text": head}})
    return [*sections, *blocks]


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return f"{_code(exc)}, HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _code(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    if isinstance(data, dict):
        return str(data.get("error", "error"))
    return "error"
