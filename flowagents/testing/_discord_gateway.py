"""Gateway half of the fake Discord: HELLO, IDENTIFY/READY, GUILD_CREATE, heartbeats, RESUME, zlib-stream."""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from flowagents.testing._discord_state import World, iso_now, member_payload

# Opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0,
    1,
    2,
    6,
    7,
    9,
    10,
    11,
)
PRIVILEGED = {1 << 1: "GUILD_MEMBERS", 1 << 8: "GUILD_PRESENCES", 1 << 15: "MESSAGE_CONTENT"}
MESSAGE_CONTENT = 1 << 15


class Connection:
    """One websocket connection, with its zlib-stream compressor."""

    def __init__(self, ws: web.WebSocketResponse, compress: bool) -> None:
        self.ws = ws
        self._zlib = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one gateway payload (compressed into the shared zlib stream when asked for)."""
        data = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return
            if self._zlib is None:
                await self.ws.send_str(data)
            else:
                raw = self._zlib.compress(data.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(raw)


@dataclass
class Session:
    """A gateway session (survives disconnects until invalidated) and its event log for RESUME."""

    id: str
    shard_id: int
    shard_count: int
    intents: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    conn: Connection | None = None
    valid: bool = True


class Gateway:
    """The websocket endpoint and the dispatching of events to the right shard."""

    def __init__(self, world: World, url: Any) -> None:
        self.world = world
        self._url = url
        self.sessions: dict[str, Session] = {}
        self.shards: dict[int, Session] = {}  # shard id -> current session
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()

    # -- websocket ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one gateway connection."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(ws, request.query.get("compress") == "zlib-stream")
        session: Session | None = None
        hello = {"heartbeat_interval": self.world.config.heartbeat_interval_ms}
        await conn.send({"op": HELLO, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op, data = payload.get("op"), payload.get("d")
                if op == HEARTBEAT:
                    self.heartbeats += 1
                    await conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op == IDENTIFY:
                    session = await self._identify(conn, data)
                elif op == RESUME:
                    session = await self._resume(conn, data)
        finally:
            if session is not None and session.conn is conn:
                session.conn = None
        return ws

    async def _identify(self, conn: Connection, data: dict[str, Any]) -> Session | None:
        if data.get("token") != self.world.config.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return None
        shard_id, shard_count = data.get("shard") or [0, 1]
        if not 0 <= shard_id < shard_count:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return None
        intents = int(data.get("intents", 0))
        denied = [bit for bit in PRIVILEGED if intents & bit]
        content_denied = MESSAGE_CONTENT in denied and not self.world.config.allow_message_content
        if content_denied or any(bit != MESSAGE_CONTENT for bit in denied):
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        self.identifies += 1
        session = Session(
            id=secrets.token_hex(16), shard_id=shard_id, shard_count=shard_count, intents=intents
        )
        session.conn = conn
        old = self.shards.get(shard_id)
        if old is not None:
            old.valid = False
        self.sessions[session.id] = session
        self.shards[shard_id] = session
        guilds = [g for g in self.world.guilds.values() if (g.id >> 22) % shard_count == shard_id]
        ready = {
            "v": 10,
            "user": {**self.world.bot_user(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self._url(),
            "shard": [shard_id, shard_count],
            "application": {"id": str(self.world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self._emit(session, "READY", ready)
        for guild in guilds:
            await self._emit(session, "GUILD_CREATE", self.guild_payload(guild.id))
        self.ready.set()
        return session

    async def _resume(self, conn: Connection, data: dict[str, Any]) -> Session | None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or not session.valid or data.get("token") != self.world.config.token:
            await conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        self.resumes += 1
        session.conn = conn
        seen = int(data.get("seq") or 0) - self.world.config.replay_overlap
        for event in [e for e in session.log if e["s"] > seen]:
            await conn.send(event)
        await self._emit(session, "RESUMED", {})
        self.resumed.set()
        return session

    async def _emit(self, session: Session, name: str, data: dict[str, Any]) -> None:
        session.seq += 1
        event = {"op": DISPATCH, "t": name, "s": session.seq, "d": data}
        if name not in ("READY", "RESUMED"):
            session.log.append(event)
        if session.conn is not None:
            await session.conn.send(event)

    # -- used by FakeDiscord --------------------------------------------------------------------------

    def shard_for(self, guild_id: int | None) -> Session:
        """The current session serving ``guild_id`` (DMs go to shard 0)."""
        if not self.shards:
            raise RuntimeError(
                "No bot is connected to the fake gateway yet; await fake.wait_until_ready() first."
            )
        count = next(iter(self.shards.values())).shard_count
        shard_id = 0 if guild_id is None else (guild_id >> 22) % count
        try:
            return self.shards[shard_id]
        except KeyError:
            raise RuntimeError(f"No connected session runs shard {shard_id} (of {count}).") from None

    async def dispatch(
        self, guild_id: int | None, name: str, data: dict[str, Any], *, times: int = 1
    ) -> None:
        """Send an event to the shard of ``guild_id``; ``times`` > 1 simulates duplicate deliveries."""
        session = self.shard_for(guild_id)
        for _ in range(times):
            await self._emit(session, name, data)

    async def send_op(self, shard_id: int, op: int, d: Any) -> None:
        """Send a raw opcode (RECONNECT, INVALID_SESSION) on a shard's live connection."""
        session = self.shards[shard_id]
        if session.conn is not None:
            await session.conn.send({"op": op, "d": d, "s": None, "t": None})
            if op == INVALID_SESSION and not d:
                session.valid = False

    async def drop(self, shard_id: int, code: int = 4000) -> None:
        """Close a shard's websocket from the server side (the client should RESUME)."""
        session = self.shards[shard_id]
        if session.conn is not None:
            conn, session.conn = session.conn, None
            await conn.ws.close(code=code, message=b"Unknown error")

    def message_content_allowed(self, guild_id: int | None) -> bool:
        """Whether the session for ``guild_id`` identified with the message-content intent."""
        return bool(self.shard_for(guild_id).intents & MESSAGE_CONTENT)

    def guild_payload(self, guild_id: int) -> dict[str, Any]:
        """GUILD_CREATE data for a guild."""
        guild = self.world.guilds[guild_id]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": "1",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "splash": None,
            "discovery_splash": None,
            "application_id": None,
            "max_video_channel_users": 25,
            "features": [],
            "roles": [
                {
                    "id": str(guild.id),
                    "name": "@everyone",
                    "permissions": "2248473465835073",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "channels": [c.to_payload() for c in guild.channels.values() if c.type != 11],
            "threads": [c.to_payload() for c in guild.channels.values() if c.type == 11],
            "members": [member_payload(self.world.bot_id) | {"user": self.world.bot_user()}],
            "member_count": 2,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "joined_at": iso_now(),
            "premium_subscription_count": 0,
        }
