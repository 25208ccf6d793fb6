"""Settings of the loopback fake Discord."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FakeDiscordConfig(BaseModel):
    """Knobs of :class:`~flowagents.testing.discord.FakeDiscord`.

    Windows are in seconds. Defaults are Discord's published (or observed) values; tests usually scale the
    windows down (``edit_window=0.5``) and give the bot under test the same budget.
    """

    token: str = "fake-discord-token"
    bot_name: str = "flowbot"
    # Announced per-route buckets (X-RateLimit-* headers), e.g. POST /channels/{id}/messages per channel.
    route_limit: int = Field(default=5, ge=1)
    route_window: float = Field(default=5.0, gt=0)
    # Announced bucket of interaction webhooks (per interaction token).
    webhook_limit: int = Field(default=5, ge=1)
    webhook_window: float = Field(default=2.0, gt=0)
    # Unannounced per-channel budget shared by all message edits (channel PATCH and webhook PATCH).
    edit_limit: int = Field(default=5, ge=1)
    edit_window: float = Field(default=5.0, gt=0)
    # Per-bot global limit (interaction callbacks are exempt, as on Discord).
    global_limit: int = Field(default=50, ge=1)
    global_window: float = Field(default=1.0, gt=0)
    heartbeat_interval_ms: int = Field(default=41250, ge=10)
    ack_deadline: float = Field(default=3.0, gt=0)
    interaction_ttl: float = Field(default=900.0, gt=0)
    # How many already-delivered events a RESUME replays again (Discord may redeliver after reconnects).
    replay_overlap: int = Field(default=0, ge=0)
    # Whether the portal allows the privileged message-content intent.
    allow_message_content: bool = True
    # Shard count /gateway/bot recommends.
    recommended_shards: int = Field(default=1, ge=1)
