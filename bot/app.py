"""Builds the orchestrator, the channels and the web server from settings, runs them, and shuts down
gracefully: on SIGTERM/SIGINT stop taking events, let running turns finish within
FLOWAGENTS_SHUTDOWN_GRACE seconds, stop the web server, close the stores and exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import inspect
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from bot.http import HttpServer, make_app
from bot.metrics import BotMetrics, metrics_available
from bot.orchestrator import BotOrchestrator, guards_from_settings
from bot.settings import BotSettings, redact_url
from flowagents import (
    AgentDefinitionError,
    ConfigurationError,
    OpenAIClient,
    Router,
    StandardAgent,
    StoreError,
    registered_agents,
)
from flowagents.observability import add_observer
from flowagents.routing.factory import make_router

log = logging.getLogger("bot")

Mode = Literal["auto", "console", "playground"]


class StartupError(Exception):
    """The bot cannot start; the message is the one line printed (it names the setting to fix)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Channel(Protocol):
    """A platform connection: starts taking events, stops gracefully.

    `stop()` refuses new events before its first `await`, then waits for its running turns up to the
    grace period it is given and cancels the rest.
    """

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def import_agents(settings: BotSettings) -> list[type[StandardAgent]]:
    """Import the agent modules named by FLOWAGENTS_AGENTS and return their agents.

    An agent belongs to a module when it is defined in it (or in a submodule of a package) or the module
    exposes it by name, so other @flowagent classes that happen to be imported do not join the bot.
    """
    modules = []
    for name in settings.agent_modules:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigurationError(
                f"FLOWAGENTS_AGENTS: cannot import agent module {name!r} ({exc}); "
                "give comma-separated importable module paths, e.g. 'agents,myteam.agents'."
            ) from None
        except AgentDefinitionError as exc:  # says which class and what to write instead
            raise ConfigurationError(
                f"FLOWAGENTS_AGENTS: {name!r} declares an agent wrongly: {exc}"
            ) from None
    registered = registered_agents()
    chosen: list[type[StandardAgent]] = []
    for cls in registered:
        for module in modules:
            defined_here = cls.__module__ == module.__name__ or cls.__module__.startswith(
                module.__name__ + "."
            )
            if defined_here or any(value is cls for value in vars(module).values()):
                chosen.append(cls)
                break
    if not chosen:
        raise ConfigurationError(
            f"FLOWAGENTS_AGENTS: no @flowagent classes in {settings.flowagents_agents!r}; decorate "
            "StandardAgent subclasses with @flowagent(...) in those modules."
        )
    return chosen


def build_llm(settings: BotSettings) -> OpenAIClient | None:
    """The LLM client when a key or a base URL is set (local OpenAI-compatible servers often need no key)."""
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return None
    return OpenAIClient(
        api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key is not None else None,
        model=settings.openai_model,
        base_url=settings.openai_base_url,
    )


def store_label(settings: BotSettings) -> str:
    """The store URL for messages, without its password."""
    return (
        redact_url(settings.flowagents_store)
        if settings.flowagents_store
        else (f"sqlite:///{Path(settings.flowagents_data_dir) / 'flowagents.sqlite3'}")
    )


def build_store(settings: BotSettings) -> tuple[Any, Any]:
    """The conversation store and isolation named by FLOWAGENTS_STORE (nothing connects yet)."""
    from flowagents.storage.url import store_from_url

    return store_from_url(
        settings.flowagents_store or None,
        data_dir=settings.flowagents_data_dir,
        idle_ttl_seconds=settings.flowagents_idle_ttl,
    )


def build_orchestrator(settings: BotSettings) -> BotOrchestrator:
    """The bot's orchestrator for these settings (not initialised)."""
    agents = import_agents(settings)
    store, isolation = build_store(settings)
    llm = build_llm(settings)
    routing: str | Router = settings.flowagents_routing
    if settings.flowagents_embedding_cache is not None and routing in ("semantic", "hybrid"):
        routing = make_router(routing, llm_client=llm, cache_dir=settings.flowagents_embedding_cache)
    return BotOrchestrator(
        llm_client=llm,
        agents=agents,
        routing_strategy=routing,
        store=store,
        isolation=isolation,
        default_timeout=settings.flowagents_timeout,
        guards=guards_from_settings(settings),
    )


class _Quiet(logging.Filter):
    """Drops the store's own warning while the bot opens it: the failure becomes the one StartupError line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING


async def open_orchestrator(orchestrator: BotOrchestrator, settings: BotSettings) -> None:
    """Initialise it; an unreachable store becomes one clear `StartupError` line."""
    store_log = logging.getLogger("flowagents.storage")
    quiet = _Quiet()
    store_log.addFilter(quiet)
    try:
        await orchestrator.initialize()
    except ConfigurationError:
        raise
    except (StoreError, OSError) as exc:
        variable = "FLOWAGENTS_STORE" if settings.flowagents_store else "FLOWAGENTS_DATA_DIR"
        raise StartupError(f"{variable}: cannot open {store_label(settings)}: {exc}", exit_code=1) from None
    finally:
        store_log.removeFilter(quiet)


def _slack_channel(settings: BotSettings, orchestrator: BotOrchestrator) -> Channel:
    """The Slack channel; it encrypts OAuth installation tokens with FLOWAGENTS_SECRET_KEY itself."""
    from adapters.slack import SlackChannel

    channel: Channel = SlackChannel.from_settings(orchestrator, settings)
    return channel


def _discord_channel(settings: BotSettings, orchestrator: BotOrchestrator) -> Channel:
    from adapters.discord import DiscordChannel

    channel: Channel = DiscordChannel.from_settings(orchestrator, settings)
    return channel


async def _stop_channel(channel: Channel, grace: float) -> None:
    """`channel.stop()`, passing the grace period under the name the channel uses for it."""
    stop: Any = channel.stop
    params = inspect.signature(stop).parameters
    if "grace" in params:
        await stop(grace=grace)
    elif "timeout" in params:
        await stop(timeout=grace)
    else:
        await stop()


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


class BotRuntime:
    """The running bot: orchestrator, channels, web server, metrics; started and stopped as one."""

    def __init__(
        self,
        settings: BotSettings,
        *,
        mode: Mode = "auto",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.mode = mode
        self.stdin = stdin
        self.stdout = stdout
        self.orchestrator: BotOrchestrator | None = None
        self.channels: list[Channel] = []
        self.http: HttpServer | None = None
        self.metrics: BotMetrics | None = None
        self.stopping = asyncio.Event()
        self.stop_reason = ""
        self._tasks: dict[asyncio.Task[None], Channel] = {}
        self._ends_bot: set[int] = set()
        self._remove_observer: Callable[[], None] | None = None
        self._failed: BaseException | None = None
        self._started = False

    # ------------------------------------------------------------------ start

    @property
    def serves_http(self) -> bool:
        """True when the web server runs: with a platform, in the playground, or with FLOWAGENTS_HTTP=1."""
        if self.mode == "playground":
            return True
        return self.settings.flowagents_http or (self.mode == "auto" and self.settings.platform_enabled)

    def health(self) -> dict[str, object]:
        """What `GET /healthz` answers."""
        status = "stopping" if self.stopping.is_set() else "ok"
        running = self.orchestrator.running_turns if self.orchestrator is not None else 0
        return {
            "status": status,
            "channels": [type(c).__name__ for c in self.channels],
            "running_turns": running,
        }

    async def start(self) -> None:
        """Build and start everything; raises `StartupError` with one clear line when it cannot."""
        orchestrator = self.orchestrator = build_orchestrator(self.settings)
        await open_orchestrator(orchestrator, self.settings)
        if metrics_available():
            self.metrics = BotMetrics(orchestrator)
            self._remove_observer = add_observer(self.metrics)
        self.channels = self._build_channels(orchestrator)
        if self.serves_http:
            app = make_app(self.metrics, self.health)
            for channel in self.channels:
                attach = getattr(channel, "attach", None)
                if attach is not None:
                    attach(app)
            host = "127.0.0.1" if self.mode == "playground" else self.settings.flowagents_host
            self.http = HttpServer(
                app, host, self.settings.port, grace=self.settings.flowagents_shutdown_grace
            )
            try:
                await self.http.start()
            except OSError as exc:
                self.http = None
                where = f"cannot listen on {host}:{self.settings.port} ({exc.strerror or exc})"
                if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                    fix = f"FLOWAGENTS_HOST: {where}; use an address of this machine (0.0.0.0 for all)"
                else:
                    fix = f"PORT: {where}; set PORT to a free port (0 picks one)"
                raise StartupError(fix, exit_code=1) from None
        for channel in self.channels:
            task = asyncio.create_task(channel.start(), name=f"channel-{type(channel).__name__}")
            self._tasks[task] = channel
            task.add_done_callback(self._channel_done)
        self._started = True
        if self.mode == "playground" and self.http is not None:
            print(f"playground: {self.http.url}/", file=self.stdout, flush=True)

    def _build_channels(self, orchestrator: BotOrchestrator) -> list[Channel]:
        if self.mode == "playground":
            from bot.playground import Playground

            return [Playground(orchestrator)]
        channels: list[Channel] = []
        if self.mode == "auto" and self.settings.slack_enabled:
            channels.append(_slack_channel(self.settings, orchestrator))
        if self.mode == "auto" and self.settings.discord_enabled:
            channels.append(_discord_channel(self.settings, orchestrator))
        if not channels:
            from adapters.console import ConsoleChannel

            console = ConsoleChannel(orchestrator, stdin=self.stdin, stdout=self.stdout)
            self._ends_bot.add(id(console))
            channels.append(console)
        return channels

    def _channel_done(self, task: asyncio.Task[None]) -> None:
        channel = self._tasks.get(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("channel %s failed: %s: %s", type(channel).__name__, type(exc).__name__, exc)
            self._failed = exc
            self.request_stop(f"{type(channel).__name__} failed")
        elif id(channel) in self._ends_bot:
            self.request_stop("end of input")

    # ------------------------------------------------------------------ run and stop

    def request_stop(self, reason: str = "signal") -> None:
        """Begin shutting down (safe to call more than once, from a signal handler)."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()

    async def wait(self) -> None:
        """Until a stop is requested (signal, end of console input, a channel failing)."""
        await self.stopping.wait()

    async def shutdown(self) -> int:
        """Stop taking events, let running turns finish within the grace period, close everything.

        One deadline covers it all: every channel stops taking events at once, then channels, turns and
        open requests share the same `FLOWAGENTS_SHUTDOWN_GRACE` seconds; whatever still runs is cancelled.
        """
        self.request_stop("shutdown")
        grace = self.settings.flowagents_shutdown_grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace

        def left() -> float:
            return max(0.0, deadline - loop.time())

        if self._started:
            log.info("shutting down (%s); waiting up to %ss for running turns", self.stop_reason, grace)
        # concurrently: each channel refuses new events before its first await, so none takes events
        # while another one waits for its running turns
        stops = await asyncio.gather(
            *(_stop_channel(channel, grace) for channel in self.channels), return_exceptions=True
        )
        for channel, outcome in zip(self.channels, stops, strict=True):
            if isinstance(outcome, Exception):
                log.warning("stopping %s failed: %s", type(channel).__name__, type(outcome).__name__)
        if self.orchestrator is not None and not await self.orchestrator.drain(left()):
            log.warning("running turns did not finish within %ss; stopping them", grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.stop(timeout=left())
        if self.orchestrator is not None:
            try:
                await self.orchestrator.close()
            except Exception as exc:
                log.warning("closing the orchestrator failed: %s", type(exc).__name__)
        if self._remove_observer is not None:
            self._remove_observer()
        if self._started:
            log.info("stopped")
        return 1 if self._failed is not None else 0


async def run(
    settings: BotSettings, *, mode: Mode = "auto", stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    """Run the bot until SIGTERM/SIGINT (or the console's end of input); return the exit code."""
    runtime = BotRuntime(settings, mode=mode, stdin=stdin, stdout=stdout)
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, runtime.request_stop, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        try:
            await runtime.start()
        except BaseException:
            await runtime.shutdown()
            raise
        await runtime.wait()
        return await runtime.shutdown()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
