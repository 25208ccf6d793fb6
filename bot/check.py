"""`python -m bot --check`: validate the configuration and the connections it can reach, then exit.

Prints one line per service, `ok` or `FAILED`, and returns 0 when every line is ok, else 1. Secrets never
appear (URLs are shown without passwords; errors are reduced to their class and platform error code).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.app import build_store, import_agents, store_label
from bot.settings import BotSettings
from flowagents import ConfigurationError
from flowagents.agent import spec_of

CHECK_TIMEOUT = 10.0
DISCORD_API = "https://discord.com/api/v10"


class CheckFailed(Exception):
    """A check failed; the message says why (no secrets)."""


async def _agents(settings: BotSettings) -> str:
    try:
        agents = import_agents(settings)
    except ConfigurationError as exc:
        raise CheckFailed(str(exc).removeprefix("FLOWAGENTS_AGENTS: ")) from None
    has_llm = settings.openai_api_key is not None or settings.openai_base_url is not None
    usable = [cls for cls in agents if has_llm or not spec_of(cls).requires_llm]
    left_out = sorted(cls.__name__ for cls in agents if cls not in usable)
    names = ", ".join(sorted(cls.__name__ for cls in usable))
    return names + (f" (left out without an LLM: {', '.join(left_out)})" if left_out else "")


async def _store(settings: BotSettings) -> str:
    try:
        store, isolation = build_store(settings)
    except ConfigurationError as exc:
        raise CheckFailed(str(exc)) from None
    try:
        await store.open()
    except Exception as exc:
        raise CheckFailed(f"cannot open {store_label(settings)}: {exc}") from None
    finally:
        await store.close()
        await isolation.close()
    return f"{store_label(settings)} reachable"


async def _slack(settings: BotSettings) -> str:
    if settings.slack_bot_token is None:
        return "OAuth install flow configured (workspaces are checked when they install)"
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    base_url = settings.slack_api_url.rstrip("/") + "/" if settings.slack_api_url else AsyncWebClient.BASE_URL
    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base_url)
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        raise CheckFailed(f"auth.test refused the bot token ({exc.response.get('error', 'error')})") from None
    except Exception as exc:
        raise CheckFailed(f"cannot reach the Slack API ({type(exc).__name__})") from None
    mode = "Socket Mode" if settings.slack_app_token is not None else "HTTP events"
    team = f"{response.get('team')} ({response.get('team_id')})"
    return f"workspace {team}, bot user {response.get('user_id')}, {mode}"


async def _discord(settings: BotSettings) -> str:
    import aiohttp

    assert settings.discord_bot_token is not None
    base = (settings.discord_api_url or DISCORD_API).rstrip("/")
    headers = {
        "Authorization": f"Bot {settings.discord_bot_token.get_secret_value()}",
        "User-Agent": "DiscordBot (https://github.com/flowagents/flowagents, 0.1)",
    }
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/users/@me", headers=headers) as resp,
        ):
            if resp.status == 401:
                raise CheckFailed("the API refused the bot token (401)")
            if resp.status >= 400:
                raise CheckFailed(f"GET /users/@me answered HTTP {resp.status}")
            me = await resp.json()
    except aiohttp.ClientError as exc:
        raise CheckFailed(f"cannot reach the Discord API ({type(exc).__name__})") from None
    return f"bot user {me.get('username')} ({me.get('id')})"


async def _openai(settings: BotSettings) -> str:
    import openai

    assert settings.openai_api_key is not None
    client = openai.AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=CHECK_TIMEOUT,
    )
    try:
        models = [model.id async for model in client.models.list()]
    except openai.AuthenticationError:
        raise CheckFailed("the API refused the key (401)") from None
    except openai.APIError as exc:
        raise CheckFailed(f"API error ({type(exc).__name__})") from None
    finally:
        await client.close()
    if settings.openai_model in models:
        return f"key accepted, model {settings.openai_model} listed"
    model = settings.openai_model
    return f"key accepted ({len(models)} models listed; {model} not among them, it may still work)"


async def _port(settings: BotSettings) -> str:
    if settings.port == 0:
        return "PORT=0 picks a free port at start"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.flowagents_host, settings.port))
        except OSError as exc:
            raise CheckFailed(
                f"cannot listen on {settings.flowagents_host}:{settings.port} ({exc.strerror})"
            ) from None
    return f"{settings.flowagents_host}:{settings.port} is free"


async def check(settings: BotSettings, out: TextIO) -> int:
    """Run every applicable check, print one line each; 0 when all pass."""
    checks: list[tuple[str, Callable[[BotSettings], Awaitable[str]]]] = [
        ("agents", _agents),
        ("store", _store),
    ]
    if settings.slack_enabled:
        checks.append(("slack", _slack))
    if settings.discord_enabled:
        checks.append(("discord", _discord))
    if settings.openai_api_key is not None:
        checks.append(("openai", _openai))
    if settings.platform_enabled or settings.flowagents_http:
        checks.append(("http", _port))
    print("ok      settings: valid", file=out, flush=True)
    failed = 0
    for name, run in checks:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                detail = await run(settings)
        except CheckFailed as exc:
            failed += 1
            print(f"FAILED  {name}: {exc}", file=out, flush=True)
        except TimeoutError:
            failed += 1
            print(f"FAILED  {name}: no answer within {CHECK_TIMEOUT:g}s", file=out, flush=True)
        else:
            print(f"ok      {name}: {detail}", file=out, flush=True)
    return 1 if failed else 0
