"""Loopback fake Slack: Web API, Socket Mode and signed HTTP event delivery on 127.0.0.1.

The public surface is re-exported by :mod:`flowagents.testing.slack`; see docs/slack.md.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class TierLimit:
    """The fake answers 429 once more than ``calls`` calls arrive within ``per_seconds``."""

    calls: int
    per_seconds: float


#: Slack's documented limits (Tier 2/3/4; chat.postMessage about 1 per second per channel).
SLACK_TIER_LIMITS: Mapping[str, TierLimit] = {
    "chat.postMessage": TierLimit(1, 1.0),
    "chat.update": TierLimit(50, 60.0),
    "chat.startStream": TierLimit(20, 60.0),
    "chat.appendStream": TierLimit(100, 60.0),
    "chat.stopStream": TierLimit(20, 60.0),
}
PER_CHANNEL_LIMITED = frozenset({"chat.postMessage"})
STREAM_NOT_STREAMING = "message_not_in_streaming_state"
MAX_TEXT_CHARS = 40_000
MAX_MARKDOWN_CHARS = 12_000


@dataclass
class Workspace:
    """One installed workspace (team) of the fake Slack."""

    team_id: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    enterprise_id: str | None = None
    name: str = ""


@dataclass
class ApiCall:
    """One Web API call as the fake received it."""

    method: str
    params: JsonDict
    token: str | None
    team_id: str | None
    status: int
    response: JsonDict


@dataclass
class FakeMessage:
    """A message in the fake's channels (users' messages and the bot's)."""

    team_id: str
    channel: str
    ts: str
    user: str
    text: str = ""
    thread_ts: str | None = None
    blocks: list[JsonDict] | None = None
    markdown: bool = False
    bot: bool = False
    stream_state: str | None = None  # "streaming", "stopped", "expired" for chat.startStream messages
    appends: int = 0
    edits: int = 0

    @property
    def in_thread(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts


@dataclass
class Delivery:
    """One delivery of an event (first attempt or a retry)."""

    event_id: str
    payload: JsonDict
    envelope_id: str | None = None
    retry_attempt: int = 0
    kind: str = "events_api"  # Socket Mode envelope type: events_api or interactive
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    ack_payload: JsonDict | None = None
    http_status: int | None = None
    http_body: str | None = None


class FakeSlack:
    """An aiohttp server that behaves like Slack for slack_sdk / slack-bolt pointed at it.

    Point the client at :attr:`api_url` (``AsyncWebClient(base_url=fake.api_url)``); everything else
    (Socket Mode URL, OAuth) follows from Web API answers.
    """

    def __init__(
        self,
        *,
        limits: Mapping[str, TierLimit] | None = None,
        signing_secret: str = "fake-signing-secret",
        client_id: str = "111.222",
        client_secret: str = "fake-client-secret",
        app_id: str = "A0FAKEAPP",
    ) -> None:
        self.limits: dict[str, TierLimit] = dict(SLACK_TIER_LIMITS if limits is None else limits)
        self.signing_secret = signing_secret
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_id = app_id
        self.app_token = "xapp-1-" + app_id + "-" + secrets.token_hex(8)
        self.workspaces: dict[str, Workspace] = {}
        self.revoked_tokens: set[str] = set()
        """Bot tokens of uninstalled workspaces (``uninstall``): calls with them get ``token_revoked``."""
        self.calls: list[ApiCall] = []
        self.messages: list[FakeMessage] = []
        self.ephemeral_messages: list[FakeMessage] = []
        """``chat.postEphemeral`` messages, oldest first; ``user`` is the one person who sees each."""
        self.deliveries: list[Delivery] = []
        self.stream_expires_after_appends: int | None = None
        """Streams expire (further appends fail) after this many appends."""
        self.stream_expires_after_chars: int | None = None
        """Streams expire once they hold at least this many characters."""
        self.refuse_streams_with: str | None = None
        self._forced_429: dict[str, list[float]] = {}
        self._limited_until: dict[str, float] = {}  # a forced 429 holds its method for its Retry-After
        self._forced_errors: dict[str, list[tuple[int, str]]] = {}
        self._forced_disconnects: dict[str, int] = {}
        self.dropped: list[str] = []
        """Methods of the calls whose connection was dropped (``force_disconnect``), in order."""
        self._windows: dict[tuple[str, str, str], deque[float]] = {}
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._envelopes: dict[str, Delivery] = {}
        self._oauth_codes: dict[str, Workspace] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        """Listen on 127.0.0.1 at a random free port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/link/", self._handle_socket)
        app.router.add_get("/oauth/v2/authorize", self._handle_authorize)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        self._http = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        """Close sockets and stop the server."""
        for ws in list(self._sockets):
            await ws.close()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        """The Web API base URL, for ``AsyncWebClient(base_url=...)`` / ``SLACK_API_URL``."""
        return self.base_url + "api/"

    # ------------------------------------------------------------------ workspaces

    def add_workspace(self, team_id: str, *, enterprise_id: str | None = None) -> Workspace:
        """Register a workspace with the app installed (a bot token and bot user)."""
        n = len(self.workspaces) + 1
        ws = Workspace(
            team_id=team_id,
            bot_token=f"xoxb-{team_id}-{secrets.token_hex(6)}",
            bot_user_id=f"UBOT{n:04d}",
            bot_id=f"BBOT{n:04d}",
            enterprise_id=enterprise_id,
            name=f"Workspace {team_id}",
        )
        self.workspaces[team_id] = ws
        return ws

    def authorize_code(self, team_id: str, *, enterprise_id: str | None = None) -> str:
        """A one-time OAuth code that installs the app into ``team_id`` (what Slack's consent page gives)."""
        ws = self.workspaces.get(team_id)
        if ws is None or ws.bot_token in self.revoked_tokens:  # a new installation gets a new token
            ws = self.add_workspace(team_id, enterprise_id=enterprise_id)
        code = "code-" + secrets.token_hex(6)
        self._oauth_codes[code] = ws
        return code

    def uninstall(self, team_id: str) -> JsonDict:
        """Uninstall the app from ``team_id`` as Slack does: its bot token is revoked at once (calls with it
        get ``token_revoked``) and Slack sends an ``app_uninstalled`` event, whose payload is returned
        (deliver it with ``send_socket_event`` / ``send_http_event``)."""
        ws = self.workspaces[team_id]
        self.revoked_tokens.add(ws.bot_token)
        return self.event_callback(team_id, {"type": "app_uninstalled", "event_ts": f"{time.time():.6f}"})

    # ------------------------------------------------------------------ rate limits & faults

    def force_rate_limit(self, method: str, *, retry_after: float = 1.0, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``; as Slack does, a
        call made before that Retry-After has passed is answered 429 too (and does not use up ``times``)."""
        self._forced_429.setdefault(method, []).extend([retry_after] * times)

    def force_error(
        self, method: str, error: str = "internal_error", *, status: int = 200, times: int = 1
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``ok: false``, ``error`` and HTTP ``status``."""
        self._forced_errors.setdefault(method, []).extend([(status, error)] * times)

    def force_disconnect(self, method: str, *, times: int = 1) -> None:
        """Drop the connection of the next ``times`` calls of ``method`` without answering (a network fault;
        slack_sdk retries a dropped connection once by itself)."""
        self._forced_disconnects[method] = self._forced_disconnects.get(method, 0) + times

    def _rate_limited(self, method: str, team: str, channel: str) -> float | None:
        now = time.monotonic()
        limited_until = self._limited_until.get(method, 0.0)
        if now < limited_until:
            return limited_until - now
        forced = self._forced_429.get(method)
        if forced:
            retry_after = forced.pop(0)
            self._limited_until[method] = now + retry_after
            return retry_after
        limit = self.limits.get(method)
        if limit is None:
            return None
        key = (team, method, channel if method in PER_CHANNEL_LIMITED else "")
        window = self._windows.setdefault(key, deque())
        while window and now - window[0] >= limit.per_seconds:
            window.popleft()
        if len(window) >= limit.calls:
            return max(0.001, window[0] + limit.per_seconds - now)
        window.append(now)
        return None

    # ------------------------------------------------------------------ queries for tests

    def calls_to(self, method: str, *, team_id: str | None = None) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method and (team_id is None or c.team_id == team_id)]

    @property
    def rate_limited_calls(self) -> list[ApiCall]:
        """Every call the fake answered with 429."""
        return [c for c in self.calls if c.status == 429]

    def bot_messages(
        self, *, team_id: str | None = None, channel: str | None = None, thread_ts: str | None = None
    ) -> list[FakeMessage]:
        """The bot's messages, oldest first, optionally in one channel / thread."""
        return [
            m
            for m in self.messages
            if m.bot
            and (team_id is None or m.team_id == team_id)
            and (channel is None or m.channel == channel)
            and (thread_ts is None or m.thread_ts == thread_ts)
        ]

    def transcript(self, *, team_id: str | None = None, channel: str, thread_ts: str | None = None) -> str:
        """All the bot's text in a channel (or thread), message after message, joined by newlines."""
        return "\n".join(
            m.text for m in self.bot_messages(team_id=team_id, channel=channel, thread_ts=thread_ts)
        )

    async def wait_for(self, predicate: Callable[[], object], *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is truthy (checked on every API call, ack, delivery and every 20 ms).

        Raises AssertionError (listing the bot's messages) when ``timeout`` seconds pass first.
        """

        async def _wait() -> None:
            # Re-checked on every change of the fake, and every 20 ms for changes made elsewhere.
            while not predicate():
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), 0.02)
                    except TimeoutError:
                        pass

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            summary = [(m.channel, m.thread_ts, m.text[:80], m.stream_state) for m in self.bot_messages()]
            raise AssertionError(f"condition not met within {timeout}s; bot messages: {summary}") from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ event payloads

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ids):06d}"

    def new_event_id(self) -> str:
        return f"Ev{secrets.token_hex(5).upper()}"

    def event_callback(self, team_id: str, event: JsonDict, *, event_id: str | None = None) -> JsonDict:
        """Wrap an inner event in Slack's Events API ``event_callback`` envelope."""
        ws = self.workspaces[team_id]
        payload: JsonDict = {
            "token": "fake-verification-token",
            "team_id": team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or self.new_event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": ws.enterprise_id,
                    "team_id": team_id,
                    "user_id": ws.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + secrets.token_hex(8),
        }
        if ws.enterprise_id:
            payload["enterprise_id"] = ws.enterprise_id
        return payload

    def user_message(
        self,
        team_id: str,
        *,
        channel: str,
        user: str,
        text: str,
        thread_ts: str | None = None,
        channel_type: str = "channel",
        event_type: str = "message",
        subtype: str | None = None,
        bot_id: str | None = None,
        files: list[JsonDict] | None = None,
    ) -> JsonDict:
        """A ``message`` (or ``app_mention`` with ``event_type``) event; the message is also stored.

        ``files`` attaches files (the message then has ``subtype="file_share"``, as Slack sends it).
        """
        ts = self._next_ts()
        event: JsonDict = {
            "type": event_type,
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": team_id,
        }
        if event_type == "message":
            event["channel_type"] = channel_type
            event["client_msg_id"] = secrets.token_hex(8)
        if thread_ts:
            event["thread_ts"] = thread_ts
        if subtype:
            event["subtype"] = subtype
        if bot_id:
            event["bot_id"] = bot_id
        if files is not None:
            event["files"] = files
            event["upload"] = False
            event.setdefault("subtype", "file_share")
        self.messages.append(
            FakeMessage(team_id=team_id, channel=channel, ts=ts, user=user, text=text, thread_ts=thread_ts)
        )
        return event

    def app_mention(
        self, team_id: str, *, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> JsonDict:
        """An ``app_mention`` event; ``text`` should contain ``<@bot_user_id>``."""
        return self.user_message(
            team_id, channel=channel, user=user, text=text, thread_ts=thread_ts, event_type="app_mention"
        )

    def block_action(
        self,
        team_id: str,
        *,
        message: FakeMessage,
        user: str,
        action_id: str,
        value: str,
        block_id: str | None = None,
    ) -> JsonDict:
        """A ``block_actions`` payload: ``user`` clicked the button ``action_id`` on the bot's ``message``.

        ``block_id`` is the clicked block's (Slack makes one up when the app gave none).
        """
        ws = self.workspaces[team_id]
        container: JsonDict = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        msg: JsonDict = {"type": "message", "user": message.user, "ts": message.ts, "text": message.text}
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
            msg["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": team_id},
            "api_app_id": self.app_id,
            "token": "fake-verification-token",
            "container": container,
            "trigger_id": f"{next(self._ids)}.{secrets.token_hex(6)}",
            "team": {"id": team_id, "domain": team_id.lower()},
            "enterprise": {"id": ws.enterprise_id} if ws.enterprise_id else None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": message.channel.lower()},
            "message": msg,
            "response_url": f"{self.base_url}actions/{secrets.token_hex(6)}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id or secrets.token_hex(3),
                    "text": {"type": "plain_text", "text": value},
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    # ------------------------------------------------------------------ Socket Mode

    @property
    def socket_connected(self) -> bool:
        return any(not ws.closed for ws in self._sockets)

    async def wait_socket_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self.socket_connected, timeout=timeout)

    async def send_socket_event(self, payload: JsonDict) -> Delivery:
        """Send an Events API payload (or a ``block_actions`` payload) over Socket Mode.

        Returns the delivery; ``delivery.acked`` is set when the app acknowledges the envelope.
        """
        kind = "interactive" if payload.get("type") == "block_actions" else "events_api"
        delivery = Delivery(event_id=str(payload.get("event_id", "")), payload=payload, kind=kind)
        await self._send_envelope(delivery, retry_reason="")
        return delivery

    async def redeliver_socket(self, delivery: Delivery, *, reason: str = "timeout") -> Delivery:
        """Send the same event again as Slack does when an ack is late (new envelope, retry_attempt+1)."""
        retry = Delivery(
            event_id=delivery.event_id,
            payload=delivery.payload,
            retry_attempt=delivery.retry_attempt + 1,
            kind=delivery.kind,
        )
        await self._send_envelope(retry, retry_reason=reason)
        return retry

    async def send_raw_socket_frame(self, frame: str) -> None:
        """Send any text frame (e.g. malformed JSON) to the connected app."""
        await self._socket().send_str(frame)

    def _socket(self) -> web.WebSocketResponse:
        for ws in reversed(self._sockets):
            if not ws.closed:
                return ws
        raise AssertionError(
            "no Socket Mode connection: start the app first and await wait_socket_connected()"
        )

    async def _send_envelope(self, delivery: Delivery, *, retry_reason: str) -> None:
        delivery.envelope_id = secrets.token_hex(16)
        envelope = {
            "envelope_id": delivery.envelope_id,
            "payload": delivery.payload,
            "type": delivery.kind,
            "accepts_response_payload": delivery.kind == "interactive",
        }
        if delivery.kind == "events_api":
            envelope.update(retry_attempt=delivery.retry_attempt, retry_reason=retry_reason)
        self._envelopes[delivery.envelope_id] = delivery
        self.deliveries.append(delivery)
        await self._socket().send_str(json.dumps(envelope))
        await self._notify()

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len([s for s in self._sockets if not s.closed]),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                delivery = self._envelopes.get(str(data.get("envelope_id")))
                if delivery is not None:
                    delivery.ack_payload = data.get("payload")
                    delivery.acked.set()
                    await self._notify()
        finally:
            await self._notify()
        return ws

    # ------------------------------------------------------------------ HTTP events

    def sign(self, body: str, timestamp: str) -> str:
        signature = SignatureVerifier(self.signing_secret).generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        return signature

    async def send_http_event(
        self,
        url: str,
        payload: JsonDict,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        signature: str | None = None,
        raw_body: str | None = None,
    ) -> Delivery:
        """POST a signed Events API request to ``url`` as Slack does; ``signature``/``timestamp`` override."""
        assert self._http is not None
        interactive = payload.get("type") == "block_actions"
        if raw_body is not None:
            body = raw_body
        elif interactive:  # Slack posts interactions as a form field named payload
            body = urlencode({"payload": json.dumps(payload)})
        else:
            body = json.dumps(payload)
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded" if interactive else "application/json",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature if signature is not None else self.sign(body, ts),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        delivery = Delivery(
            event_id=str(payload.get("event_id", "")), payload=payload, retry_attempt=retry_num or 0
        )
        async with self._http.post(url, data=body.encode(), headers=headers) as resp:
            delivery.http_status = resp.status
            delivery.http_body = await resp.text()
        if 200 <= resp.status < 300:
            delivery.acked.set()
        self.deliveries.append(delivery)
        await self._notify()
        return delivery

    async def install(self, install_url: str, team_id: str, *, enterprise_id: str | None = None) -> int:
        """Walk the OAuth install flow like a browser: app install URL -> Slack consent -> app callback.

        Returns the HTTP status of the app's callback (200 on success).
        """
        assert self._http is not None
        self._next_install = (team_id, enterprise_id)
        async with self._http.get(install_url, allow_redirects=False) as resp:
            cookies = {k: v.value for k, v in resp.cookies.items()}
            location = resp.headers.get("Location")
            if location is None:  # an install page with a link instead of a redirect
                html = await resp.text()
                found = re.search(r'href="([^"]*/oauth/v2/authorize[^"]*)"', html)
                if found is None:
                    raise AssertionError(f"no Slack authorize link on the install page {install_url}")
                location = found.group(1).replace("&amp;", "&")
        async with self._http.get(location, allow_redirects=False) as resp:
            callback = resp.headers["Location"]
        cookie_header = "; ".join(f"{k}={v}" for k, v in cookies.items())
        async with self._http.get(callback, headers={"Cookie": cookie_header}, allow_redirects=False) as resp:
            return resp.status

    async def _handle_authorize(self, request: web.Request) -> web.StreamResponse:
        team_id, enterprise_id = getattr(self, "_next_install", ("T0INSTALL", None))
        code = self.authorize_code(team_id, enterprise_id=enterprise_id)
        redirect_uri = request.query.get("redirect_uri")
        if not redirect_uri:
            return web.Response(
                status=400, text="redirect_uri is required by the fake (set OAuth redirect_uri)"
            )
        query = urlencode({"code": code, "state": request.query.get("state", "")})
        raise web.HTTPFound(f"{redirect_uri}?{query}")

    # ------------------------------------------------------------------ Web API

    async def _params(self, request: web.Request) -> JsonDict:
        params: JsonDict = dict(request.query)
        if request.can_read_body:
            raw = await request.text()
            if request.content_type == "application/json":
                body = json.loads(raw or "{}")
                if isinstance(body, dict):
                    params.update(body)
            else:
                params.update(dict(parse_qsl(raw)))
        for key in ("blocks", "metadata", "chunks"):
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    pass
        return params

    def _token(self, request: web.Request, params: JsonDict) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :]
        token = params.pop("token", None)
        return str(token) if token else None

    def _team_for(self, token: str | None) -> Workspace | None:
        return next((w for w in self.workspaces.values() if w.bot_token == token), None)

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await self._params(request)
        if self._forced_disconnects.get(method) and request.transport is not None:
            self._forced_disconnects[method] -= 1
            self.dropped.append(method)
            request.transport.close()  # nothing is done and nothing answered
            return web.Response()
        token = self._token(request, params)
        ws = self._team_for(token)
        status, headers, body = 200, {}, self._dispatch(method, params, token, ws, request)
        forced = self._forced_errors.get(method) if body.get("ok") else None
        if forced:
            status, error = forced.pop(0)
            body = {"ok": False, "error": error}
        elif body.get("error") not in ("invalid_auth", "not_authed", "token_revoked"):
            retry_after = self._rate_limited(method, ws.team_id if ws else "", str(params.get("channel", "")))
            if retry_after is not None:
                status, body = 429, {"ok": False, "error": "ratelimited"}
                headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
            else:
                body = self._apply(method, params, ws, body)
        self.calls.append(ApiCall(method, params, token, ws.team_id if ws else None, status, body))
        await self._notify()
        return web.json_response(body, status=status, headers=headers)

    def _dispatch(
        self, method: str, params: JsonDict, token: str | None, ws: Workspace | None, request: web.Request
    ) -> JsonDict:
        """Authentication and validation; the returned dict is the answer if it is an error."""
        if method == "apps.connections.open":
            return {"ok": True} if token == self.app_token else {"ok": False, "error": "invalid_auth"}
        if method == "oauth.v2.access":
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Basic "):
                cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            else:
                cid, secret = str(params.get("client_id", "")), str(params.get("client_secret", ""))
            if (cid, secret) != (self.client_id, self.client_secret):
                return {"ok": False, "error": "invalid_client_id"}
            if str(params.get("code")) not in self._oauth_codes:
                return {"ok": False, "error": "invalid_code"}
            return {"ok": True}
        if token in self.revoked_tokens:
            return {"ok": False, "error": "token_revoked"}
        if ws is None:
            return {"ok": False, "error": "not_authed" if not token else "invalid_auth"}
        return {"ok": True}

    def _apply(self, method: str, p: JsonDict, ws: Workspace | None, checked: JsonDict) -> JsonDict:
        if not checked.get("ok"):
            return checked
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={secrets.token_hex(8)}"}
        if method == "oauth.v2.access":
            installed = self._oauth_codes.pop(str(p.get("code")))
            return {
                "ok": True,
                "app_id": self.app_id,
                "authed_user": {"id": "UINSTALLER"},
                "scope": "app_mentions:read,chat:write,im:history",
                "token_type": "bot",
                "access_token": installed.bot_token,
                "bot_user_id": installed.bot_user_id,
                "team": {"id": installed.team_id, "name": installed.name},
                "enterprise": {"id": installed.enterprise_id} if installed.enterprise_id else None,
                "is_enterprise_install": False,
            }
        assert ws is not None
        if method == "auth.test":
            return {
                "ok": True,
                "url": f"https://{ws.team_id.lower()}.slack.com/",
                "team": ws.name,
                "user": "flowbot",
                "team_id": ws.team_id,
                "user_id": ws.bot_user_id,
                "bot_id": ws.bot_id,
                "enterprise_id": ws.enterprise_id,
                "is_enterprise_install": False,
            }
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        result: JsonDict = handler(p, ws)
        return result

    def _find(self, ws: Workspace, channel: str, ts: str) -> FakeMessage | None:
        return next(
            (m for m in self.messages if m.team_id == ws.team_id and m.channel == channel and m.ts == ts),
            None,
        )

    def _new_bot_message(self, ws: Workspace, p: JsonDict, text: str, markdown: bool) -> FakeMessage:
        msg = FakeMessage(
            team_id=ws.team_id,
            channel=str(p["channel"]),
            ts=self._next_ts(),
            user=ws.bot_user_id,
            text=text,
            thread_ts=str(p["thread_ts"]) if p.get("thread_ts") else None,
            blocks=p.get("blocks"),
            markdown=markdown,
            bot=True,
        )
        self.messages.append(msg)
        return msg

    @staticmethod
    def _text_of(p: JsonDict) -> tuple[str, bool] | str:
        """(text, is_markdown) or an error code."""
        if p.get("markdown_text") is not None:
            if p.get("text") or p.get("blocks"):
                return "markdown_text_conflict"
            text = str(p["markdown_text"])
            return "msg_too_long" if len(text) > MAX_MARKDOWN_CHARS else (text, True)
        text = str(p.get("text") or "")
        if not text.strip() and not p.get("blocks"):  # blanks only are no text to Slack
            return "no_text"
        return "msg_too_long" if len(text) > MAX_TEXT_CHARS else (text, False)

    def _api_chat_postMessage(self, p: JsonDict, ws: Workspace) -> JsonDict:
        if not p.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        got = self._text_of(p)
        if isinstance(got, str):
            return {"ok": False, "error": got}
        msg = self._new_bot_message(ws, p, got[0], got[1])
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "message": {"text": msg.text, "ts": msg.ts}}

    def _api_chat_postEphemeral(self, p: JsonDict, ws: Workspace) -> JsonDict:
        if not p.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not p.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        got = self._text_of(p)
        if isinstance(got, str):
            return {"ok": False, "error": got}
        msg = FakeMessage(
            team_id=ws.team_id,
            channel=str(p["channel"]),
            ts=self._next_ts(),
            user=str(p["user"]),
            text=got[0],
            thread_ts=str(p["thread_ts"]) if p.get("thread_ts") else None,
            blocks=p.get("blocks"),
        )
        self.ephemeral_messages.append(msg)
        return {"ok": True, "message_ts": msg.ts}

    def _api_chat_update(self, p: JsonDict, ws: Workspace) -> JsonDict:
        msg = self._find(ws, str(p.get("channel")), str(p.get("ts")))
        if msg is None or not msg.bot:
            return {"ok": False, "error": "message_not_found" if msg is None else "cant_update_message"}
        if msg.stream_state == "streaming":
            return {"ok": False, "error": "message_is_streaming"}
        got = self._text_of(p)
        if isinstance(got, str):
            return {"ok": False, "error": got}
        msg.text, msg.markdown = got
        if "blocks" in p:
            msg.blocks = p.get("blocks")
        msg.edits += 1
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}

    def _api_chat_startStream(self, p: JsonDict, ws: Workspace) -> JsonDict:
        channel = str(p.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if self.refuse_streams_with:
            return {"ok": False, "error": self.refuse_streams_with}
        if not p.get("thread_ts"):
            return {"ok": False, "error": "invalid_thread_ts"}
        if not channel.startswith("D") and not (p.get("recipient_user_id") and p.get("recipient_team_id")):
            return {"ok": False, "error": "missing_recipient_user_id"}
        text = str(p.get("markdown_text") or "")
        if len(text) > MAX_MARKDOWN_CHARS:
            return {"ok": False, "error": "msg_too_long"}
        msg = self._new_bot_message(ws, p, text, True)
        msg.stream_state = "streaming"
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _api_chat_appendStream(self, p: JsonDict, ws: Workspace) -> JsonDict:
        msg = self._find(ws, str(p.get("channel")), str(p.get("ts")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if msg.stream_state == "streaming" and (
            (
                self.stream_expires_after_appends is not None
                and msg.appends >= self.stream_expires_after_appends
            )
            or (
                self.stream_expires_after_chars is not None
                and len(msg.text) >= self.stream_expires_after_chars
            )
        ):
            msg.stream_state = "expired"
        if msg.stream_state != "streaming":
            return {"ok": False, "error": STREAM_NOT_STREAMING}
        text = str(p.get("markdown_text") or "")
        if not text:
            return {"ok": False, "error": "no_text"}
        if len(text) > MAX_MARKDOWN_CHARS:
            return {"ok": False, "error": "msg_too_long"}
        msg.text += text
        msg.appends += 1
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _api_chat_stopStream(self, p: JsonDict, ws: Workspace) -> JsonDict:
        msg = self._find(ws, str(p.get("channel")), str(p.get("ts")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if msg.stream_state != "streaming":
            return {"ok": False, "error": STREAM_NOT_STREAMING}
        text = str(p.get("markdown_text") or "")
        if len(text) > MAX_MARKDOWN_CHARS:
            return {"ok": False, "error": "msg_too_long"}
        msg.text += text
        if p.get("blocks"):
            msg.blocks = p.get("blocks")
        msg.stream_state = "stopped"
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "message": {"text": msg.text}}

    def _api_chat_delete(self, p: JsonDict, ws: Workspace) -> JsonDict:
        msg = self._find(ws, str(p.get("channel")), str(p.get("ts")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        self.messages.remove(msg)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def expire_stream(self, channel: str, ts: str) -> None:
        """Expire one native stream now, as Slack does after a stream is left open too long."""
        for msg in self.messages:
            if msg.channel == channel and msg.ts == ts and msg.stream_state == "streaming":
                msg.stream_state = "expired"

    def _api_conversations_replies(self, p: JsonDict, ws: Workspace) -> JsonDict:
        channel, ts = str(p.get("channel")), str(p.get("ts"))
        found = [
            {"type": "message", "user": m.user, "text": m.text, "ts": m.ts, "thread_ts": m.thread_ts or m.ts}
            for m in self.messages
            if m.team_id == ws.team_id and m.channel == channel and (m.ts == ts or m.thread_ts == ts)
        ]
        if not found:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "messages": found, "has_more": False}
