"""Text helpers of the Discord channel: page splitting, help embeds and user-facing wording."""

from __future__ import annotations

import re
from collections.abc import Sequence

import discord

from flowagents import AgentInfo

MESSAGE_LIMIT = 2000
"""Discord's limit on the content of one message."""

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
    """An embed listing each agent with its description and an example trigger (at most 25 agents)."""
    embed = discord.Embed(title=title, colour=discord.Colour.blurple())
    for info in list(catalog)[:25]:
        example = info.example or (info.triggers[0] if info.triggers else None)
        value = (info.description or "No description.")[:900]
        if example:
            value += f"\nTry: `/ask message: {example[:80]}`"
        embed.add_field(name=info.name[:256], value=value, inline=False)
    if not catalog:
        embed.description = "No agents are configured yet."
    embed.set_footer(text="Ask with /ask, in a DM, or by mentioning me. /cancel stops the current task.")
    return embed


def too_long(length: int, limit: int) -> str:
    """The reply to a message over the input limit."""
    return (
        f"Your message is {length:,} characters long; I can read at most {limit:,}. "
        "Please shorten it and try again."
    )
