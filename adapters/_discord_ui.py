"""Buttons and select menus for fields with ``choices=``; clicks become the user's next message.

Both are discord.py ``DynamicItem``s: the user and the choice live in the ``custom_id``, so clicks work
after a restart and on any process of a sharded bot, and no view is kept in memory per message.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import discord

BUTTON_PREFIX = "fa:c:"
SELECT_PREFIX = "fa:s:"
MAX_BUTTONS = 5
MAX_OPTIONS = 25

ChoiceHandler = Callable[[discord.Interaction[Any], str], Awaitable[None]]


def _handler(interaction: discord.Interaction[Any]) -> ChoiceHandler:
    handler = getattr(interaction.client, "flow_choice_handler", None)
    if handler is None:  # a client without a DiscordChannel: nothing can answer
        raise RuntimeError("Choice component clicked on a client without flowagents' DiscordChannel.")
    return handler  # type: ignore[no-any-return]


class ChoiceButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"fa:c:(?P<user>\d+):(?P<value>.+)"
):
    """A button that answers the asked field with its label, for the user it was asked of."""

    def __init__(self, user_id: int, value: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=value, style=discord.ButtonStyle.primary, custom_id=f"{BUTTON_PREFIX}{user_id}:{value}"
            )
        )
        self.user_id = user_id
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ChoiceButton:
        return cls(int(match["user"]), match["value"])

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        return await _check_user(interaction, self.user_id)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _handler(interaction)(interaction, self.value)


class ChoiceSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"fa:s:(?P<user>\d+)"):
    """A select menu whose picked option answers the asked field."""

    def __init__(self, user_id: int, choices: Sequence[str] = ()) -> None:
        options = [discord.SelectOption(label=c[:100], value=c) for c in choices]
        super().__init__(
            discord.ui.Select(
                custom_id=f"{SELECT_PREFIX}{user_id}",
                placeholder="Choose an answer",
                min_values=1,
                max_values=1,
                options=options or [discord.SelectOption(label="-", value="-")],
            )
        )
        self.user_id = user_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ChoiceSelect:
        return cls(int(match["user"]))

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        return await _check_user(interaction, self.user_id)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        values = self.item.values
        if values:
            await _handler(interaction)(interaction, values[0])


async def _check_user(interaction: discord.Interaction[Any], user_id: int) -> bool:
    if interaction.user.id == user_id:
        return True
    await interaction.response.send_message(f"This question is for <@{user_id}>.", ephemeral=True)
    return False


def is_choice(custom_id: str) -> bool:
    """True when ``custom_id`` is one of a :class:`ChoiceButton` or :class:`ChoiceSelect` (they answer it)."""
    return any(
        item.__discord_ui_compiled_template__.fullmatch(custom_id) is not None
        for item in (ChoiceButton, ChoiceSelect)
    )


def choices_view(user_id: int, choices: Sequence[str] | None) -> discord.ui.View | None:
    """Buttons for up to 5 short choices, a select menu for up to 25, else None (the question lists them)."""
    if not choices:
        return None
    room = 100 - len(f"{BUTTON_PREFIX}{user_id}:")
    view = discord.ui.View(timeout=None)
    if len(choices) <= MAX_BUTTONS and all(0 < len(c) <= min(80, room) for c in choices):
        for choice in choices:
            view.add_item(ChoiceButton(user_id, choice))
        return view
    if (
        len(choices) <= MAX_OPTIONS
        and all(0 < len(c) <= 100 for c in choices)
        and len(set(choices)) == len(choices)
    ):
        view.add_item(ChoiceSelect(user_id, choices))
        return view
    return None
