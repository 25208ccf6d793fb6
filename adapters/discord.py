"""Discord channel: slash commands, DMs and mentions in, ``process_stream`` turns, streamed answers out.

Built on discord.py: an ``app_commands.CommandTree`` for ``/ask``, ``/help`` and ``/cancel``, ``DynamicItem``
buttons and select menus for fields with choices, discord.py's HTTP client (and its rate-limit buckets) for
every request, plus a small pacer for the per-channel edit budget Discord does not announce.
See docs/discord.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import discord
import yarl
from discord import app_commands

from adapters._discord_pacer import EditPacer
from adapters._discord_stream import ChannelTarget, InteractionTarget, StreamRenderer, Target
from adapters._discord_text import APOLOGY, NO_MATCH_INTRO, help_embed, strip_mentions, too_long
from adapters._discord_ui import ChoiceButton, ChoiceSelect, choices_view, is_choice
from flowagents import observability
from flowagents.errors import ConfigurationError

__all__ = ["DEFAULT_API_URL", "DEFAULT_DM_TENANT", "DiscordChannel"]

log = logging.getLogger("adapters.discord")

DEFAULT_API_URL = "https://discord.com/api/v10"
DEFAULT_DM_TENANT = "discord-dm"
"""Tenant id of every direct-message conversation (servers use their guild id)."""

BAD_OPTIONS = (
    "That command's options didn't look right: `message` must be text. Use `/ask message: <your question>`."
)
DECLINED = "I can't take that request right now."
RESTARTING = "I'm restarting right now; please send that again in a minute."
"""The answer to anything sent while the channel stops (Discord does not redeliver gateway events)."""
RECONNECT_DELAY = 1.0
"""Seconds before a new gateway session after an event that could not be read (doubling, up to 60)."""
STALE_COMPONENT = "This button or menu is no longer valid. Use `/ask` to continue."
_FAILED = {"failed", "timed_out"}
_ALREADY_ACKED = 40060
_UNKNOWN_INTERACTION = 10062
_WEBHOOK_PATH = re.compile(r"/webhooks/\d+/([^/]+)")
_CHANNEL_PATH = re.compile(r"/channels/(\d+)/")


class _Orchestrator(Protocol):
    """The part of ``flowagents.Orchestrator`` the channel uses (docs/core-api.md)."""

    def process_stream(
        self,
        message: str,
        tenant_id: str = ...,
        user_id: str | None = ...,
        conversation_id: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        delivery_id: str | None = ...,
    ) -> AsyncIterator[Any]: ...

    async def cancel(
        self, tenant_id: str = ..., user_id: str | None = ..., conversation_id: str | None = ...
    ) -> Any: ...

    def agent_catalog(self, tenant_id: str | None = ...) -> Sequence[Any]: ...


@dataclass(frozen=True)
class _Turn:
    """One message for the orchestrator and where it came from."""

    text: str
    tenant_id: str
    conversation_id: str
    user_id: str
    delivery_id: str
    metadata: dict[str, Any]


class _Hooks:
    """discord.py client hooks, forwarded to the channel."""

    flow: DiscordChannel

    async def setup_hook(self) -> None:
        await self.flow._setup()

    async def on_ready(self) -> None:
        self.flow._ready.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.flow._on_message(message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self.flow._on_interaction(interaction)

    async def flow_choice_handler(self, interaction: discord.Interaction[Any], value: str) -> None:
        await self.flow._on_choice(interaction, value)


class _Client(_Hooks, discord.Client):
    pass


class _ShardedClient(_Hooks, discord.AutoShardedClient):
    pass


class DiscordChannel:
    """Serves an orchestrator on Discord.

    Tenant = guild id (``str``); DMs use the tenant ``dm_tenant_id`` (default ``"discord-dm"``).
    Conversation = channel or thread id, per user. ``start()`` logs in, syncs the slash commands (to
    ``guild_ids`` if given, else globally), connects to the gateway and runs until :meth:`stop`.
    """

    def __init__(
        self,
        orchestrator: _Orchestrator,
        *,
        token: str,
        api_url: str | None = None,
        gateway_url: str | None = None,
        guild_ids: Iterable[int] = (),
        shard_count: int | None = None,
        shard_ids: Sequence[int] | None = None,
        message_content: bool = False,
        dm_tenant_id: str = DEFAULT_DM_TENANT,
        max_input_chars: int = 4000,
        edit_budget: tuple[int, float] = (5, 5.0),
        request_budget: tuple[int, float] = (50, 1.0),
        interaction_ttl: float = 15 * 60.0,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        if not token:
            raise ConfigurationError("DiscordChannel needs a bot token (DISCORD_BOT_TOKEN).")
        if shard_ids and shard_count is None:
            raise ConfigurationError(
                "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the bot's total shard count)."
            )
        if shard_ids and any(not 0 <= s < (shard_count or 0) for s in shard_ids):
            raise ConfigurationError(f"Shard ids {list(shard_ids)} must be between 0 and {shard_count} - 1.")
        if gateway_url is not None and yarl.URL(gateway_url).scheme not in ("ws", "wss"):
            raise ConfigurationError(
                f"DISCORD_GATEWAY_URL must be a ws:// or wss:// URL, got {gateway_url!r}."
            )
        if api_url is not None and yarl.URL(api_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"DISCORD_API_URL must be an http(s) URL, got {api_url!r}.")
        self.orchestrator = orchestrator
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.gateway_url = gateway_url
        self.guild_ids = [int(g) for g in guild_ids]
        self.dm_tenant_id = dm_tenant_id
        self.max_input_chars = max_input_chars
        self.message_content = message_content
        self.interaction_ttl = interaction_ttl
        self.pacer = EditPacer(per_channel=edit_budget, per_bot=request_budget)
        self.rate_limited = 0
        """429 responses seen (each also counts toward Discord's invalid-request limit)."""
        self._token = token
        self._token_channels: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()
        self._start_error: BaseException | None = None
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_request_end)
        intents = discord.Intents.none()
        intents.guilds = True  # channel and thread cache for replies
        intents.dm_messages = True  # DM conversations
        intents.guild_messages = True  # mentions (their content arrives without the privileged intent)
        intents.message_content = message_content
        options: dict[str, Any] = {
            "intents": intents,
            "http_trace": trace,
            "guild_ready_timeout": guild_ready_timeout,
            "chunk_guilds_at_startup": False,
            "max_messages": None,
            "allowed_mentions": discord.AllowedMentions.none(),
        }
        client: _Client | _ShardedClient
        if shard_count is not None:
            if shard_ids:
                options["shard_ids"] = list(shard_ids)
            client = _ShardedClient(shard_count=shard_count, **options)
        else:
            client = _Client(**options)
        client.flow = self
        self.client = client
        self.tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)
        self._add_commands()

    # -- construction from configuration --------------------------------------------------------------

    @classmethod
    def from_env(
        cls, orchestrator: _Orchestrator, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> DiscordChannel | None:
        """A channel configured from ``DISCORD_*`` variables, or None when ``DISCORD_BOT_TOKEN`` is unset."""
        env = os.environ if env is None else env
        token = env.get("DISCORD_BOT_TOKEN", "").strip()
        if not token:
            return None
        shard_count = env.get("DISCORD_SHARD_COUNT", "").strip()
        return cls(
            orchestrator,
            token=token,
            api_url=env.get("DISCORD_API_URL") or None,
            gateway_url=env.get("DISCORD_GATEWAY_URL") or None,
            guild_ids=_ids(env.get("DISCORD_GUILD_IDS", ""), "DISCORD_GUILD_IDS"),
            shard_count=int(shard_count) if shard_count else None,
            shard_ids=_ids(env.get("DISCORD_SHARD_IDS", ""), "DISCORD_SHARD_IDS") or None,
            message_content=env.get("DISCORD_MESSAGE_CONTENT", "").lower() in ("1", "true", "yes"),
            **kwargs,
        )

    @classmethod
    def from_settings(cls, orchestrator: _Orchestrator, settings: Any, **kwargs: Any) -> DiscordChannel:
        """A channel from ``bot.settings.BotSettings`` (``discord_*`` fields)."""
        token = settings.discord_bot_token
        return cls(
            orchestrator,
            token=token.get_secret_value() if hasattr(token, "get_secret_value") else str(token or ""),
            api_url=settings.discord_api_url,
            gateway_url=settings.discord_gateway_url,
            guild_ids=_ids(settings.discord_guild_ids, "DISCORD_GUILD_IDS"),
            shard_count=settings.discord_shard_count,
            shard_ids=_ids(settings.discord_shard_ids, "DISCORD_SHARD_IDS") or None,
            message_content=bool(getattr(settings, "discord_message_content", False)),
            **kwargs,
        )

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, sync commands, connect, and run until :meth:`stop`; raises on fatal errors (bad token).

        Use :meth:`wait_until_ready` (from another task) to know when the gateway session is ready.
        """
        self._point_discord_py_at_urls()
        self._closing = False
        self._ended.clear()
        self._start_error = None
        try:
            await self.client.login(self._token)
            await self._connect()
        except discord.LoginFailure as exc:
            self._start_error = ConfigurationError("Discord rejected DISCORD_BOT_TOKEN; check the bot token.")
            raise self._start_error from exc
        except discord.PrivilegedIntentsRequired as exc:
            self._start_error = ConfigurationError(
                "Discord refused the message-content intent: enable it for the bot in the developer portal "
                "or unset DISCORD_MESSAGE_CONTENT."
            )
            raise self._start_error from exc
        except Exception as exc:
            self._start_error = exc
            raise
        finally:
            self._ended.set()
            if not self.client.is_closed():
                await self.client.close()

    async def _connect(self) -> None:
        """Run the gateway session until the client closes; a gateway event discord.py cannot parse (a
        field missing from a payload) costs a new session after a pause, not the whole channel."""
        delay = RECONNECT_DELAY
        while True:
            try:
                await self.client.connect(reconnect=True)
                return
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # raised by discord.py's parsers
                if self.client.is_closed():
                    raise
                log.error("A Discord gateway event could not be read (%r); reconnecting in %.0fs", exc, delay)
                if self.client.ws is not None:
                    await self.client.ws.close(code=4000)  # a new session: the event is not replayed
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def wait_until_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the gateway session is ready; re-raises the error if :meth:`start` failed first."""
        waiters = [asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._ended.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._ready.is_set():
            return
        if self._ended.is_set():
            if self._start_error is not None:
                raise self._start_error
            raise ConfigurationError("The Discord channel stopped before it was ready.")
        raise TimeoutError("Discord did not become ready in time.")

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Stop taking new messages and commands at once (they get :data:`RESTARTING`), let in-flight
        answers finish (up to ``timeout`` seconds, then cancel them), and close the gateway and HTTP sessions.
        """
        self._closing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in set(self._tasks):
            task.cancel()
        await self.client.close()

    def _point_discord_py_at_urls(self) -> None:
        """Use ``api_url``/``gateway_url`` through discord.py's class-level defaults (process-wide).

        discord.py builds every REST URL (bot and interaction webhooks) from ``discord.http.Route.BASE`` and
        opens the gateway at ``DiscordWebSocket.DEFAULT_GATEWAY`` (also after an invalid session); resumes go
        to the ``resume_gateway_url`` the gateway sends in READY.
        """
        discord.http.Route.BASE = self.api_url
        if self.gateway_url is not None:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    async def _setup(self) -> None:
        self.client.add_dynamic_items(ChoiceButton, ChoiceSelect)
        if self.guild_ids:
            for guild_id in self.guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            log.info("Synced slash commands to %d server(s).", len(self.guild_ids))
        else:
            await self.tree.sync()
            log.info("Synced slash commands globally (can take a while to appear).")

    def _spawn(self, coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("Handling a Discord message failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- rate-limit observation -----------------------------------------------------------------------

    async def _on_request_end(self, session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        if params.response.status != 429:
            return
        self.rate_limited += 1
        headers = params.response.headers
        try:
            retry_after = float(headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1.0
        observability.platform_rate_limited("discord", retry_after)
        observability.platform_retry("discord")  # discord.py retries every 429 itself
        path = params.url.path
        channel_id: int | None = None
        if headers.get("X-RateLimit-Global", "").lower() != "true":
            hook = _WEBHOOK_PATH.search(path)
            chan = _CHANNEL_PATH.search(path)
            if hook is not None:
                channel_id = self._token_channels.get(hook.group(1))
            elif chan is not None:
                channel_id = int(chan.group(1))
        log.warning("Discord answered 429 (retry after %.2fs); cooling off.", retry_after)
        self.pacer.cool_off(channel_id, retry_after)

    # -- slash commands -------------------------------------------------------------------------------

    def _add_commands(self) -> None:
        contexts = app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=False)
        installs = app_commands.AppInstallationType(guild=True, user=False)

        @app_commands.command(name="ask", description="Ask the assistant something.")
        @app_commands.describe(message="What you want to ask or answer")
        async def ask(interaction: discord.Interaction[Any], message: str) -> None:
            await self._ask(interaction, message)

        @app_commands.command(name="help", description="List what the assistant can do.")
        async def help_(interaction: discord.Interaction[Any]) -> None:
            tenant = self._tenant(interaction.guild_id)
            await interaction.response.send_message(embed=help_embed(self.orchestrator.agent_catalog(tenant)))

        @app_commands.command(name="cancel", description="Cancel what the assistant is doing for you here.")
        async def cancel(interaction: discord.Interaction[Any]) -> None:
            if self._closing:
                await self._reply_ephemeral(interaction, RESTARTING)
                return
            await interaction.response.defer(thinking=True)
            result = await self.orchestrator.cancel(
                tenant_id=self._tenant(interaction.guild_id),
                user_id=str(interaction.user.id),
                conversation_id=str(interaction.channel_id),
            )
            text = (getattr(result, "raw_message", "") or "").strip() or "There was nothing to cancel."
            await interaction.edit_original_response(content=text[:2000])

        commands: list[app_commands.Command[Any, ..., None]] = [ask, help_, cancel]
        for command in commands:
            command.allowed_contexts = contexts
            command.allowed_installs = installs
            self.tree.add_command(command)
        self.tree.error(self._on_command_error)

    async def _on_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, app_commands.TransformerError | app_commands.CommandSignatureMismatch):
            text = BAD_OPTIONS
        elif isinstance(error, app_commands.CommandNotFound):
            text = "I don't know that command. Try `/help`."
        else:
            log.error("Slash command failed", exc_info=error)
            text = APOLOGY
        await self._reply_ephemeral(interaction, text)

    async def _reply_ephemeral(self, interaction: discord.Interaction[Any], text: str) -> None:
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("Could not send the user an ephemeral notice.", exc_info=True)

    async def _ask(self, interaction: discord.Interaction[Any], message: Any) -> None:
        if self._closing:
            await self._reply_ephemeral(interaction, RESTARTING)
            return
        if not isinstance(message, str):  # discord.py passes a mistyped option value through unchanged
            await self._reply_ephemeral(interaction, BAD_OPTIONS)
            return
        text = message.strip()
        if not text:
            await self._reply_ephemeral(
                interaction, "Please include a message: `/ask message: <your question>`."
            )
            return
        if len(text) > self.max_input_chars:
            await self._reply_ephemeral(interaction, too_long(len(text), self.max_input_chars))
            return
        received = asyncio.get_running_loop().time()
        acked = await self._ack(interaction, interaction.response.defer(thinking=True))
        turn = self._turn_for(
            text, interaction.guild_id, interaction.channel_id, interaction.user.id, interaction.id
        )
        await self._run_interaction_turn(interaction, turn, received, acked=acked, deferred=True)

    async def _on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Answer clicks on components no ``DynamicItem`` handles (older versions, tampered custom ids)."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: Mapping[str, Any] = interaction.data or {}
        custom_id = data.get("custom_id")
        if isinstance(custom_id, str) and is_choice(custom_id):
            return  # ChoiceButton / ChoiceSelect acknowledge it
        log.info("Unknown component %r clicked; telling the user it is no longer valid.", custom_id)
        await self._reply_ephemeral(interaction, STALE_COMPONENT)

    async def _on_choice(self, interaction: discord.Interaction[Any], value: str) -> None:
        if self._closing:
            await self._reply_ephemeral(interaction, RESTARTING)
            return
        received = asyncio.get_running_loop().time()
        content = interaction.message.content if interaction.message else ""
        marker = f"\n\n**→ {value}**"
        fields: dict[str, Any] = {"view": None}
        if content and len(content) + len(marker) <= 2000:
            fields["content"] = content + marker
        acked = await self._ack(interaction, interaction.response.edit_message(**fields))
        # A question is answered once: a second click on it (a double click before the buttons went away,
        # another device) is a duplicate of the first, not the user's next message.
        question = interaction.message
        delivery = f"choice:{question.id}:{interaction.user.id}" if question else interaction.id
        turn = self._turn_for(
            value, interaction.guild_id, interaction.channel_id, interaction.user.id, delivery
        )
        await self._run_interaction_turn(interaction, turn, received, acked=acked, deferred=False)

    async def _ack(self, interaction: discord.Interaction[Any], call: Any) -> bool | None:
        """Acknowledge; True done, False already acknowledged (redelivery), None too late or unknown."""
        try:
            await call
            return True
        except discord.HTTPException as exc:
            if exc.code == _ALREADY_ACKED:
                return False
            if exc.code == _UNKNOWN_INTERACTION:
                log.warning("Interaction %s expired before it was acknowledged.", interaction.id)
                return None
            raise

    async def _run_interaction_turn(
        self,
        interaction: discord.Interaction[Any],
        turn: _Turn,
        received: float,
        *,
        acked: bool | None,
        deferred: bool,
    ) -> None:
        """Stream a turn into the interaction's messages.

        ``acked``: True when this delivery acknowledged the interaction, False when an earlier delivery of it
        did (the response is still this turn's if the orchestrator says it was never answered), None when
        it is too late to respond (the answer goes to the channel).
        """
        usable = acked is not None
        fallback = self._channel_target(interaction.channel, interaction.channel_id, None)
        target: Target
        if usable:
            self._token_channels[interaction.token] = interaction.channel_id or 0
            target = InteractionTarget(
                interaction,
                deferred=deferred,
                deadline=received + self.interaction_ttl - min(60.0, self.interaction_ttl / 10),
            )
        else:
            target = fallback
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # stop() lets in-flight answers finish
        try:
            duplicate = await self._stream(turn, target, fallback if usable else None, typing=None)
        finally:
            self._token_channels.pop(interaction.token, None)
            if task is not None:
                self._tasks.discard(task)
        if duplicate and deferred and acked is True:
            try:  # our defer succeeded for a delivery already answered: remove the "thinking" placeholder
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass

    # -- messages (DMs and mentions) ------------------------------------------------------------------

    async def _on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None:
            return
        me = self.client.user
        if me is None:
            return
        if message.guild is None:
            text = strip_mentions(message.content, me.id)  # "@bot 4" in a DM is "4"
            reference = None
        elif me in message.mentions:
            text = strip_mentions(message.content, me.id)
            reference = message
        elif self.message_content and _replies_to(message, me.id):
            text = message.content.strip()  # a reply to one of our messages without a ping
            reference = message
        else:
            return
        if self._closing:
            target = self._channel_target(message.channel, message.channel.id, reference)
            try:
                await target.create(True, content=RESTARTING)
            except Exception as exc:
                log.info("Could not tell a user the bot is restarting (%r).", exc)
            return
        self._spawn(self._message_turn(message, text, reference))

    async def _message_turn(
        self, message: discord.Message, text: str, reference: discord.Message | None
    ) -> None:
        target = self._channel_target(message.channel, message.channel.id, reference)
        if not text:
            tenant = self._tenant(message.guild.id if message.guild else None)
            embed = help_embed(self.orchestrator.agent_catalog(tenant))
            await target.create(
                True, content="Ask me something in a message (or use `/ask`).", embeds=[embed]
            )
            return
        if len(text) > self.max_input_chars:
            await target.create(True, content=too_long(len(text), self.max_input_chars))
            return
        turn = self._turn_for(
            text,
            message.guild.id if message.guild else None,
            message.channel.id,
            message.author.id,
            message.id,
        )
        await self._stream(turn, target, None, typing=message.channel)

    # -- the turn -------------------------------------------------------------------------------------

    def _tenant(self, guild_id: int | None) -> str:
        return str(guild_id) if guild_id is not None else self.dm_tenant_id

    def _turn_for(
        self, text: str, guild_id: int | None, channel_id: int | None, user_id: int, delivery: int | str
    ) -> _Turn:
        metadata = {
            "platform": "discord",
            "guild_id": guild_id,
            "channel_id": channel_id,
            "user_id": user_id,
            # DMs share one tenant but no team: per-tenant budgets (the rate limit) must not join them.
            "shared_tenant": guild_id is not None,
        }
        return _Turn(
            text=text,
            tenant_id=self._tenant(guild_id),
            conversation_id=str(channel_id),
            user_id=str(user_id),
            delivery_id=f"discord:{delivery}",
            metadata=metadata,
        )

    def _channel_target(
        self, channel: Any, channel_id: int | None, reference: discord.Message | None
    ) -> ChannelTarget:
        if channel is None or not hasattr(channel, "send"):
            channel = self.client.get_partial_messageable(channel_id or 0)
        return ChannelTarget(channel, channel_id or 0, reference)

    async def _stream(
        self, turn: _Turn, target: Target, fallback: Target | None, *, typing: discord.abc.Messageable | None
    ) -> bool:
        """Run one turn and stream its events into ``target``; True when it was a redelivered duplicate."""
        renderer = StreamRenderer(target, self.pacer, fallback)
        typing_cm: Any = None
        result: Any = None
        choices: list[str] | None = None
        error_text: str | None = None
        try:
            async for event in self.orchestrator.process_stream(
                turn.text,
                tenant_id=turn.tenant_id,
                user_id=turn.user_id,
                conversation_id=turn.conversation_id,
                metadata=turn.metadata,
                delivery_id=turn.delivery_id,
            ):
                kind = getattr(event, "type", None)
                if kind == "duplicate":
                    log.info("Ignoring redelivered Discord event %s.", turn.delivery_id)
                    return True
                if typing is not None:
                    typing_cm = await _start_typing(typing)
                    typing = None  # one attempt per turn
                if kind == "message_chunk":
                    renderer.append(event.content)
                elif kind == "input_required":
                    choices = event.choices
                elif kind == "error":
                    error_text = event.message
                elif kind == "result":
                    result = event.result
        except Exception:
            log.exception("Turn %s failed", turn.delivery_id)
            result = None
            error_text = error_text or APOLOGY
            if renderer.text:
                renderer.append("\n\n" + APOLOGY)
                error_text = None
        finally:
            if typing_cm is not None:
                await typing_cm.__aexit__(None, None, None)
        await self._finish(turn, renderer, result, choices, error_text)
        return False

    async def _finish(
        self,
        turn: _Turn,
        renderer: StreamRenderer,
        result: Any,
        choices: list[str] | None,
        error_text: str | None,
    ) -> None:
        embeds: list[discord.Embed] = []
        view: discord.ui.View | None = None
        status = str(getattr(getattr(result, "status", None), "value", getattr(result, "status", "")))
        if result is not None and getattr(result, "no_match", False):
            if not renderer.text.strip():
                renderer.append(NO_MATCH_INTRO)
            embeds.append(help_embed(self.orchestrator.agent_catalog(turn.tenant_id)))
        if not renderer.text.strip():
            if error_text or status in _FAILED or result is None:
                renderer.append(error_text or APOLOGY)
            elif result is not None and not getattr(result, "processed", True):
                if not isinstance(renderer.target, InteractionTarget):
                    return  # should_process declined and said nothing: stay silent
                renderer.append(DECLINED)  # a deferred "thinking..." response must still be resolved
            elif not embeds:
                renderer.append("Done.")
        if result is not None and status == "waiting_for_input":
            view = choices_view(int(turn.user_id), getattr(result, "choices", None) or choices)
        try:
            await renderer.finish(view=view, embeds=embeds or None)
        except Exception:
            log.exception("Could not deliver the answer for %s", turn.delivery_id)


async def _start_typing(channel: discord.abc.Messageable) -> Any:
    """``channel``'s typing indicator, entered; None when Discord refused it (it is only cosmetic)."""
    typing_cm = channel.typing()
    try:
        await typing_cm.__aenter__()
    except Exception as exc:
        log.warning("Could not show the typing indicator (%r); answering without it.", exc)
        return None
    return typing_cm


def _replies_to(message: discord.Message, user_id: int) -> bool:
    """True when ``message`` replies to a message of ``user_id``."""
    resolved = message.reference.resolved if message.reference is not None else None
    return isinstance(resolved, discord.Message) and resolved.author.id == user_id


def _ids(raw: str | Sequence[int] | None, name: str) -> list[int]:
    """Comma-separated ids from configuration."""
    if raw is None:
        return []
    if not isinstance(raw, str):
        return [int(x) for x in raw]
    try:
        return [int(part) for part in raw.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigurationError(f"{name} must be comma-separated numbers, got {raw!r}.") from None
