"""In-memory state of the loopback fake Discord: users, guilds, channels, messages, interactions."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Channel types (Discord API).
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11


class SnowflakeFactory:
    """Monotonic snowflakes that look like Discord's (timestamp << 22 | counter)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


def iso_now() -> str:
    """Current time in Discord's ISO-8601 format."""
    return datetime.now(UTC).isoformat()


@dataclass
class RestCall:
    """One REST request the bot made, as the fake saw it."""

    method: str
    path: str
    json: Any
    status: int = 0
    bucket: str = ""
    query: dict[str, str] = field(default_factory=dict)
    at: float = 0.0
    """Event-loop time the fake received the request (for debugging; tests should not assert on it)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Rate-limit headers of the response."""


@dataclass
class FakeMessage:
    """A message as stored by the fake (the latest version after edits)."""

    id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    webhook_id: int | None = None
    interaction_id: int | None = None
    reference_id: int | None = None
    edits: int = 0
    history: list[str] = field(default_factory=list)
    deleted: bool = False
    flags: int = 0

    @property
    def custom_ids(self) -> list[str]:
        """Every ``custom_id`` of the message's buttons and select menus."""
        out: list[str] = []
        for row in self.components:
            for comp in row.get("components", []):
                if "custom_id" in comp:
                    out.append(comp["custom_id"])
        return out

    def component(self, custom_id: str) -> dict[str, Any]:
        """The component with ``custom_id`` (KeyError when absent)."""
        for row in self.components:
            for comp in row.get("components", []):
                if comp.get("custom_id") == custom_id:
                    return dict(comp)
        raise KeyError(custom_id)


@dataclass
class FakeInteraction:
    """An interaction the fake delivered, with what the bot answered."""

    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user_id: int
    payload: dict[str, Any]
    created: float
    callback_type: int | None = None
    callback_count: int = 0
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        """True once the bot answered the callback."""
        return self.callback_type is not None


@dataclass
class FakeChannel:
    """A text channel, thread or DM channel."""

    id: int
    type: int
    name: str
    guild_id: int | None = None
    parent_id: int | None = None
    recipient_id: int | None = None

    def to_payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": str(self.id), "type": self.type, "name": self.name, "flags": 0}
        if self.type == DM:
            data["recipients"] = [user_payload(self.recipient_id or 0)]
            data["last_message_id"] = None
            data.pop("name")
            return data
        data.update(
            {
                "guild_id": str(self.guild_id),
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": str(self.parent_id) if self.parent_id else None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
            }
        )
        if self.type == PUBLIC_THREAD:
            data["owner_id"] = "1"
            data["thread_metadata"] = {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso_now(),
                "locked": False,
            }
            data["member_count"] = 1
            data["message_count"] = 0
        return data


@dataclass
class FakeGuild:
    """A server with its text channels."""

    id: int
    name: str
    channels: dict[int, FakeChannel] = field(default_factory=dict)

    @property
    def channel_ids(self) -> list[int]:
        """Ids of the guild's channels in creation order."""
        return list(self.channels)


def user_payload(user_id: int, *, bot: bool = False, name: str | None = None) -> dict[str, Any]:
    """A Discord user object for ``user_id``."""
    return {
        "id": str(user_id),
        "username": name or f"user{user_id}",
        "global_name": None,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def member_payload(user_id: int) -> dict[str, Any]:
    """A guild member object (with its user) for interactions and messages."""
    return {
        "user": user_payload(user_id),
        "roles": [],
        "joined_at": iso_now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "permissions": "2248473465835073",
        "nick": None,
        "avatar": None,
    }


class World:
    """Everything the fake knows, shared by its REST API and its gateway."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.snowflake = SnowflakeFactory()
        self.bot_id = self.snowflake()
        self.application_id = self.bot_id
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.tokens: dict[str, int] = {}  # interaction token -> interaction id
        self.calls: list[RestCall] = []
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None = global) -> commands

    def bot_user(self) -> dict[str, Any]:
        """The bot's user object."""
        return user_payload(self.bot_id, bot=True, name=self.config.bot_name)

    def dm_channel(self, user_id: int) -> FakeChannel:
        """The DM channel between the bot and ``user_id`` (created on first use)."""
        channel_id = self.dm_channels.get(user_id)
        if channel_id is None:
            channel_id = self.snowflake()
            self.dm_channels[user_id] = channel_id
            self.channels[channel_id] = FakeChannel(id=channel_id, type=DM, name="", recipient_id=user_id)
        return self.channels[channel_id]

    def message_payload(self, msg: FakeMessage) -> dict[str, Any]:
        """The Discord message object of ``msg``."""
        author = self.bot_user() if msg.author_id == self.bot_id else user_payload(msg.author_id)
        data: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": author,
            "content": msg.content,
            "timestamp": iso_now(),
            "edited_timestamp": iso_now() if msg.edits else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": msg.embeds,
            "components": msg.components,
            "pinned": False,
            "type": 19 if msg.reference_id else 0,
            "flags": msg.flags,
        }
        if msg.guild_id is not None:
            data["guild_id"] = str(msg.guild_id)
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
            data["application_id"] = str(self.application_id)
        if msg.reference_id is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(msg.reference_id),
                "channel_id": str(msg.channel_id),
                **({"guild_id": str(msg.guild_id)} if msg.guild_id else {}),
            }
        return data

    def visible_messages(self, channel_id: int) -> list[FakeMessage]:
        """Messages of a channel that were not deleted, oldest first."""
        return sorted(
            (m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted),
            key=lambda m: m.id,
        )
