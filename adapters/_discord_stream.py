"""Streaming an answer into Discord messages: coalesced, paced edits, 2,000-character pages, token expiry."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import discord

from adapters._discord_pacer import EditPacer
from adapters._discord_text import layout_page

log = logging.getLogger(__name__)

# Discord error codes that mean "this interaction token can no longer be used".
TOKEN_GONE = {50027, 10015, 10062}
FINAL_RETRY_DELAYS = (0.5, 1.5)
"""Pauses before retrying the final text after a Discord server error (5xx)."""


def _rate_limited(exc: discord.HTTPException) -> bool:
    """A 429 of Discord's own rate limits (one without ``Via`` is Cloudflare's ban: never retried)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return exc.status == 429 and bool(headers.get("Via"))


class TargetGone(Exception):
    """The target can no longer post or edit (expired interaction token); switch to the fallback."""


class Target(Protocol):
    """Where pages of an answer go: an interaction's messages or plain channel messages."""

    channel_id: int

    async def create(self, first: bool, **fields: Any) -> Any:
        """Post a new message (``first``: the answer's first message) and return a handle for edits."""

    async def edit(self, handle: Any, **fields: Any) -> None:
        """Edit a message posted by :meth:`create`."""

    def usable(self) -> bool:
        """False once the target should not be used any more (token about to expire)."""


class ChannelTarget:
    """Plain channel messages; the first one optionally replies to ``reference``."""

    def __init__(
        self, channel: discord.abc.Messageable, channel_id: int, reference: discord.Message | None = None
    ):
        self.channel = channel
        self.channel_id = channel_id
        self.reference = reference

    def usable(self) -> bool:
        return True

    async def create(self, first: bool, **fields: Any) -> Any:
        if first and self.reference is not None:
            try:
                return await self.channel.send(reference=self.reference, mention_author=False, **fields)
            except discord.HTTPException as exc:
                if exc.status != 400:
                    raise
                log.info(
                    "Replying to the original message failed (%s); posting without a reference.", exc.code
                )
        return await self.channel.send(**fields)

    async def edit(self, handle: Any, **fields: Any) -> None:
        await handle.edit(**fields)


class InteractionTarget:
    """The messages of an interaction: the deferred response (``@original``) then follow-ups.

    ``deadline`` is the loop time after which the interaction token is treated as expired (Discord: 15
    minutes after the interaction, minus a safety margin), after which the renderer continues elsewhere.
    """

    def __init__(self, interaction: discord.Interaction[Any], *, deferred: bool, deadline: float):
        self.interaction = interaction
        self.channel_id = interaction.channel_id or 0
        self.deferred = deferred
        self.deadline = deadline

    def usable(self) -> bool:
        return asyncio.get_running_loop().time() < self.deadline

    async def create(self, first: bool, **fields: Any) -> Any:
        try:
            if first and self.deferred:
                await self.interaction.edit_original_response(**fields)
                return "@original"
            kwargs = {k: v for k, v in fields.items() if v is not None}
            return await self.interaction.followup.send(wait=True, **kwargs)
        except discord.HTTPException as exc:
            if exc.code in TOKEN_GONE:
                raise TargetGone from exc
            raise

    async def edit(self, handle: Any, **fields: Any) -> None:
        try:
            if handle == "@original":
                await self.interaction.edit_original_response(**fields)
            else:
                await handle.edit(**fields)
        except discord.HTTPException as exc:
            if exc.code in TOKEN_GONE:
                raise TargetGone from exc
            raise


@dataclass
class _Page:
    """One Discord message of the answer: ``text[start:start+length]`` once closed, shown as ``shown`` (with
    the fences that close and reopen a code block split between messages)."""

    target: Target
    start: int
    first: bool
    handle: Any = None
    shown: str = ""
    length: int = 0
    closed: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


class StreamRenderer:
    """Accumulates answer text and keeps Discord messages in sync with it.

    Chunks only mark the renderer dirty; one flush loop edits the open message when the pacer grants a slot,
    so chunks arriving meanwhile are coalesced into one edit. Text beyond 2,000 characters closes the open
    message at a paragraph or word break and continues in a new one. :meth:`finish` waits for the final state:
    every message holds its complete page and the last one carries the view and embeds.
    """

    def __init__(self, target: Target, pacer: EditPacer, fallback: Target | None = None):
        self._pacer = pacer
        self._fallback = fallback
        self._target = target
        self._text = ""
        self._pages: list[_Page] = [_Page(target=target, start=0, first=True)]
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._final_extras: dict[str, Any] = {}
        self._closing = False
        self._broken = False
        self._close_requested = asyncio.Event()

    @property
    def target(self) -> Target:
        """Where the answer starts."""
        return self._pages[0].target

    @property
    def text(self) -> str:
        """All text received so far."""
        return self._text

    def append(self, chunk: str) -> None:
        """Add a chunk; it reaches Discord with the next paced edit."""
        if not chunk:
            return
        self._text += chunk
        self._dirty.set()
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._closing:
                return
            try:
                await self._checked_sync(final=False)
            except Exception:  # keep streaming; the final sync reports persistent failures
                log.warning("Streaming edit failed; will retry with the final text.", exc_info=True)
            # Space one answer's edits evenly over the channel budget; chunks meanwhile are coalesced.
            try:
                await asyncio.wait_for(self._close_requested.wait(), self._pacer.spacing)
            except TimeoutError:
                pass

    async def finish(
        self, *, view: discord.ui.View | None = None, embeds: list[discord.Embed] | None = None
    ) -> None:
        """Stop streaming and bring every message to its final text (with ``view``/``embeds`` on the last)."""
        if self._task is not None:
            # Let an in-flight request finish (cancelling it would skip discord.py's bucket wait).
            self._closing = True
            self._close_requested.set()
            self._dirty.set()
            await self._task
        self._final_extras = {}
        if view is not None:
            self._final_extras["view"] = view
        if embeds:
            self._final_extras["embeds"] = embeds
        for delay in (*FINAL_RETRY_DELAYS, None):
            try:
                await self._checked_sync(final=True)
                return
            except discord.HTTPException as exc:
                # discord.py retries 429s and some 5xx itself, but its bot client not 503, and neither a 429 a
                # sixth time (the pacer now holds the channel for its Retry-After): retry briefly.
                if delay is None or not (isinstance(exc, discord.DiscordServerError) or _rate_limited(exc)):
                    raise
                log.warning("Discord answered %s to the final text; retrying in %.1fs.", exc.status, delay)
                await asyncio.sleep(delay)

    async def _checked_sync(self, *, final: bool) -> None:
        """:meth:`_sync`, giving up for good after a client error (403, 404, 400) instead of repeating it.

        Repeated 4xx responses count toward Discord's invalid-request limit, like 429s.
        """
        if self._broken:
            return
        try:
            await self._sync(final=final)
        except discord.HTTPException as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                self._broken = True
                log.warning("Discord refused the answer (%s %s); not retrying.", exc.status, exc.code)
            raise

    async def _sync(self, *, final: bool) -> None:
        """Edit or post until Discord shows the current text (plus the final extras when ``final``)."""
        while True:
            page = self._pages[-1]
            rest = self._text[page.start :]
            cut, content = layout_page(self._text[: page.start], rest)
            if cut < len(rest):
                if page.shown == content and not page.extras:
                    page.closed = True
                    self._pages.append(_Page(target=self._target, start=page.start + cut, first=False))
                else:
                    await self._render(page, {})
                continue
            extras = self._final_extras if final else {}
            if content == page.shown and page.extras == extras:
                return
            if not rest.strip() and not extras:
                return  # Discord refuses blank content (50006): wait for the first visible character
            await self._render(page, extras)

    async def _render(self, page: _Page, extras: dict[str, Any]) -> None:
        """Create or edit ``page`` with the freshest text of it (moves on when the token expired)."""
        if not page.target.usable():
            self._switch(page)
            return
        creating = page.handle is None
        counts_as_edit = not creating or (
            page.first and isinstance(page.target, InteractionTarget) and page.target.deferred
        )
        try:
            async with self._pacer.slot(page.target.channel_id, edit=counts_as_edit):
                # Chunks may have arrived while waiting for the slot: coalesce them into this request.
                rest = self._text[page.start :]
                cut, content = layout_page(self._text[: page.start], rest)
                if cut < len(rest):
                    extras = {}  # the view and embeds belong on the last message
                fields: dict[str, Any] = {"content": content, **extras}
                if creating:
                    page.handle = await page.target.create(page.first, **fields)
                else:
                    await page.target.edit(page.handle, **fields)
        except TargetGone:
            log.info("Interaction token expired; continuing the answer as channel messages.")
            self._switch(page)
            return
        except discord.NotFound:
            if creating:
                raise
            log.info("A message of the answer was deleted; posting the rest as a new message.")
            page.handle, page.first, page.shown, page.length, page.extras = None, False, "", 0, {}
            return
        page.shown, page.length = content, cut
        page.extras = extras

    def _switch(self, page: _Page) -> None:
        """Move the rest of the answer to the fallback target, keeping what ``page`` already shows."""
        if self._fallback is None:
            raise RuntimeError("The interaction token expired and there is no channel to continue in.")
        self._target = self._fallback
        self._fallback = None
        if page.handle is None:
            page.target = self._target
            page.first = False
            return
        page.closed = True
        self._pages.append(_Page(target=self._target, start=page.start + page.length, first=False))
