"""The loopback fake Discord itself: gateway protocol, zlib-stream, rate limits and interaction rules."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import aiohttp

from flowagents.testing.discord import FakeDiscord, FakeDiscordConfig, fake_discord

__all__ = ["fake_discord"]  # the test kit's pytest fixture, used below

ZLIB_SUFFIX = b"\x00\x00\xff\xff"


class GatewayClient:
    """A minimal raw gateway client that inflates the zlib-stream transport."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inflator = zlib.decompressobj()

    async def recv(self) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        assert msg.data.endswith(ZLIB_SUFFIX)
        payload: dict[str, Any] = json.loads(self.inflator.decompress(msg.data))
        return payload

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_str(json.dumps({"op": op, "d": d}))


def identify(fake: FakeDiscord, intents: int = 0, shard: list[int] | None = None) -> dict[str, Any]:
    return {"token": fake.token, "intents": intents, "properties": {}, "shard": shard or [0, 1]}


async def test_gateway_handshake_with_zlib_stream_heartbeat_and_resume() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        guild = fake.add_guild("Acme")
        url = fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream"
        async with http.ws_connect(url) as ws:
            gw = GatewayClient(ws)
            hello = await gw.recv()
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41250
            await gw.send(1, None)
            assert (await gw.recv())["op"] == 11
            await gw.send(2, identify(fake))
            ready = await gw.recv()
            assert ready["t"] == "READY" and ready["s"] == 1
            assert ready["d"]["guilds"] == [{"id": str(guild.id), "unavailable": True}]
            created = await gw.recv()
            assert created["t"] == "GUILD_CREATE" and created["d"]["id"] == str(guild.id)
            session_id = ready["d"]["session_id"]
            # Guild messages without a mention arrive without content (no message-content intent).
            await fake.user_message("secret", user_id=5, guild_id=guild.id, channel_id=guild.channel_ids[0])
            event = await gw.recv()
            assert event["t"] == "MESSAGE_CREATE" and event["d"]["content"] == ""
        await fake.user_message("while away", user_id=5)  # DM, buffered for the session
        async with http.ws_connect(url) as ws:
            gw = GatewayClient(ws)
            assert (await gw.recv())["op"] == 10
            await gw.send(6, {"token": fake.token, "session_id": session_id, "seq": event["s"]})
            replayed = await gw.recv()
            assert replayed["t"] == "MESSAGE_CREATE" and replayed["d"]["content"] == "while away"
            assert (await gw.recv())["t"] == "RESUMED"
        async with http.ws_connect(url) as ws:
            gw = GatewayClient(ws)
            await gw.recv()
            await gw.send(6, {"token": fake.token, "session_id": "nope", "seq": 1})
            invalid = await gw.recv()
            assert invalid["op"] == 9 and invalid["d"] is False


async def test_gateway_rejects_bad_tokens_and_disallowed_intents() -> None:
    async with (
        FakeDiscord(FakeDiscordConfig(allow_message_content=False)) as fake,
        aiohttp.ClientSession() as http,
    ):
        async with http.ws_connect(fake.gateway_url) as ws:
            await ws.receive()
            await ws.send_str(json.dumps({"op": 2, "d": {**identify(fake), "token": "wrong"}}))
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4004
        async with http.ws_connect(fake.gateway_url) as ws:
            await ws.receive()
            await ws.send_str(json.dumps({"op": 2, "d": identify(fake, intents=1 << 15)}))
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4014


async def test_rest_rate_limit_headers_and_429_bodies() -> None:
    config = FakeDiscordConfig(route_limit=2, route_window=60, global_limit=3, global_window=60)
    async with FakeDiscord(config) as fake, aiohttp.ClientSession() as http:
        channel_id = fake.add_guild().channel_ids[0]
        auth = {"Authorization": f"Bot {fake.token}"}
        url = f"{fake.api_url}/channels/{channel_id}/messages"
        first = await http.post(url, json={"content": "a"}, headers=auth)
        assert first.status == 200 and first.headers["Content-Type"] == "application/json"
        assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
        assert float(first.headers["X-RateLimit-Reset-After"]) > 0 and first.headers["X-RateLimit-Bucket"]
        await http.post(url, json={"content": "b"}, headers=auth)
        limited = await http.post(url, json={"content": "c"}, headers=auth)
        assert limited.status == 429
        body = await limited.json()
        assert body["global"] is False and body["retry_after"] > 0 and limited.headers["Retry-After"]
        assert limited.headers["X-RateLimit-Scope"] == "user"
        other = await http.get(f"{fake.api_url}/users/@me", headers=auth)
        assert other.status == 429 and (await other.json())["global"] is True
        assert other.headers["X-RateLimit-Global"] == "true"
        assert len(fake.rate_limited) == 2
        assert [m.content for m in fake.bot_messages(channel_id)] == ["a", "b"]


async def test_message_validation_errors() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        channel_id = fake.add_guild().channel_ids[0]
        auth = {"Authorization": f"Bot {fake.token}"}
        url = f"{fake.api_url}/channels/{channel_id}/messages"
        too_long = await http.post(url, json={"content": "x" * 2001}, headers=auth)
        body = await too_long.json()
        assert too_long.status == 400 and body["code"] == 50035
        assert body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        empty = await http.post(url, json={"content": ""}, headers=auth)
        assert empty.status == 400 and (await empty.json())["code"] == 50006
        unknown = await http.post(f"{fake.api_url}/channels/1/messages", json={"content": "x"}, headers=auth)
        assert unknown.status == 404 and (await unknown.json())["code"] == 10003
        anonymous = await http.post(url, json={"content": "x"})
        assert anonymous.status == 401


async def test_interaction_acknowledgement_rules() -> None:
    async with FakeDiscord(FakeDiscordConfig(ack_deadline=0.2, interaction_ttl=0.4)) as fake:
        guild = fake.add_guild()
        fake.world.commands[None] = [{"id": "1", "name": "ask", "type": 1}]
        inter = fake._new_interaction(
            2, {"id": "1", "name": "ask"}, guild_id=guild.id, channel_id=guild.channel_ids[0], user_id=1
        )
        late = fake._new_interaction(
            2, {"id": "1", "name": "ask"}, guild_id=guild.id, channel_id=guild.channel_ids[0], user_id=1
        )
        async with aiohttp.ClientSession() as http:
            cb = f"{fake.api_url}/interactions/{inter.id}/{inter.token}/callback?with_response=true"
            first = await http.post(cb, json={"type": 5})
            assert first.status == 200
            assert (await first.json())["resource"]["message"]["flags"] & (1 << 7)  # "thinking..."
            again = await http.post(cb, json={"type": 5})
            assert again.status == 400 and (await again.json())["code"] == 40060
            hook = f"{fake.api_url}/webhooks/{fake.bot_id}/{inter.token}"
            edited = await http.patch(f"{hook}/messages/@original", json={"content": "done"})
            assert edited.status == 200 and fake.final_text(inter) == "done"
            await asyncio.sleep(0.45)
            expired = await http.patch(f"{hook}/messages/@original", json={"content": "later"})
            assert expired.status == 401 and (await expired.json())["code"] == 50027
            too_late = await http.post(
                f"{fake.api_url}/interactions/{late.id}/{late.token}/callback", json={"type": 5}
            )
            assert too_late.status == 404 and (await too_late.json())["code"] == 10062


async def test_fake_discord_fixture_serves_rest(fake_discord: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{fake_discord.api_url}/gateway/bot", headers={"Authorization": "Bot x"})
        assert resp.status == 401
        resp = await http.get(
            f"{fake_discord.api_url}/gateway/bot", headers={"Authorization": f"Bot {fake_discord.token}"}
        )
        assert (await resp.json())["url"] == fake_discord.gateway_url
