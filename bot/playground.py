"""`python -m bot --playground`: a local web page to chat with the bot's agents as any tenant and user.

Routes (added to the bot's aiohttp app, which binds 127.0.0.1 in this mode):

- `GET /` the page (bot/static/playground.html: one file, inline JS and CSS, no external assets);
- `POST /api/say` `{"tenant_id", "user_id", "conversation_id", "text"}` answers with the turn's stream
  events as NDJSON (one JSON object per line, flushed as they happen), then one `{"type": "active", ...}`
  line with the conversation's active agents;
- `GET /api/agents?tenant_id=` the agent catalog; `GET /api/active?tenant_id=&user_id=&conversation_id=`
  the active agents of that conversation (of the whole tenant without `user_id`).

Every route answers only requests addressed to 127.0.0.1, localhost or [::1] (see `_local_only`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from flowagents import Orchestrator

log = logging.getLogger("bot.playground")

PAGE = Path(__file__).with_name("static") / "playground.html"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Host names the playground answers to; any other (a DNS-rebound web site) is refused."""


class SayRequest(BaseModel):
    """One message typed into the playground."""

    tenant_id: str = Field("playground", min_length=1, max_length=200)
    user_id: str = Field("dev", min_length=1, max_length=200)
    conversation_id: str | None = Field(None, max_length=200)
    text: str = Field(min_length=1, max_length=100_000)


class Playground:
    """The playground channel: serves the page and streams turns to it."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self._closing = False
        self._inflight: set[asyncio.Task[Any]] = set()

    def attach(self, app: web.Application) -> None:
        """Add the page and its API to the bot's aiohttp app."""
        app.router.add_get("/", _local_only(self._page))
        app.router.add_post("/api/say", _local_only(self._say))
        app.router.add_get("/api/agents", _local_only(self._agents))
        app.router.add_get("/api/active", _local_only(self._active))

    async def start(self) -> None:
        """Take messages (the web server is the bot's)."""
        self._closing = False

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - the channel stop protocol
        """Refuse new messages and wait up to `timeout` seconds for running turns, then cancel them."""
        self._closing = True
        running = [t for t in self._inflight if not t.done()]
        if running:
            _, pending = await asyncio.wait(running, timeout=timeout)
            for task in pending:
                task.cancel()

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=PAGE.read_text(encoding="utf-8"),
            content_type="text/html",
            headers={
                "Content-Security-Policy": "default-src 'self' 'unsafe-inline'",
                "Cache-Control": "no-store",
            },
        )

    def _active_json(
        self, tenant_id: str, user_id: str | None, conversation_id: str | None
    ) -> list[dict[str, Any]]:
        """The active agents of one conversation (of every conversation of the tenant without a user)."""
        agents = self.orchestrator.get_active_agents(tenant_id)
        if user_id:
            conversation = conversation_id or user_id
            agents = [a for a in agents if a.user_id == user_id and a.conversation_id == conversation]
        return [a.model_dump(mode="json") for a in agents]

    async def _agents(self, request: web.Request) -> web.Response:
        tenant = request.query.get("tenant_id", "playground")
        return web.json_response([a.model_dump(mode="json") for a in self.orchestrator.agent_catalog(tenant)])

    async def _active(self, request: web.Request) -> web.Response:
        query = request.query
        active = self._active_json(
            query.get("tenant_id", "playground"), query.get("user_id"), query.get("conversation_id") or None
        )
        return web.json_response(active)

    async def _say(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            return web.json_response({"error": "the bot is shutting down"}, status=503)
        if request.content_type != "application/json":  # also keeps other web pages from posting here
            return web.json_response({"error": "send application/json"}, status=415)
        try:
            say = SayRequest.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return web.json_response({"error": f"bad request: {type(exc).__name__}"}, status=400)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async for event in self.orchestrator.process_stream(
                say.text,
                tenant_id=say.tenant_id,
                user_id=say.user_id,
                conversation_id=say.conversation_id or None,
                metadata={"platform": "playground"},
            ):
                await response.write(event.model_dump_json().encode() + b"\n")
            agents = self._active_json(say.tenant_id, say.user_id, say.conversation_id or None)
            active = {"type": "active", "agents": agents}
            await response.write(json.dumps(active).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            log.info("playground client went away")
            raise
        finally:
            if task is not None:
                self._inflight.discard(task)
        await response.write_eof()
        return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _local_only(handler: Handler) -> Handler:
    """``handler`` for requests addressed to this machine by name (the Host header), else 403.

    The server binds 127.0.0.1, but a web site can point its own name at 127.0.0.1 (DNS rebinding) and
    then call the playground from a developer's browser as if it were same-origin.
    """

    async def checked(request: web.Request) -> web.StreamResponse:
        try:
            name = request.url.host
        except ValueError:  # a Host header that is no host name
            name = None
        if name not in LOCAL_HOSTS:
            log.warning("playground request for another host refused (open it as 127.0.0.1 or localhost)")
            return web.json_response(
                {"error": "open the playground at http://127.0.0.1:<port>/ or http://localhost:<port>/"},
                status=403,
            )
        return await handler(request)

    return checked
