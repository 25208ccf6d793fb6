"""A loopback fake Discord for testing bots built on discord.py.

:class:`FakeDiscord` serves Discord's REST API and gateway on 127.0.0.1 (random port). The real discord.py
client talks to it unchanged; only its REST base and gateway URL point here::

    async with FakeDiscord(FakeDiscordConfig(edit_window=0.5)) as fake:
        guild = fake.add_guild("Acme")
        channel = DiscordChannel(orch, token=fake.token, api_url=fake.api_url, gateway_url=fake.gateway_url)
        await channel.start()
        inter = await fake.slash_command("ask", {"message": "hi"}, guild_id=guild.id,
                                         channel_id=guild.channel_ids[0], user_id=42)
        await fake.wait_for(lambda: fake.final_text(inter) == "Hello!")

What it speaks: REST with ``X-RateLimit-*`` headers and real 429 bodies (per-route buckets, an unannounced
per-channel edit budget, the 50/s global limit), interaction callbacks and webhook edits with the 3-second
acknowledgement deadline and 15-minute token lifetime, and a gateway with HELLO, IDENTIFY -> READY,
GUILD_CREATE, heartbeat ACKs, RESUME -> RESUMED (with replay), RECONNECT, INVALID_SESSION and zlib-stream
transport compression. Every REST call is recorded in :attr:`FakeDiscord.calls`; 429s in
:attr:`FakeDiscord.rate_limited`.

Pytest: ``from flowagents.testing.discord import fake_discord`` makes the ``fake_discord`` fixture available
in a test module (or list ``flowagents.testing.discord`` in ``pytest_plugins`` of a root conftest).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web

from flowagents.testing._discord_config import FakeDiscordConfig
from flowagents.testing._discord_gateway import INVALID_SESSION, MESSAGE_CONTENT, RECONNECT, Gateway
from flowagents.testing._discord_rest import RestApi
from flowagents.testing._discord_state import (
    GUILD_TEXT,
    PUBLIC_THREAD,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMessage,
    RestCall,
    World,
    member_payload,
    user_payload,
)

__all__ = [
    "FakeChannel",
    "FakeDiscord",
    "FakeDiscordConfig",
    "FakeGuild",
    "FakeInteraction",
    "FakeMessage",
    "RestCall",
    "fake_discord",
]

# Application-command option types.
_OPTION_TYPES: dict[type, int] = {str: 3, int: 4, bool: 5, float: 10}


class FakeDiscord:
    """A loopback Discord (REST + gateway) for tests; use as ``async with FakeDiscord() as fake``."""

    def __init__(self, config: FakeDiscordConfig | None = None) -> None:
        self.config = config or FakeDiscordConfig()
        self.world = World(self.config)
        self._base = ""
        self.rest = RestApi(self.world, lambda: self.gateway_url)
        self.gateway = Gateway(self.world, lambda: self.gateway_url)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", self.rest.handle)
        app.router.add_get("/gateway", self.gateway.handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._base = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        for session in self.gateway.sessions.values():
            if session.conn is not None:
                await session.conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- addresses and identity -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """REST base including the version, for ``DISCORD_API_URL``."""
        return f"http://{self._base}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Gateway websocket URL, for ``DISCORD_GATEWAY_URL``."""
        return f"ws://{self._base}/gateway"

    @property
    def token(self) -> str:
        """The bot token the fake accepts."""
        return self.config.token

    @property
    def bot_id(self) -> int:
        """The bot user's id (also the application id)."""
        return self.world.bot_id

    @property
    def calls(self) -> list[RestCall]:
        """Every REST request the bot made, in order."""
        return self.world.calls

    @property
    def rate_limited(self) -> list[RestCall]:
        """The requests answered with 429."""
        return self.rest.rate_limited

    def calls_to(self, method: str, path_contains: str = "") -> list[RestCall]:
        """Recorded calls with ``method`` whose path contains ``path_contains``."""
        return [c for c in self.calls if c.method == method and path_contains in c.path]

    # -- world setup ----------------------------------------------------------------------------------

    def add_guild(
        self, name: str = "Test server", channels: int = 1, *, guild_id: int | None = None
    ) -> FakeGuild:
        """Add a server with ``channels`` text channels (before the bot connects; else :meth:`guild_join`)."""
        guild = FakeGuild(id=guild_id or self.world.snowflake(), name=name)
        for i in range(channels):
            cid = self.world.snowflake()
            guild.channels[cid] = FakeChannel(id=cid, type=GUILD_TEXT, name=f"general-{i}", guild_id=guild.id)
            self.world.channels[cid] = guild.channels[cid]
        self.world.guilds[guild.id] = guild
        return guild

    def add_thread(self, guild_id: int, parent_id: int, name: str = "thread") -> FakeChannel:
        """Add a public thread under ``parent_id``."""
        tid = self.world.snowflake()
        thread = FakeChannel(id=tid, type=PUBLIC_THREAD, name=name, guild_id=guild_id, parent_id=parent_id)
        self.world.guilds[guild_id].channels[tid] = thread
        self.world.channels[tid] = thread
        return thread

    async def guild_join(self, guild: FakeGuild) -> None:
        """Send GUILD_CREATE for a guild added after the bot connected."""
        await self.gateway.dispatch(guild.id, "GUILD_CREATE", self.gateway.guild_payload(guild.id))

    def dm_channel_id(self, user_id: int) -> int:
        """The id of the DM channel with ``user_id``."""
        return self.world.dm_channel(user_id).id

    # -- events from users ----------------------------------------------------------------------------

    def _command(self, name: str, guild_id: int | None) -> dict[str, Any]:
        for scope in (guild_id, None):
            for cmd in self.world.commands.get(scope, []):
                if cmd["name"] == name:
                    return cmd
        raise LookupError(f"Command /{name} was never synced (guild {guild_id} or global).")

    def _new_interaction(
        self,
        itype: int,
        data: dict[str, Any],
        *,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int,
        message: FakeMessage | None = None,
    ) -> FakeInteraction:
        w = self.world
        channel = w.channels[channel_id] if channel_id is not None else w.dm_channel(user_id)
        iid = w.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(w.application_id),
            "type": itype,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.to_payload(),
            "token": token,
            "version": 1,
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10485760,
            "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": str(user_id)},
            "context": 0 if guild_id else 1,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["member"] = member_payload(user_id)
        else:
            payload["user"] = user_payload(user_id)
        if message is not None:
            payload["message"] = w.message_payload(message)
        inter = FakeInteraction(
            id=iid,
            token=token,
            type=itype,
            channel_id=channel.id,
            guild_id=guild_id,
            user_id=user_id,
            payload=payload,
            created=asyncio.get_running_loop().time(),
        )
        w.interactions[iid] = inter
        w.tokens[token] = iid
        return inter

    async def slash_command(
        self,
        name: str,
        options: Mapping[str, Any] | list[dict[str, Any]] | None = None,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        times: int = 1,
    ) -> FakeInteraction:
        """A user runs ``/name``; ``options`` maps names to values (or raw option dicts for odd payloads).

        Without ``guild_id`` the command runs in the user's DM with the bot. ``times`` > 1 delivers the same
        INTERACTION_CREATE again (a duplicate gateway delivery).
        """
        cmd = self._command(name, guild_id)
        if isinstance(options, list):
            raw_options = options
        else:
            raw_options = [
                {"name": k, "type": _OPTION_TYPES.get(type(v), 3), "value": v}
                for k, v in (options or {}).items()
            ]
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": raw_options}
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        inter = self._new_interaction(2, data, guild_id=guild_id, channel_id=channel_id, user_id=user_id)
        await self.gateway.dispatch(guild_id, "INTERACTION_CREATE", inter.payload, times=times)
        return inter

    async def click(
        self, message: FakeMessage, custom_id: str, *, user_id: int, times: int = 1
    ) -> FakeInteraction:
        """A user clicks the button ``custom_id`` of ``message``."""
        comp = message.component(custom_id)
        if comp.get("type") != 2:
            raise ValueError(f"{custom_id!r} is not a button; use select().")
        data = {"custom_id": custom_id, "component_type": 2}
        inter = self._new_interaction(
            3,
            data,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            user_id=user_id,
            message=message,
        )
        await self.gateway.dispatch(message.guild_id, "INTERACTION_CREATE", inter.payload, times=times)
        return inter

    async def select(
        self, message: FakeMessage, custom_id: str, values: list[str], *, user_id: int
    ) -> FakeInteraction:
        """A user picks ``values`` in the select menu ``custom_id`` of ``message``."""
        comp = message.component(custom_id)
        if comp.get("type") != 3:
            raise ValueError(f"{custom_id!r} is not a string select menu.")
        data = {"custom_id": custom_id, "component_type": 3, "values": values}
        inter = self._new_interaction(
            3,
            data,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            user_id=user_id,
            message=message,
        )
        await self.gateway.dispatch(message.guild_id, "INTERACTION_CREATE", inter.payload)
        return inter

    async def user_message(
        self,
        content: str,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        mention_bot: bool = False,
        reply_to: FakeMessage | None = None,
        times: int = 1,
    ) -> FakeMessage:
        """A user posts ``content``: in their DM with the bot (no ``guild_id``) or in a server channel.

        With ``mention_bot`` the content starts with ``<@bot>`` and the bot is in ``mentions``. Like Discord,
        guild messages that do not mention the bot arrive with empty content unless the bot identified with
        the message-content intent. ``reply_to`` makes it a reply (without a ping) to that message.
        """
        w = self.world
        channel = w.channels[channel_id] if channel_id is not None else w.dm_channel(user_id)
        text = f"<@{w.bot_id}> {content}" if mention_bot else content
        msg = FakeMessage(
            id=w.snowflake(),
            channel_id=channel.id,
            guild_id=guild_id,
            author_id=user_id,
            content=text,
            reference_id=reply_to.id if reply_to else None,
        )
        w.messages[msg.id] = msg
        data = w.message_payload(msg)
        if reply_to is not None:
            data["referenced_message"] = w.message_payload(reply_to)
        if mention_bot:
            data["mentions"] = [w.bot_user()]
        if guild_id is not None:
            data["member"] = {k: v for k, v in member_payload(user_id).items() if k != "user"}
            visible = mention_bot or bool(self.gateway.shard_for(guild_id).intents & MESSAGE_CONTENT)
            if not visible:
                data["content"] = ""
        await self.gateway.dispatch(guild_id, "MESSAGE_CREATE", data, times=times)
        return msg

    # -- gateway control ------------------------------------------------------------------------------

    async def wait_until_ready(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until a bot identified and got READY."""
        await asyncio.wait_for(self.gateway.ready.wait(), timeout)

    async def request_reconnect(self, shard_id: int = 0) -> None:
        """Send op 7 RECONNECT: the client should reconnect and RESUME."""
        self.gateway.resumed.clear()
        await self.gateway.send_op(shard_id, RECONNECT, None)

    async def drop_connection(self, shard_id: int = 0) -> None:
        """Close the websocket abruptly (code 4000): the client should reconnect and RESUME."""
        self.gateway.resumed.clear()
        await self.gateway.drop(shard_id)

    async def invalidate_session(self, shard_id: int = 0, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION: the client must IDENTIFY again unless ``resumable``."""
        await self.gateway.send_op(shard_id, INVALID_SESSION, resumable)

    async def wait_resumed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until a client RESUMEd after :meth:`request_reconnect` / :meth:`drop_connection`."""
        await asyncio.wait_for(self.gateway.resumed.wait(), timeout)

    # -- assertions -----------------------------------------------------------------------------------

    def messages(self, channel_id: int) -> list[FakeMessage]:
        """Visible messages of a channel (the bot's and users'), oldest first."""
        return self.world.visible_messages(channel_id)

    def bot_messages(self, channel_id: int) -> list[FakeMessage]:
        """Visible messages the bot posted in a channel, oldest first."""
        return [m for m in self.messages(channel_id) if m.author_id == self.bot_id]

    def interaction_messages(self, inter: FakeInteraction) -> list[FakeMessage]:
        """The response message of an interaction then its follow-ups (visible ones)."""
        ids = ([inter.original_id] if inter.original_id else []) + inter.followup_ids
        return [self.world.messages[i] for i in ids if not self.world.messages[i].deleted]

    def final_text(self, inter: FakeInteraction) -> str:
        """The text a user sees for an interaction's answer: its messages' contents joined."""
        return "".join(m.content for m in self.interaction_messages(inter))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds (checked after each REST call); TimeoutError otherwise."""

        async def _loop() -> None:
            while not predicate():
                self.rest.changed.clear()
                try:
                    await asyncio.wait_for(self.rest.changed.wait(), 0.05)
                except TimeoutError:
                    pass

        await asyncio.wait_for(_loop(), timeout)


try:
    import pytest_asyncio
except ImportError:  # the fixture is only for pytest users
    pass
else:

    @pytest_asyncio.fixture
    async def fake_discord() -> AsyncIterator[FakeDiscord]:
        """A running :class:`FakeDiscord` with default settings, stopped after the test."""
        async with FakeDiscord() as fake:
            yield fake
