"""Text helpers for the Slack channel: Markdown to Slack mrkdwn, splitting long answers, Block Kit."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = [
    "CHOICE_ACTION_PREFIX",
    "asked_user",
    "choice_blocks",
    "defuse_broadcasts",
    "fit_message",
    "help_blocks",
    "open_fence",
    "split_at_boundary",
    "split_point",
    "to_mrkdwn",
    "unfinished_token",
]

CHOICE_ACTION_PREFIX = "flowagents_choice_"
_ASKED_PREFIX = "flowagents_choice_for:"

_FENCE = re.compile(r"```.*?```", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+|mailto:[^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
# Special mentions that notify a whole channel or user group (<!channel>, <!here|here>, <!subteam^S1>...).
_BROADCAST = r"!(?:here|channel|everyone|group|subteam\^)"
# A Slack link, mention or date, its label (after "|") may have spaces: <https://x.io|the setup guide>.
_SLACK_TOKEN = re.compile(
    rf"<(?:[@#][^>\s|]*|!(?!{_BROADCAST[1:]})[^>\s|]*|(?:https?|mailto):[^>\s|]*)(?:\|[^<>\n]*)?>", re.I
)
_BROADCAST_TOKEN = re.compile(rf"<(?={_BROADCAST}[^<>\n]*>)", re.I)  # a label may have spaces
_MAX_TOKEN = 100  # longest unfinished <...> kept back from a stream until its end arrives
# What a message never ends in the middle of: Slack links, mentions and dates (<url|label>, <#C1|name>,
# <!date^..|label>), Markdown links, code spans and emphasis (Markdown **bold**, ~~strike~~, *italics*;
# mrkdwn *bold*, _italics_, ~strike~).
_UNBREAKABLE = re.compile(
    r"<(?:[@#!]|https?:|mailto:)[^<>\n]*>"
    r"|\[[^\]\n]+\]\([^)\s]+\)"
    r"|`[^`\n]+`"
    r"|(\*\*|__|~~)(?=\S).+?(?<=\S)\1"
    r"|(?<![*_~\w])([*_~])(?=\S)[^*_~\n]+?(?<=\S)\2(?![*_~\w])",
    re.I,
)
_FENCE_LINE = re.compile(r"^ {0,3}```[^`\n]*$", re.M)
_CLOSE_ROOM = len("\n```")


def defuse_broadcasts(text: str) -> str:
    """``text`` with its channel-wide and group mentions shown as text, not notifying anyone.

    Answers often repeat what a user typed (or what a model was told to write): the bot must not ping
    a whole channel on their behalf. A zero-width space after ``<`` keeps the text as it reads.
    """
    return _BROADCAST_TOKEN.sub("<\u200b", text)


def unfinished_token(text: str) -> int:
    """Where a trailing ``<...`` that may still become a Slack token (a mention) starts, else ``len(text)``.

    A stream sends text in pieces: a mention split over two pieces would escape `defuse_broadcasts`.
    """
    at = text.rfind("<")
    if at == -1:
        return len(text)
    tail = text[at:]
    target = tail.partition("|")[0]  # a label, after "|", may have spaces: <!subteam^S1|@dev team>
    if ">" in tail or "\n" in tail or len(tail) > _MAX_TOKEN or any(c.isspace() for c in target):
        return len(text)
    return at


def _escape(text: str) -> str:
    """Escape &, < and > as Slack requires, leaving Slack's own <@U..>, <#C..>, <!date..>, <url> intact.

    Channel-wide and group mentions (<!channel>, <!here>, <!everyone>, <!subteam^..>) are escaped too:
    the bot never notifies a whole channel on behalf of what a user typed.
    """
    out: list[str] = []
    pos = 0
    for m in _SLACK_TOKEN.finditer(text):
        out.append(text[pos : m.start()].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        out.append(m.group(0))
        pos = m.end()
    out.append(text[pos:].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)


def _convert_prose(text: str) -> str:
    links: list[str] = []

    def keep_link(m: re.Match[str]) -> str:
        links.append(f"<{m.group(2)}|{_escape(m.group(1))}>")
        return f"\x00L{len(links) - 1}\x00"

    text = _LINK.sub(keep_link, text)
    text = _escape(text)
    text = _HEADING.sub(lambda m: f"\x01{m.group(1)}\x01", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _ITALIC_STAR.sub(r"_\1_", text)
    text = _BOLD.sub(lambda m: f"\x01{m.group(2)}\x01", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace("\x01", "*")
    return re.sub("\x00L(\\d+)\x00", lambda m: links[int(m.group(1))], text)


def to_mrkdwn(markdown: str) -> str:
    """Convert common Markdown (bold, italics, strike, links, headings, bullets) to Slack mrkdwn.

    Code spans and fenced code blocks are kept verbatim (Slack renders them the same way).
    """
    out: list[str] = []
    pos = 0
    for block in _FENCE.finditer(markdown):
        out.append(_convert_inline_code(markdown[pos : block.start()]))
        fenced = block.group(0)
        # Slack ignores the language tag after the opening fence; drop it so it is not shown as code.
        fenced = re.sub(r"^```[\w+-]*\n", "```\n", fenced)
        out.append(fenced)
        pos = block.end()
    out.append(_convert_inline_code(markdown[pos:]))
    return "".join(out)


def _convert_inline_code(text: str) -> str:
    out: list[str] = []
    pos = 0
    for code in _INLINE_CODE.finditer(text):
        out.append(_convert_prose(text[pos : code.start()]))
        out.append(code.group(0))
        pos = code.end()
    out.append(_convert_prose(text[pos:]))
    return "".join(out)


def split_at_boundary(text: str, limit: int) -> tuple[str, str]:
    """Split ``text`` so the head has at most ``limit`` characters, at a paragraph, line or word boundary.

    See :func:`split_point`; a text whose first word is longer than ``limit`` is cut hard.
    Returns ``(head, rest)``; ``head + rest == text`` so no character is ever lost.
    """
    cut = split_point(text, limit, hard=True)
    return text[:cut], text[cut:]


def split_point(text: str, limit: int, *, lines_only: bool = False, hard: bool = False) -> int:
    """Length of the head of ``text`` to send in a message with room for ``limit`` characters.

    All of ``text`` when it fits; else up to a paragraph, line or (unless ``lines_only``) word break that
    is not inside a link, mention, code span or emphasis, preferring a paragraph break past the first
    quarter, then a line break, then a space; else the latest such break; else 0. With ``hard`` (a new
    message, which has to take something) never 0: a link or code span too long for the message is broken
    at a space, and only a word longer than ``limit`` is cut in the middle.
    """
    if len(text) <= limit:
        return len(text)
    limit = max(limit, 1 if hard else 0)
    seps = ("\n\n", "\n") if lines_only else ("\n\n", "\n", " ")
    whole = [m.span() for m in _UNBREAKABLE.finditer(text) if m.start() < limit]
    cut = _break_point(text, limit, seps, whole)
    if hard and not cut:
        cut = _break_point(text, limit, seps, []) or limit
    return cut


def _break_point(text: str, limit: int, seps: tuple[str, ...], whole: list[tuple[int, int]]) -> int:
    latest = 0
    for sep in seps:
        at = text.rfind(sep, 0, limit)
        while at != -1 and any(start < at + len(sep) < end for start, end in whole):
            at = text.rfind(sep, 0, at)
        if at > limit // 4:
            return at + len(sep)
        if at != -1:
            latest = max(latest, at + len(sep))
    return latest


def open_fence(text: str) -> str | None:
    """The opening line (```` ``` ```` and its language) of a code block ``text`` leaves open, else None."""
    opening: str | None = None
    for m in _FENCE_LINE.finditer(text):
        line = m.group(0).strip()
        if opening is None:
            opening = line
        elif line == "```":
            opening = None
    return opening


def fit_message(sent: str, text: str, limit: int) -> tuple[str, str]:
    """``(head, rest)``: what of ``text`` goes into a message of at most ``limit`` characters already
    holding ``sent``, and what goes on in the next message.

    The cut is :func:`split_point`'s, only at a line break when less than a quarter of the message is left;
    with no such break ``head`` is empty (the text starts the next message), except in a new message
    (``sent`` empty), which cuts a word longer than ``limit`` hard. A code block the cut falls in is closed at
    the end of ``head`` and opened again (same language) at the start of ``rest``, so both messages show code
    as code; when the block starts past the first quarter of the room left, the cut moves before it instead.
    A message always keeps room to close the code block it leaves open.
    """
    room = limit - len(sent)
    if len(text) <= room and (len(text) + _CLOSE_ROOM <= room or open_fence(sent + text) is None):
        return text, ""
    lines_only = bool(sent) and room < limit // 4
    cut = split_point(text, room, lines_only=lines_only, hard=not sent)
    if open_fence(sent + text[:cut]) is None:
        return text[:cut], text[cut:]
    fences = [m.start() for m in _FENCE_LINE.finditer(text, 0, cut)]
    if fences and fences[-1] > room // 4 and open_fence(sent + text[: fences[-1]]) is None:
        return text[: fences[-1]], text[fences[-1] :]  # the block starts in the next message
    room -= _CLOSE_ROOM
    cut = split_point(text, room, lines_only=lines_only, hard=not sent)
    head, rest = sent + text[:cut], text[cut:]
    opening = open_fence(head)
    if opening is None:
        return text[:cut], rest
    if not sent and cut <= len(opening) + 1:
        return text[:cut], rest  # a message too small to hold its code block: cut as plain text
    close = "```" if head.endswith("\n") else "\n```"
    closing = _FENCE_LINE.match(rest)
    if closing and closing.group(0).strip() == "```":  # the block ends right here: no need to reopen it
        return text[:cut] + close, rest[closing.end() :].removeprefix("\n")
    return text[:cut] + close, f"{opening}\n{rest}"


class AgentInfoLike(Protocol):
    """What the help reply needs from `flowagents.AgentInfo`."""

    name: str
    description: str
    triggers: list[str]
    example: str | None


def help_blocks(intro: str, agents: Iterable[AgentInfoLike]) -> list[dict[str, Any]]:
    """Block Kit for a no-match reply: the intro, then each agent with its description and a trigger."""
    blocks: list[dict[str, Any]] = []
    if intro.strip():
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": to_mrkdwn(intro.strip())[:3000]}}
        )
    listed = list(agents)
    if listed:
        blocks.append(
            {"type": "header", "text": {"type": "plain_text", "text": "Here is what I can help with"}}
        )
    for info in listed[:45]:  # Slack allows 50 blocks per message
        example = info.example or (info.triggers[0] if info.triggers else None)
        line = f"*{_escape(info.name)}*"
        if info.description:
            line += f"\n{to_mrkdwn(info.description)}"
        if example:
            line += f"\n_Try:_ `{example.replace('`', '')}`"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line[:3000]}})
    return blocks


def help_text(intro: str, agents: Iterable[AgentInfoLike]) -> str:
    """Plain-text fallback of :func:`help_blocks` (notifications, screen readers)."""
    lines = [intro.strip()] if intro.strip() else []
    for info in agents:
        example = info.example or (info.triggers[0] if info.triggers else None)
        lines.append(f"• {info.name}: {info.description}" + (f" (try: {example})" if example else ""))
    return "\n".join(lines)


def choice_blocks(question: str, choices: Sequence[str], user_id: str | None = None) -> list[dict[str, Any]]:
    """The question as a section plus one button per choice (a click answers with the choice's text).

    With ``user_id`` the buttons' block names the user asked (:func:`asked_user` reads it from a click).
    """
    buttons = [
        {
            "type": "button",
            "action_id": f"{CHOICE_ACTION_PREFIX}{i}",
            "text": {"type": "plain_text", "text": choice[:75]},
            "value": choice[:2000],
        }
        for i, choice in enumerate(choices[:25])
    ]
    actions: dict[str, Any] = {"type": "actions", "elements": buttons}
    if user_id:
        actions["block_id"] = f"{_ASKED_PREFIX}{user_id}"[:255]
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": to_mrkdwn(question)[:3000] or " "}},
        actions,
    ]


def asked_user(block_id: object) -> str | None:
    """The user a choice question was asked of, from the ``block_id`` of its clicked button, else None."""
    if isinstance(block_id, str) and block_id.startswith(_ASKED_PREFIX):
        return block_id[len(_ASKED_PREFIX) :] or None
    return None
