"""Builds the orchestrator and the channels from settings, and runs them until stopped."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from typing import Any, Protocol

from flowagents import ConfigurationError, OpenAIClient, Orchestrator

from bot.settings import BotSettings

log = logging.getLogger("bot")


class Channel(Protocol):
    """A platform connection: starts taking events, stops gracefully."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def import_agents(settings: BotSettings) -> None:
    """Import the agent modules named by FLOWAGENTS_AGENTS (importing registers them)."""
    for module in settings.agent_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(
                f"FLOWAGENTS_AGENTS: cannot import agent module {module!r} ({exc}); "
                "give comma-separated importable module paths, e.g. 'agents,myteam.agents'."
            ) from None


def build_llm(settings: BotSettings) -> OpenAIClient | None:
    """The LLM client when a key is set."""
    if settings.openai_api_key is None:
        if settings.flowagents_routing in ("llm", "hybrid"):
            raise ConfigurationError(
                f"FLOWAGENTS_ROUTING={settings.flowagents_routing} needs OPENAI_API_KEY; set it or use "
                "FLOWAGENTS_ROUTING=trigger."
            )
        return None
    return OpenAIClient(
        api_key=settings.openai_api_key.get_secret_value(),
        model=settings.openai_model,
        base_url=settings.openai_base_url,
    )


def build_store(settings: BotSettings) -> tuple[Any, Any]:
    """The conversation store and isolation named by FLOWAGENTS_STORE."""
    url = settings.flowagents_store
    if url == "memory":
        return None, None
    try:
        from flowagents.storage.url import store_from_url
    except ImportError:
        log.warning("durable stores are not available; using memory")
        return None, None
    return store_from_url(url, idle_ttl_seconds=settings.flowagents_idle_ttl)  # type: ignore[call-arg]


async def build_orchestrator(settings: BotSettings) -> Orchestrator:
    """An initialised orchestrator for these settings."""
    import_agents(settings)
    store, isolation = build_store(settings)
    orchestrator = Orchestrator(
        llm_client=build_llm(settings),
        routing_strategy=settings.flowagents_routing,
        store=store,
        isolation=isolation,
        default_timeout=settings.flowagents_timeout,
    )
    await orchestrator.initialize()
    return orchestrator


def build_channels(settings: BotSettings, orchestrator: Orchestrator, *, console: bool) -> list[Channel]:
    """The channels to run: Slack and/or Discord when configured, else the console."""
    channels: list[Channel] = []
    if not console and settings.slack_enabled:
        from adapters.slack import SlackChannel

        channels.append(SlackChannel.from_settings(orchestrator, settings))  # type: ignore[attr-defined]
    if not console and settings.discord_enabled:
        from adapters.discord import DiscordChannel

        channels.append(DiscordChannel.from_settings(orchestrator, settings))  # type: ignore[attr-defined]
    if not channels:
        from adapters.console import ConsoleChannel

        channels.append(ConsoleChannel(orchestrator))
    return channels


async def run(settings: BotSettings, *, console: bool = False) -> int:
    """Run the bot until its channels end or SIGTERM/SIGINT arrives; return the exit code."""
    orchestrator = await build_orchestrator(settings)
    channels = build_channels(settings, orchestrator, console=console)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
        except (NotImplementedError, RuntimeError):
            pass
    tasks = [asyncio.create_task(channel.start()) for channel in channels]
    stopper = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for channel in channels:
            await channel.stop()
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        await orchestrator.close()
    return 0
