"""Slack channel: Slack events in, orchestrator ``process_stream`` turns, streamed answers out.

Built on slack-bolt's ``AsyncApp``: Socket Mode (``AsyncSocketModeHandler``) when an app token is
given, signed HTTP events on the bot's aiohttp app otherwise, and bolt's OAuth install flow with a
SQLite installation store for serving many workspaces. See docs/slack.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.sqlite3 import SQLite3OAuthStateStore
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from adapters._slack_format import (
    CHOICE_ACTION_PREFIX,
    AgentInfoLike,
    asked_user,
    choice_blocks,
    help_blocks,
    help_text,
)
from adapters._slack_installs import installation_store as sqlite_installation_store
from adapters._slack_pacing import BudgetRegistry, RateLimit
from adapters._slack_reply import ReplyWriter, web_api_retry_handlers
from flowagents import observability
from flowagents.errors import ConfigurationError

__all__ = ["DEFAULT_API_URL", "DEFAULT_SCOPES", "SlackChannel", "SlackEvent"]

log = logging.getLogger("adapters.slack")

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_SCOPES = ("app_mentions:read", "chat:write", "im:history", "channels:history", "groups:history")
APOLOGY = "Sorry, something went wrong while answering. Please try again in a moment."
_USER_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
"""Message subtypes a person writes like any other: a thread reply also sent to the channel, a file."""


class _Orchestrator(Protocol):
    """The part of `flowagents.Orchestrator` the channel uses (docs/core-api.md)."""

    def process_stream(
        self,
        message: str,
        tenant_id: str = ...,
        user_id: str | None = ...,
        conversation_id: str | None = ...,
        metadata: dict[str, Any] | None = ...,
        delivery_id: str | None = ...,
    ) -> AsyncIterator[Any]: ...

    def agent_catalog(self, tenant_id: str) -> Sequence[AgentInfoLike]: ...

    def get_active_agents(self, tenant_id: str) -> Sequence[Any]: ...


class SlackEvent(BaseModel):
    """The fields of a Slack ``message`` / ``app_mention`` event the channel reads."""

    model_config = ConfigDict(extra="allow")

    type: str
    channel: str
    ts: str
    text: str = ""
    user: str | None = None
    thread_ts: str | None = None
    channel_type: str | None = None
    subtype: str | None = None
    bot_id: str | None = None
    team: str | None = None


class _Route(BaseModel):
    """Where a turn comes from and where its answer goes."""

    tenant_id: str
    team_id: str
    enterprise_id: str | None
    user_id: str
    channel: str
    conversation_id: str
    reply_thread_ts: str | None
    text: str
    delivery_id: str | None


class SlackChannel:
    """Connects a flowagents orchestrator to Slack.

    Socket Mode when ``app_token`` is given (``start()`` connects); HTTP mode otherwise (``attach()``
    adds ``POST /slack/events`` to the bot's aiohttp app). ``bot_token`` serves one workspace;
    ``client_id`` + ``client_secret`` enable the OAuth install flow (``/slack/install``,
    ``/slack/oauth_redirect``) with installations kept in ``installation_db_path`` (SQLite; tokens
    Fernet-encrypted with ``secret_key``), or in any slack_sdk ``installation_store`` given.
    ``start()`` serves until ``stop()``; ``connect()`` only connects. See docs/slack.md.
    """

    def __init__(
        self,
        orchestrator: _Orchestrator,
        *,
        bot_token: str | None = None,
        app_token: str | None = None,
        signing_secret: str | None = None,
        api_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        installation_db_path: str | os.PathLike[str] | None = None,
        secret_key: str | None = None,
        installation_store: AsyncInstallationStore | None = None,
        respond_to_bots: bool = False,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        redirect_uri: str | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        native_streaming: bool = True,
        max_message_chars: int = 3800,
        edit_interval: float = 1.0,
        events_path: str = "/slack/events",
        known_threads: int = 10_000,
        shutdown_grace: float = 30.0,
    ) -> None:
        oauth = bool(client_id or client_secret)
        if oauth and not (client_id and client_secret):
            raise ConfigurationError(
                "Set both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET for the OAuth install flow."
            )
        if not oauth and not bot_token:
            raise ConfigurationError(
                "Slack needs SLACK_BOT_TOKEN (one workspace) "
                "or SLACK_CLIENT_ID + SLACK_CLIENT_SECRET (OAuth install flow)."
            )
        signing_secret = (signing_secret or "").strip() or None  # a blank one is no secret
        if not app_token and not signing_secret:
            raise ConfigurationError(
                "Slack needs SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP events)."
            )
        self.orchestrator = orchestrator
        self.mode: Literal["socket", "http"] = "socket" if app_token else "http"
        self.api_url = _normalise_api_url(api_url or DEFAULT_API_URL)
        self.respond_to_bots = respond_to_bots
        self.native_streaming = native_streaming
        self.max_message_chars = max_message_chars
        self.edit_interval = edit_interval
        self.events_path = events_path
        self.shutdown_grace = shutdown_grace
        self._app_token = app_token
        self._budgets = BudgetRegistry(rate_limits)
        self._known_threads: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        self._known_threads_max = known_threads
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._stopped = asyncio.Event()
        self._socket: AsyncSocketModeHandler | None = None
        self._verifier = SignatureVerifier(signing_secret) if self.mode == "http" and signing_secret else None
        self.events_handled = 0
        """Events (and button clicks) fully handled: answered, ignored or found malformed."""

        oauth_settings: AsyncOAuthSettings | None = None
        if oauth:
            assert client_id is not None and client_secret is not None
            db = Path(installation_db_path or "data/slack_installations.sqlite3")
            db.parent.mkdir(parents=True, exist_ok=True)  # also holds the OAuth state store
            if installation_store is None and not secret_key:
                log.warning("slack installation tokens are stored unencrypted; set FLOWAGENTS_SECRET_KEY")
            store = installation_store or sqlite_installation_store(db, client_id, secret_key)
            oauth_settings = AsyncOAuthSettings(
                client_id=client_id,
                client_secret=client_secret,
                scopes=list(scopes),
                redirect_uri=redirect_uri,
                authorization_url=self.api_url.removesuffix("api/") + "oauth/v2/authorize",
                installation_store=store,
                state_store=SQLite3OAuthStateStore(database=str(db), expiration_seconds=600),
            )
        self.app = AsyncApp(
            # bolt copies these retry handlers into the client it makes for each event.
            client=AsyncWebClient(
                token=None if oauth else bot_token,
                base_url=self.api_url,
                retry_handlers=web_api_retry_handlers(),
            ),
            signing_secret=signing_secret or "",
            oauth_settings=oauth_settings,
            request_verification_enabled=self.mode == "http",
            # The channel drops its own messages itself (so every event is accounted for in events_handled).
            ignoring_self_events_enabled=False,
            process_before_response=False,
        )
        self.app.use(self._gate)
        self.app.event("app_mention")(self._on_app_mention)
        self.app.event("message")(self._on_message)
        self.app.action(re.compile("^" + CHOICE_ACTION_PREFIX))(self._on_choice)
        self.app.event("app_uninstalled")(self._on_uninstalled)
        self.app.event("tokens_revoked")(self._on_tokens_revoked)
        self.app.error(self._on_error)

    # ------------------------------------------------------------------ construction from env

    @classmethod
    def from_env(
        cls, orchestrator: _Orchestrator, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> SlackChannel | None:
        """Build the channel from ``SLACK_*`` environment variables, or None when Slack is not configured."""
        env = os.environ if env is None else env
        bot_token = env.get("SLACK_BOT_TOKEN") or None
        client_id = env.get("SLACK_CLIENT_ID") or None
        client_secret = env.get("SLACK_CLIENT_SECRET") or None
        if not bot_token and not (client_id and client_secret):
            return None
        return cls(
            orchestrator,
            bot_token=None if client_id and client_secret else bot_token,
            app_token=env.get("SLACK_APP_TOKEN") or None,
            signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            api_url=env.get("SLACK_API_URL") or None,
            client_id=client_id,
            client_secret=client_secret,
            installation_db_path=env.get("SLACK_INSTALLATION_DB") or None,
            secret_key=env.get("FLOWAGENTS_SECRET_KEY") or None,
            respond_to_bots=env.get("SLACK_RESPOND_TO_BOTS", "").lower() in ("1", "true", "yes"),
            **kwargs,
        )

    @classmethod
    def from_settings(cls, orchestrator: _Orchestrator, settings: Any, **kwargs: Any) -> SlackChannel:
        """Build the channel from the bot's settings (``slack_*`` fields; secrets may be ``SecretStr``)."""

        def get(name: str) -> Any:
            value: Any = getattr(settings, name, None)
            reveal = getattr(value, "get_secret_value", None)
            return reveal() if callable(reveal) else value

        oauth = bool(get("slack_client_id") and get("slack_client_secret"))
        grace = get("flowagents_shutdown_grace")
        return cls(
            orchestrator,
            bot_token=None if oauth else get("slack_bot_token"),
            app_token=get("slack_app_token"),
            signing_secret=get("slack_signing_secret"),
            api_url=get("slack_api_url"),
            client_id=get("slack_client_id"),
            client_secret=get("slack_client_secret"),
            installation_db_path=get("slack_installation_db"),
            secret_key=get("flowagents_secret_key"),
            respond_to_bots=bool(get("slack_respond_to_bots")),
            shutdown_grace=float(grace) if grace is not None else 30.0,
            **kwargs,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def needs_http(self) -> bool:
        """True when the bot's web server must run for Slack (HTTP events or the OAuth pages)."""
        return self.mode == "http" or self.app.oauth_flow is not None

    def attach(self, app: web.Application) -> None:
        """Add the Slack routes to the bot's aiohttp app (events in HTTP mode; OAuth when configured)."""
        if self.mode == "http":
            app.router.add_post(self.events_path, self._handle_events)
        flow = self.app.oauth_flow
        if flow is not None:
            app.router.add_get(flow.install_path, self._handle_install)
            app.router.add_get(flow.redirect_uri_path, self._handle_oauth_redirect)

    async def start(self) -> None:
        """Connect (Socket Mode) and serve until :meth:`stop` is called; run it as a task.

        In HTTP mode events arrive through the routes added by :meth:`attach` on the bot's web server.
        """
        await self.connect()
        await self._stopped.wait()

    async def connect(self) -> None:
        """Connect to Slack in Socket Mode and return (nothing to do in HTTP mode)."""
        self._closing = False
        self._stopped.clear()
        if self.mode == "socket" and self._socket is None:
            self._socket = AsyncSocketModeHandler(self.app, app_token=self._app_token)
            await self._socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("slack connected in Socket Mode via %s", self.api_url)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking events, let running turns finish (up to ``grace`` seconds), then disconnect."""
        grace = self.shutdown_grace if grace is None else grace
        self._closing = True
        if self._socket is not None:
            await self._socket.disconnect_async()  # type: ignore[no-untyped-call]
        running = [t for t in self._inflight if not t.done()]
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        self._stopped.set()

    # ------------------------------------------------------------------ HTTP routes

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        # Check the signature before anything parses the body (bolt's request parsing raises on non-JSON).
        raw = await request.text()
        try:
            signed = self._verifier is not None and self._verifier.is_valid_request(raw, request.headers)
        except ValueError:  # a timestamp header that is not a number
            signed = False
        if not signed:
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_req = AsyncBoltRequest(body=raw, query=request.query_string, headers=dict(request.headers))
        except (ValueError, TypeError, AttributeError):  # not JSON, or not a JSON object Slack would send
            log.warning("slack events request refused: signed, but its body is not a Slack payload")
            return web.json_response({"error": "malformed request body"}, status=400)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_req))

    async def _handle_install(self, request: web.Request) -> web.StreamResponse:
        flow = self.app.oauth_flow
        assert flow is not None
        return await to_aiohttp_response(await flow.handle_installation(await to_bolt_request(request)))

    async def _handle_oauth_redirect(self, request: web.Request) -> web.StreamResponse:
        flow = self.app.oauth_flow
        assert flow is not None
        return await to_aiohttp_response(await flow.handle_callback(await to_bolt_request(request)))

    # ------------------------------------------------------------------ bolt listeners

    async def _gate(self, req: AsyncBoltRequest, resp: BoltResponse, next: Any) -> BoltResponse | None:
        """While stopping, refuse events unacknowledged so Slack delivers them again later."""
        if self._closing:
            return BoltResponse(status=503, body="shutting down")
        result: BoltResponse | None = await next()
        return result

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.warning(
            "slack event %s ignored: %s", body.get("event_id") if isinstance(body, dict) else None, error
        )
        self.events_handled += 1

    async def _on_app_mention(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        try:
            await self._app_mention(body, context)
        finally:
            self.events_handled += 1

    async def _on_message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        try:
            await self._message(body, context)
        finally:
            self.events_handled += 1

    async def _on_choice(self, ack: Any, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """A button of a choice question: its text is the user's next message in that conversation."""
        await ack()
        try:
            await self._choice(body, context)
        finally:
            self.events_handled += 1

    async def _on_uninstalled(self, context: AsyncBoltContext) -> None:
        """The app was removed from a workspace: its tokens are revoked, so its installation is deleted."""
        try:
            log.warning("slack app uninstalled from %s:%s", context.enterprise_id, context.team_id)
            if self.app.installation_store is not None:
                await self.app.default_app_uninstalled_event_listener()(context=context)
        finally:
            self.events_handled += 1

    async def _on_tokens_revoked(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        try:
            log.warning("slack tokens revoked in %s:%s", context.enterprise_id, context.team_id)
            if self.app.installation_store is not None:
                await self.app.default_tokens_revoked_event_listener()(event=event, context=context)
        finally:
            self.events_handled += 1

    async def _app_mention(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = self._parse(body)
        if event is None or event.channel.startswith("D"):
            return  # DMs arrive as message.im events
        if not self._accept(event, context):
            return
        root = event.thread_ts or event.ts
        route = self._route(body, event, context, conversation_thread=root, reply_thread_ts=root)
        if route is None:
            return
        self._remember_thread(route.tenant_id, event.channel, root, route.user_id)
        await self._tracked(self._turn(route, context))

    async def _message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = self._parse(body)
        if event is None or not self._accept(event, context):
            return
        if event.channel_type == "im" or (event.channel_type is None and event.channel.startswith("D")):
            route = self._route(
                body, event, context, conversation_thread=event.thread_ts, reply_thread_ts=event.thread_ts
            )
        else:
            # In channels the bot answers a mention (app_mention) and then follows its own threads.
            bot_user = context.bot_user_id
            if not event.thread_ts or (bot_user and f"<@{bot_user}" in event.text):
                return
            tenant = _tenant_of(body, event)
            if tenant is None or not self._follows_thread(tenant[0], event):
                return
            route = self._route(
                body, event, context, conversation_thread=event.thread_ts, reply_thread_ts=event.thread_ts
            )
        if route is not None:
            await self._tracked(self._turn(route, context))

    async def _choice(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        try:
            action = body["actions"][0]
            channel = str(body["channel"]["id"])
            message = body.get("message") or {}
            team_id = str((body.get("team") or {}).get("id") or body["user"]["team_id"])
            enterprise_id = (body.get("enterprise") or {}).get("id")
            user_id = str(body["user"]["id"])
            text = str(action["value"])
            thread_ts = message.get("thread_ts")
            # A question is answered once: a second click on it (a double click, or a click long after) is
            # a duplicate of the first, not the user's next message.
            question = message.get("ts") or (body.get("container") or {}).get("message_ts")
        except (KeyError, TypeError, IndexError):
            log.warning("slack block action with an unexpected shape ignored")
            return
        asked = asked_user(action.get("block_id"))
        if asked is not None and asked != user_id:  # someone else's question (in a channel thread)
            await self._tell(context, channel, user_id, thread_ts, f"This question is for <@{asked}>.")
            return
        route = _Route(
            tenant_id=f"{enterprise_id}:{team_id}" if enterprise_id else team_id,
            team_id=team_id,
            enterprise_id=enterprise_id,
            user_id=user_id,
            channel=channel,
            conversation_id=f"{channel}:{thread_ts}" if thread_ts else channel,
            reply_thread_ts=thread_ts,
            text=text,
            delivery_id=f"choice:{channel}:{question}:{user_id}"
            if question
            else f"action:{action.get('action_ts')}:{user_id}",
        )
        await self._tracked(self._turn(route, context))

    async def _tell(
        self, context: AsyncBoltContext, channel: str, user_id: str, thread_ts: str | None, text: str
    ) -> None:
        """A notice only ``user_id`` sees (an ephemeral message)."""
        if context.client is None:
            return
        try:
            await context.client.chat_postEphemeral(
                channel=channel, user=user_id, text=text, thread_ts=thread_ts
            )
        except Exception as exc:  # cosmetic: the click is ignored either way
            log.info("slack could not show %s an ephemeral notice (%r)", user_id, exc)

    # ------------------------------------------------------------------ event → route

    def _parse(self, body: dict[str, Any]) -> SlackEvent | None:
        try:
            return SlackEvent.model_validate(body.get("event"))
        except ValidationError as exc:
            log.warning(
                "slack event %s ignored: malformed (%s)",
                body.get("event_id"),
                exc.errors(include_input=False),
            )
            return None

    def _accept(self, event: SlackEvent, context: AsyncBoltContext) -> bool:
        """Drop the bot's own messages, other bots (unless configured), edits, joins and other subtypes."""
        if event.user and event.user == context.bot_user_id:
            return False
        if event.bot_id and (event.bot_id == context.bot_id or not self.respond_to_bots):
            return False
        if event.subtype in _USER_SUBTYPES:
            return True
        if event.subtype is not None and not (event.subtype == "bot_message" and self.respond_to_bots):
            return False
        return True

    def _route(
        self,
        body: dict[str, Any],
        event: SlackEvent,
        context: AsyncBoltContext,
        *,
        conversation_thread: str | None,
        reply_thread_ts: str | None,
    ) -> _Route | None:
        tenant = _tenant_of(body, event)
        user = event.user or event.bot_id
        text = _strip_mention(event.text, context.bot_user_id)
        if tenant is None or not user or not text:
            return None
        tenant_id, team_id, enterprise_id = tenant
        return _Route(
            tenant_id=tenant_id,
            team_id=team_id,
            enterprise_id=enterprise_id,
            user_id=user,
            channel=event.channel,
            conversation_id=f"{event.channel}:{conversation_thread}"
            if conversation_thread
            else event.channel,
            reply_thread_ts=reply_thread_ts,
            text=text,
            delivery_id=str(body["event_id"]) if body.get("event_id") else None,
        )

    def _follows_thread(self, tenant_id: str, event: SlackEvent) -> bool:
        """Is this a thread the bot answered this user in (or has a conversation waiting for this user)?

        Others talking in the thread are not talking to the bot until they mention it.
        """
        if (tenant_id, event.channel, event.thread_ts, event.user or event.bot_id) in self._known_threads:
            return True
        conversation = f"{event.channel}:{event.thread_ts}"
        try:  # e.g. after a restart, with a durable store: the agent still waits for an answer
            active = self.orchestrator.get_active_agents(tenant_id=tenant_id)
        except Exception:
            log.debug("slack could not list active agents", exc_info=True)
            return False
        return any(a.conversation_id == conversation and a.user_id == event.user for a in active)

    def _remember_thread(self, tenant_id: str, channel: str, thread_ts: str, user_id: str) -> None:
        key = (tenant_id, channel, thread_ts, user_id)
        self._known_threads[key] = None
        self._known_threads.move_to_end(key)
        while len(self._known_threads) > self._known_threads_max:
            self._known_threads.popitem(last=False)

    async def _tracked(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._inflight.add(task)
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._inflight.discard(task)
            else:
                task.add_done_callback(self._inflight.discard)

    # ------------------------------------------------------------------ one turn

    async def _turn(self, route: _Route, context: AsyncBoltContext) -> None:
        with observability.span("slack.turn", tenant_id=route.tenant_id, channel=route.channel):
            await self._turn_in_span(route, context)

    async def _turn_in_span(self, route: _Route, context: AsyncBoltContext) -> None:
        client = context.client
        if client is None:
            log.warning("slack event for %s ignored: no authorized client", route.tenant_id)
            return
        writer = ReplyWriter(
            client,
            self._budgets,
            workspace=route.tenant_id,
            channel=route.channel,
            thread_ts=route.reply_thread_ts,
            recipient_team_id=route.team_id,
            recipient_user_id=route.user_id,
            native_streaming=self.native_streaming,
            max_chars=self.max_message_chars,
            edit_interval=self.edit_interval,
        )
        metadata = {
            "platform": "slack",
            "team_id": route.team_id,
            "enterprise_id": route.enterprise_id,
            "channel": route.channel,
            "thread_ts": route.reply_thread_ts,
        }
        result: Any = None
        choices: tuple[str, list[str]] | None = None
        failed = False
        try:
            async for event in self.orchestrator.process_stream(
                route.text,
                tenant_id=route.tenant_id,
                user_id=route.user_id,
                conversation_id=route.conversation_id,
                metadata=metadata,
                delivery_id=route.delivery_id,
            ):
                kind = getattr(event, "type", None)
                if kind == "duplicate":
                    log.info("slack redelivery %s already answered", route.delivery_id)
                    return
                if kind == "routing" and getattr(event, "agent", "") is None:
                    writer.hold()
                elif kind == "message_chunk":
                    writer.feed(event.content)
                elif kind == "input_required" and event.choices:
                    choices = (event.question, list(event.choices))
                elif kind == "error":
                    failed = True
                elif kind == "result":
                    result = event.result
        except Exception:
            log.exception("slack turn failed for tenant %s", route.tenant_id)
            failed = True
        blocks: list[dict[str, Any]] | None = None
        fallback: str | None = None
        if result is not None and getattr(result, "no_match", False):
            catalog = list(self.orchestrator.agent_catalog(route.tenant_id))
            blocks = help_blocks(result.raw_message or writer.text, catalog)
            fallback = help_text(result.raw_message or writer.text, catalog)
        elif choices is not None:
            blocks = choice_blocks(*choices, user_id=route.user_id)[1:]  # the question is in the text
        if not writer.started and (failed or str(getattr(result, "status", "")) == "failed"):
            writer.feed(APOLOGY)
        try:
            await writer.finish(blocks=blocks, fallback_text=fallback)
        except Exception:
            log.exception("slack answer could not be delivered to %s/%s", route.tenant_id, route.channel)


def _normalise_api_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _tenant_of(body: dict[str, Any], event: SlackEvent) -> tuple[str, str, str | None] | None:
    """(tenant_id, team_id, enterprise_id) from the event payload itself."""
    team_id = body.get("team_id") or event.team
    if not team_id:
        return None
    enterprise_id = body.get("enterprise_id")
    if not enterprise_id:
        auths = body.get("authorizations") or []
        if auths and isinstance(auths[0], dict):
            enterprise_id = auths[0].get("enterprise_id")
    tenant = f"{enterprise_id}:{team_id}" if enterprise_id else str(team_id)
    return tenant, str(team_id), str(enterprise_id) if enterprise_id else None


def _strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return re.sub(r"[ \t]+", " ", text).strip()
