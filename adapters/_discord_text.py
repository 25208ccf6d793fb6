"""Text helpers of the Discord channel: page splitting, help embeds and user-facing wording."""

from __future__ import annotations

import re
from collections.abc import Sequence

import discord

from flowagents import AgentInfo

MESSAGE_LIMIT = 2000
"""Discord's limit on the content of one message."""

EMBED_LIMIT = 6000
"""Discord's limit on the characters of a message's embeds (titles, descriptions, fields, footers)."""
MAX_FIELDS = 25
_NOTE_ROOM = 100  # kept free for the "more not listed" description

APOLOGY = "Sorry, something went wrong while handling that. Please try again in a moment."
NO_MATCH_INTRO = "I'm not sure how to help with that. Here is what I can do:"
_MENTION = re.compile(r"<@!?(\d+)>")


def split_point(text: str, limit: int = MESSAGE_LIMIT) -> int:
    """Length of the first page of ``text``: all of it when it fits, else up to a paragraph, line or word
    break.

    The separator stays at the end of the first page, so the pages joined are exactly ``text``. A break in the
    first quarter of the page is ignored (it would leave a stub message); a text without breaks is cut hard.
    """
    if len(text) <= limit:
        return len(text)
    window = text[:limit]
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        if at >= limit // 4:
            return at + len(sep)
    return limit


_FENCE_LINE = re.compile(r"^ {0,3}```[^`\n]*$", re.M)
_CLOSE_ROOM = len("\n```")


def open_fence(text: str) -> str | None:
    """The opening line (```` ``` ```` and its language) of a code block ``text`` leaves open, else None."""
    opening: str | None = None
    for m in _FENCE_LINE.finditer(text):
        opening = m.group(0).strip() if opening is None else None
    return opening


def layout_page(before: str, rest: str, limit: int = MESSAGE_LIMIT) -> tuple[int, str]:
    """``(cut, content)``: the page showing ``rest`` (the answer after ``before``) holds ``rest[:cut]`` and
    shows ``content``, at most ``limit`` characters.

    The cut is :func:`split_point`'s, moved to the start of a code block the cut would fall in when that block
    starts late enough on the page. A code block the cut still falls in is closed at the end of the page and
    opened again (same language) at the start of the next, so every message renders its code as code.
    """
    reopen = open_fence(before)
    prefix = reopen + "\n" if reopen else ""
    if len(prefix) + len(rest) <= limit:
        return len(rest), prefix + rest
    room = limit - len(prefix) - _CLOSE_ROOM
    cut = split_point(rest, room)
    if open_fence(prefix + rest[:cut]) is None:
        return cut, prefix + rest[:cut]
    fences = list(_FENCE_LINE.finditer(rest, 0, cut))
    if fences and fences[-1].start() >= room // 4:  # end the page before the code block instead
        cut = fences[-1].start()
        return cut, prefix + rest[:cut]
    head = prefix + rest[:cut]
    return cut, head + ("```" if head.endswith("\n") else "\n```")


def split_pages(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` cut into pages of at most ``limit`` characters (see :func:`split_point`)."""
    pages: list[str] = []
    while len(text) > limit:
        cut = split_point(text, limit)
        pages.append(text[:cut])
        text = text[cut:]
    pages.append(text)
    return pages


def strip_mentions(content: str, bot_id: int) -> str:
    """The text of a message that mentions the bot, without the bot's mention."""
    return _MENTION.sub(lambda m: "" if int(m.group(1)) == bot_id else m.group(0), content).strip()


def help_embed(catalog: Sequence[AgentInfo], *, title: str = "What I can help with") -> discord.Embed:
    """An embed listing each agent with its description and an example trigger.

    Stays within Discord's embed limits: at most 25 fields and 6,000 characters in all, shortening the
    descriptions to share the room and leaving out (and counting) the agents that still do not fit.
    """
    embed = discord.Embed(title=title, colour=discord.Colour.blurple())
    embed.set_footer(text="Ask with /ask, in a DM, or by mentioning me. /cancel stops the current task.")
    agents = list(catalog)
    if not agents:
        embed.description = "No agents are configured yet."
        return embed
    share = (EMBED_LIMIT - _NOTE_ROOM - len(embed)) // min(len(agents), MAX_FIELDS)
    for info in agents[:MAX_FIELDS]:
        name = info.name[:256]
        example = info.example or (info.triggers[0] if info.triggers else None)
        tip = f"\nTry: `/ask message: {example[:80]}`" if example else ""
        value = _clip(info.description or "No description.", min(900, share - len(name) - len(tip))) + tip
        if len(embed) + len(name) + len(value) > EMBED_LIMIT - _NOTE_ROOM:
            break
        embed.add_field(name=name, value=value, inline=False)
    left_out = len(agents) - len(embed.fields)
    if left_out:
        embed.description = f"{left_out} more not listed here (Discord limits the size of this list)."
    return embed


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (ending in an ellipsis when cut; at least the ellipsis)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def too_long(length: int, limit: int) -> str:
    """The reply to a message over the input limit."""
    return (
        f"Your message is {length:,} characters long; I can read at most {limit:,}. "
        "Please shorten it and try again."
    )
