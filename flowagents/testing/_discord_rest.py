"""REST half of the fake Discord: the endpoints a bot uses, with Discord's rate-limit headers and 429s."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from flowagents.testing._discord_ratelimit import FixedWindow, SlidingWindow
from flowagents.testing._discord_state import FakeInteraction, FakeMessage, RestCall, World

Handler = Callable[["Request"], Awaitable[web.Response]]

LOADING = 1 << 7  # message flag: "Bot is thinking..."
EPHEMERAL = 1 << 6


class Request:
    """A parsed REST request handed to an endpoint."""

    def __init__(self, raw: web.Request, params: dict[str, str], body: Any) -> None:
        self.raw = raw
        self.params = params
        self.body = body

    def int(self, name: str) -> int:
        """A numeric path parameter."""
        return int(self.params[name])


def jresp(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with Discord's exact ``Content-Type: application/json`` (discord.py checks it)."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)


def error(status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> web.Response:
    """A Discord JSON error response."""
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return jresp(body, status=status)


def form_error(field: str, code: str, message: str) -> web.Response:
    """A 50035 Invalid Form Body error for one field (``a.b.c`` paths)."""
    node: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(field.split(".")):
        node = {part: node}
    return error(400, 50035, "Invalid Form Body", node)


def validate_message(body: dict[str, Any], *, creating: bool) -> web.Response | None:
    """Discord's checks on message payloads (content, embeds, components)."""
    content = body.get("content")
    if content is not None and len(content) > 2000:
        return form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        return form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        for key, limit in (("title", 256), ("description", 4096)):
            value = embed.get(key) or ""
            total += len(value)
            if len(value) > limit:
                return form_error(
                    f"embeds.{i}.{key}", "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length."
                )
        fields = embed.get("fields") or []
        if len(fields) > 25:
            return form_error(f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for j, fld in enumerate(fields):
            total += len(fld.get("name", "")) + len(fld.get("value", ""))
            if not fld.get("name") or not fld.get("value"):
                return form_error(f"embeds.{i}.fields.{j}", "BASE_TYPE_REQUIRED", "This field is required")
            if len(fld["name"]) > 256 or len(fld["value"]) > 1024:
                return form_error(f"embeds.{i}.fields.{j}", "BASE_TYPE_MAX_LENGTH", "Field too long.")
    if total > 6000:
        return form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Embed size exceeds maximum size of 6000")
    rows = body.get("components") or []
    if len(rows) > 5:
        return form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    for i, row in enumerate(rows):
        items = row.get("components") or []
        if not 1 <= len(items) <= 5:
            return form_error(
                f"components.{i}.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
            )
        for j, item in enumerate(items):
            if len(item.get("custom_id", "")) > 100 or len(item.get("label") or "") > 80:
                return form_error(f"components.{i}.components.{j}", "BASE_TYPE_MAX_LENGTH", "Too long.")
            if len(item.get("options") or []) > 25:
                return form_error(
                    f"components.{i}.components.{j}.options", "BASE_TYPE_MAX_LENGTH", "Too many."
                )
    if creating and not (content or "").strip() and not embeds and not rows:
        return error(400, 50006, "Cannot send an empty message")  # Discord trims content first
    return None


def empty_after_edit(msg: FakeMessage, body: dict[str, Any]) -> web.Response | None:
    """Discord refuses an edit that would leave a message with nothing to show (blank content counts)."""
    content = body["content"] if "content" in body else msg.content
    embeds = body["embeds"] if "embeds" in body else msg.embeds
    rows = body["components"] if "components" in body else msg.components
    if not (content or "").strip() and not embeds and not rows:
        return error(400, 50006, "Cannot send an empty message")
    return None


class RestApi:
    """The aiohttp handlers of the fake's REST API (mounted under ``/api/v10``)."""

    def __init__(self, world: World, gateway_url: Callable[[], str]) -> None:
        self.world = world
        self.gateway_url = gateway_url
        self.buckets: dict[str, FixedWindow] = {}
        self.edit_budgets: dict[int, SlidingWindow] = {}
        self.global_window = FixedWindow(world.config.global_limit, world.config.global_window)
        self.rate_limited: list[RestCall] = []
        self.changed = asyncio.Event()
        r = self._routes = []  # type: list[tuple[str, re.Pattern[str], Handler]]
        for method, pattern, handler in (
            ("GET", r"/gateway/bot", self.gateway_bot),
            ("GET", r"/gateway", self.gateway),
            ("GET", r"/users/@me", self.me),
            ("GET", r"/applications/@me", self.application),
            ("GET", r"/oauth2/applications/@me", self.application),
            ("GET", r"/applications/(?P<app>\d+)/commands", self.get_commands),
            ("PUT", r"/applications/(?P<app>\d+)/commands", self.put_commands),
            ("GET", r"/applications/(?P<app>\d+)/guilds/(?P<guild>\d+)/commands", self.get_commands),
            ("PUT", r"/applications/(?P<app>\d+)/guilds/(?P<guild>\d+)/commands", self.put_commands),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", self.callback),
            ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self.followup),
            (
                "GET",
                r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)",
                self.get_webhook_msg,
            ),
            (
                "PATCH",
                r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)",
                self.edit_webhook_msg,
            ),
            (
                "DELETE",
                r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/(?P<mid>@original|\d+)",
                self.delete_webhook_msg,
            ),
            ("GET", r"/channels/(?P<channel>\d+)", self.get_channel),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self.create_message),
            ("GET", r"/channels/(?P<channel>\d+)/messages/(?P<mid>\d+)", self.get_message),
            ("PATCH", r"/channels/(?P<channel>\d+)/messages/(?P<mid>\d+)", self.edit_message),
            ("DELETE", r"/channels/(?P<channel>\d+)/messages/(?P<mid>\d+)", self.delete_message),
            ("POST", r"/channels/(?P<channel>\d+)/typing", self.typing),
            ("POST", r"/users/@me/channels", self.create_dm),
        ):
            r.append((method, re.compile(pattern + "$"), handler))

    # -- plumbing -----------------------------------------------------------------------------------

    async def handle(self, raw: web.Request) -> web.Response:
        """Entry point for every ``/api/v10/...`` request: record, rate-limit, dispatch."""
        path = "/" + raw.match_info["tail"]
        body: Any = None
        if raw.can_read_body:
            if raw.content_type == "multipart/form-data":
                form = await raw.post()
                payload = form.get("payload_json")
                body = json.loads(str(payload)) if payload is not None else {}
            else:
                text = await raw.text()
                body = json.loads(text) if text else None
        call = RestCall(
            method=raw.method,
            path=path,
            json=body,
            query=dict(raw.query),
            at=asyncio.get_running_loop().time(),
        )
        self.world.calls.append(call)
        try:
            resp = await self._dispatch(raw, path, body, call)
        finally:
            self.changed.set()
        call.status = resp.status
        call.headers = {
            k: v for k, v in resp.headers.items() if k.lower().startswith(("x-ratelimit", "retry"))
        }
        if resp.status == 429:
            self.rate_limited.append(call)
        return resp

    async def _dispatch(self, raw: web.Request, path: str, body: Any, call: RestCall) -> web.Response:
        found = next(
            (
                (handler, m)
                for method, pattern, handler in self._routes
                if method == raw.method and (m := pattern.match(path))
            ),
            None,
        )
        if found is None:
            return error(404, 0, "404: Not Found")
        handler, match = found
        params = match.groupdict()
        loop_now = asyncio.get_running_loop().time()
        authed = raw.headers.get("Authorization") == f"Bot {self.world.config.token}"
        is_webhook = path.startswith("/webhooks/") or path.startswith("/interactions/")
        if not is_webhook and not authed:
            return error(401, 0, "401: Unauthorized")
        if authed:
            wait = self.global_window.take(loop_now)
            if wait:
                return self._too_many(wait, is_global=True, scope="global", headers={})
        key, bucket = self._bucket(raw.method, path, params)
        headers: dict[str, str] = {}
        if bucket is not None:
            call.bucket = key
            wait = bucket.take(loop_now)
            headers = bucket.headers(loop_now, key)
            if wait:
                return self._too_many(wait, is_global=False, scope="user", headers=headers)
        if raw.method == "PATCH" and "/messages/" in path:
            channel_id = self._edited_channel(params)
            if channel_id is not None:
                budget = self.edit_budgets.setdefault(
                    channel_id, SlidingWindow(self.world.config.edit_limit, self.world.config.edit_window)
                )
                wait = budget.take(loop_now)
                if wait:
                    return self._too_many(wait, is_global=False, scope="shared", headers=headers)
        resp = await handler(Request(raw, params, body))
        for name, value in headers.items():
            resp.headers[name] = value
        return resp

    def _bucket(self, method: str, path: str, params: dict[str, str]) -> tuple[str, FixedWindow | None]:
        cfg = self.world.config
        if path.startswith("/interactions/"):
            return "", None
        if "token" in params:
            key = f"webhook:{params['token'][-16:]}"
            limit, window = cfg.webhook_limit, cfg.webhook_window
        elif "channel" in params:
            kind = "messages" if "/messages" in path else path.rsplit("/", 1)[-1]
            key = f"{method}:channel:{params['channel']}:{kind}"
            limit, window = cfg.route_limit, cfg.route_window
        else:
            key = f"{method}:{path}"
            limit, window = cfg.route_limit, cfg.route_window
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = FixedWindow(limit, window)
        return key, bucket

    def _edited_channel(self, params: dict[str, str]) -> int | None:
        if "channel" in params:
            return int(params["channel"])
        msg = self._webhook_message(params)
        return msg.channel_id if isinstance(msg, FakeMessage) else None

    @staticmethod
    def _too_many(wait: float, *, is_global: bool, scope: str, headers: dict[str, str]) -> web.Response:
        body = {"message": "You are being rate limited.", "retry_after": round(wait, 3), "global": is_global}
        if is_global:
            body["code"] = 0
        hdrs = dict(headers)
        hdrs.update(
            {"Retry-After": str(max(1, math.ceil(wait))), "X-RateLimit-Scope": scope, "Via": "1.1 google"}
        )
        if is_global:
            hdrs["X-RateLimit-Global"] = "true"
        return jresp(body, status=429, headers=hdrs)

    # -- misc -----------------------------------------------------------------------------------------

    async def gateway_bot(self, req: Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return jresp(
            {
                "url": self.gateway_url(),
                "shards": self.world.config.recommended_shards,
                "session_start_limit": limit,
            }
        )

    async def gateway(self, req: Request) -> web.Response:
        return jresp({"url": self.gateway_url()})

    async def me(self, req: Request) -> web.Response:
        user = self.world.bot_user()
        user.update({"verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US"})
        return jresp(user)

    async def application(self, req: Request) -> web.Response:
        w = self.world
        return jresp(
            {
                "id": str(w.application_id),
                "name": w.config.bot_name,
                "icon": None,
                "description": "",
                "summary": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": {**w.bot_user(), "bot": False, "username": "owner"},
                "verify_key": "0" * 64,
                "team": None,
                "flags": 1 << 19 if w.config.allow_message_content else 0,
                "interactions_endpoint_url": None,
                "bot": w.bot_user(),
            }
        )

    async def get_commands(self, req: Request) -> web.Response:
        guild = req.params.get("guild")
        return jresp(self.world.commands.get(int(guild) if guild else None, []))

    async def put_commands(self, req: Request) -> web.Response:
        if int(req.params["app"]) != self.world.application_id:
            return error(403, 50001, "Missing Access")
        guild = req.params.get("guild")
        guild_id = int(guild) if guild else None
        if guild_id is not None and guild_id not in self.world.guilds:
            return error(403, 50001, "Missing Access")
        out = []
        for cmd in req.body or []:
            if not re.fullmatch(r"[-_\w]{1,32}", cmd.get("name", "")):
                return form_error("0.name", "APPLICATION_COMMAND_INVALID_NAME", "Invalid command name")
            stored = dict(cmd)
            stored.update(
                {
                    "id": str(self.world.snowflake()),
                    "application_id": str(self.world.application_id),
                    "version": "1",
                }
            )
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            stored.setdefault("type", 1)
            stored.setdefault("description", "")
            stored.setdefault("options", [])
            out.append(stored)
        self.world.commands[guild_id] = out
        return jresp(out)

    async def get_channel(self, req: Request) -> web.Response:
        channel = self.world.channels.get(req.int("channel"))
        if channel is None:
            return error(404, 10003, "Unknown Channel")
        return jresp(channel.to_payload())

    async def typing(self, req: Request) -> web.Response:
        if req.int("channel") not in self.world.channels:
            return error(404, 10003, "Unknown Channel")
        return web.Response(status=204)

    async def create_dm(self, req: Request) -> web.Response:
        user_id = int((req.body or {}).get("recipient_id", 0))
        if not user_id:
            return form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        return jresp(self.world.dm_channel(user_id).to_payload())

    # -- channel messages -----------------------------------------------------------------------------

    def _new_message(self, channel_id: int, body: dict[str, Any], **extra: Any) -> FakeMessage:
        channel = self.world.channels[channel_id]
        ref = (body.get("message_reference") or {}).get("message_id")
        msg = FakeMessage(
            id=self.world.snowflake(),
            channel_id=channel_id,
            guild_id=channel.guild_id,
            author_id=self.world.bot_id,
            content=body.get("content") or "",
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            reference_id=int(ref) if ref else None,
            flags=int(body.get("flags") or 0),
            **extra,
        )
        msg.history.append(msg.content)
        self.world.messages[msg.id] = msg
        return msg

    @staticmethod
    def _apply_edit(msg: FakeMessage, body: dict[str, Any]) -> None:
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = list(body["embeds"] or [])
        if "components" in body:
            msg.components = list(body["components"] or [])
        msg.flags &= ~LOADING
        msg.edits += 1
        msg.history.append(msg.content)

    async def create_message(self, req: Request) -> web.Response:
        channel_id = req.int("channel")
        if channel_id not in self.world.channels:
            return error(404, 10003, "Unknown Channel")
        body = req.body or {}
        bad = validate_message(body, creating=True)
        if bad is not None:
            return bad
        ref = (body.get("message_reference") or {}).get("message_id")
        if (
            ref
            and int(ref) not in self.world.messages
            and body["message_reference"].get("fail_if_not_exists", True)
        ):
            return form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        msg = self._new_message(channel_id, body)
        return jresp(self.world.message_payload(msg))

    def _channel_message(self, req: Request) -> FakeMessage | web.Response:
        msg = self.world.messages.get(req.int("mid"))
        if msg is None or msg.deleted or msg.channel_id != req.int("channel"):
            return error(404, 10008, "Unknown Message")
        return msg

    async def get_message(self, req: Request) -> web.Response:
        msg = self._channel_message(req)
        if isinstance(msg, web.Response):
            return msg
        return jresp(self.world.message_payload(msg))

    async def edit_message(self, req: Request) -> web.Response:
        msg = self._channel_message(req)
        if isinstance(msg, web.Response):
            return msg
        if msg.author_id != self.world.bot_id or msg.webhook_id is not None:
            return error(403, 50005, "Cannot edit a message authored by another user")
        bad = validate_message(req.body or {}, creating=False) or empty_after_edit(msg, req.body or {})
        if bad is not None:
            return bad
        self._apply_edit(msg, req.body or {})
        return jresp(self.world.message_payload(msg))

    async def delete_message(self, req: Request) -> web.Response:
        msg = self._channel_message(req)
        if isinstance(msg, web.Response):
            return msg
        msg.deleted = True
        return web.Response(status=204)

    # -- interactions ---------------------------------------------------------------------------------

    def _interaction(self, token: str) -> FakeInteraction | web.Response:
        iid = self.world.tokens.get(token)
        if iid is None:
            return error(401, 50027, "Invalid Webhook Token")
        inter = self.world.interactions[iid]
        if asyncio.get_running_loop().time() - inter.created > self.world.config.interaction_ttl:
            return error(401, 50027, "Invalid Webhook Token")
        return inter

    async def callback(self, req: Request) -> web.Response:
        inter = self.world.interactions.get(req.int("iid"))
        if inter is None or inter.token != req.params["token"]:
            return error(404, 10062, "Unknown interaction")
        if inter.acknowledged:
            return error(400, 40060, "Interaction has already been acknowledged.")
        if asyncio.get_running_loop().time() - inter.created > self.world.config.ack_deadline:
            return error(404, 10062, "Unknown interaction")
        body = req.body or {}
        cb_type = int(body.get("type", 0))
        data = body.get("data") or {}
        if cb_type not in (4, 5, 6, 7, 9) or (cb_type in (6, 7) and inter.type != 3):
            return form_error(
                "type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type"
            )
        msg: FakeMessage | None = None
        if cb_type == 4:
            bad = validate_message(data, creating=True)
            if bad is not None:
                return bad
            msg = self._new_message(
                inter.channel_id, data, webhook_id=self.world.application_id, interaction_id=inter.id
            )
        elif cb_type == 5:
            msg = self._new_message(
                inter.channel_id,
                {"content": "", "flags": LOADING | int(data.get("flags") or 0)},
                webhook_id=self.world.application_id,
                interaction_id=inter.id,
            )
        elif cb_type in (6, 7):
            msg = self.world.messages[int(inter.payload["message"]["id"])]
            if cb_type == 7:
                bad = validate_message(data, creating=False) or empty_after_edit(msg, data)
                if bad is not None:
                    return bad
                self._apply_edit(msg, data)
        inter.callback_type = cb_type
        inter.callback_count += 1
        inter.original_id = msg.id if msg is not None else None
        if req.raw.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        out: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_id": str(msg.id) if msg else None,
                "response_message_loading": cb_type == 5,
                "response_message_ephemeral": False,
            }
        }
        if msg is not None and cb_type in (4, 5, 7):
            out["resource"] = {"type": cb_type, "message": self.world.message_payload(msg)}
        return jresp(out)

    def _webhook_message(self, params: dict[str, str]) -> FakeMessage | web.Response:
        if int(params["app"]) != self.world.application_id:
            return error(404, 10015, "Unknown Webhook")
        inter = self._interaction(params["token"])
        if isinstance(inter, web.Response):
            return inter
        if params["mid"] == "@original":
            if inter.original_id is None:
                return error(404, 10008, "Unknown Message")
            return self.world.messages[inter.original_id]
        mid = int(params["mid"])
        if mid != inter.original_id and mid not in inter.followup_ids:
            return error(404, 10008, "Unknown Message")
        msg = self.world.messages[mid]
        return error(404, 10008, "Unknown Message") if msg.deleted else msg

    async def get_webhook_msg(self, req: Request) -> web.Response:
        msg = self._webhook_message(req.params)
        if isinstance(msg, web.Response):
            return msg
        return jresp(self.world.message_payload(msg))

    async def edit_webhook_msg(self, req: Request) -> web.Response:
        msg = self._webhook_message(req.params)
        if isinstance(msg, web.Response):
            return msg
        bad = validate_message(req.body or {}, creating=False) or empty_after_edit(msg, req.body or {})
        if bad is not None:
            return bad
        self._apply_edit(msg, req.body or {})
        return jresp(self.world.message_payload(msg))

    async def delete_webhook_msg(self, req: Request) -> web.Response:
        msg = self._webhook_message(req.params)
        if isinstance(msg, web.Response):
            return msg
        msg.deleted = True
        return web.Response(status=204)

    async def followup(self, req: Request) -> web.Response:
        if int(req.params["app"]) != self.world.application_id:
            return error(404, 10015, "Unknown Webhook")
        inter = self._interaction(req.params["token"])
        if isinstance(inter, web.Response):
            return inter
        if not inter.acknowledged:
            return error(404, 10015, "Unknown Webhook")
        body = req.body or {}
        bad = validate_message(body, creating=True)
        if bad is not None:
            return bad
        original = self.world.messages.get(inter.original_id or 0)
        if inter.callback_type == 5 and original is not None and original.flags & LOADING:
            # Discord: the first follow-up after a deferred response replaces the "thinking" message.
            self._apply_edit(original, body)
            msg = original
        else:
            msg = self._new_message(inter.channel_id, body, webhook_id=self.world.application_id)
            inter.followup_ids.append(msg.id)
        if req.raw.query.get("wait") not in ("1", "true", "True"):
            return web.Response(status=204)
        return jresp(self.world.message_payload(msg))
