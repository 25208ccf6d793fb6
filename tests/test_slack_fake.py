"""The fake Slack itself, driven by the plain slack_sdk clients (the test kit's own contract)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from flowagents.testing.slack import STREAM_NOT_STREAMING, FakeSlack, TierLimit


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(limits={"chat.update": TierLimit(2, 60.0)}) as started:
        yield started


async def test_web_api_answers_like_slack_and_records_calls(fake: FakeSlack) -> None:
    ws = fake.add_workspace("T1")
    client = AsyncWebClient(token=ws.bot_token, base_url=fake.api_url)
    auth = await client.auth_test()
    assert (auth["team_id"], auth["user_id"]) == ("T1", ws.bot_user_id)
    posted = await client.chat_postMessage(channel="C1", text="hello", thread_ts="1.000001")
    await client.chat_update(channel="C1", ts=posted["ts"], text="hello again")
    [message] = fake.bot_messages(channel="C1")
    assert (message.text, message.thread_ts, message.edits) == ("hello again", "1.000001", 1)
    assert [c.method for c in fake.calls] == ["auth.test", "chat.postMessage", "chat.update"]
    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"


async def test_rate_limit_answers_429_with_retry_after(fake: FakeSlack) -> None:
    ws = fake.add_workspace("T1")
    client = AsyncWebClient(token=ws.bot_token, base_url=fake.api_url)
    posted = await client.chat_postMessage(channel="C1", text="x")
    for _ in range(2):
        await client.chat_update(channel="C1", ts=posted["ts"], text="y")
    with pytest.raises(SlackApiError) as limited:
        await client.chat_update(channel="C1", ts=posted["ts"], text="z")
    assert limited.value.response.status_code == 429
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    assert len(fake.rate_limited_calls) == 1


async def test_native_stream_lifecycle_and_expiry(fake: FakeSlack) -> None:
    ws = fake.add_workspace("T1")
    client = AsyncWebClient(token=ws.bot_token, base_url=fake.api_url)
    with pytest.raises(SlackApiError):  # streaming in a channel needs the recipient
        await client.chat_startStream(channel="C1", thread_ts="1.000001", markdown_text="a")
    started = await client.chat_startStream(
        channel="C1",
        thread_ts="1.000001",
        markdown_text="**a**",
        recipient_team_id="T1",
        recipient_user_id="U1",
    )
    await client.chat_appendStream(channel="C1", ts=started["ts"], markdown_text=" b")
    fake.expire_stream("C1", started["ts"])
    with pytest.raises(SlackApiError) as expired:
        await client.chat_appendStream(channel="C1", ts=started["ts"], markdown_text=" c")
    assert expired.value.response["error"] == STREAM_NOT_STREAMING
    [message] = fake.bot_messages(channel="C1")
    assert (message.text, message.stream_state) == ("**a** b", "expired")


async def test_socket_mode_envelopes_acks_and_redelivery(fake: FakeSlack) -> None:
    fake.add_workspace("T1")
    received: list[SocketModeRequest] = []

    async def listener(client: SocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    socket = SocketModeClient(app_token=fake.app_token, web_client=AsyncWebClient(base_url=fake.api_url))
    socket.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    try:
        await socket.connect()  # type: ignore[no-untyped-call]
        await fake.wait_socket_connected()
        event = fake.app_mention("T1", channel="C1", user="U1", text="<@UBOT0001> hi")
        first = await fake.send_socket_event(fake.event_callback("T1", event))
        await asyncio.wait_for(first.acked.wait(), 5)
        retry = await fake.redeliver_socket(first, reason="timeout")
        await asyncio.wait_for(retry.acked.wait(), 5)
    finally:
        await socket.close()  # type: ignore[no-untyped-call]
    assert [r.retry_attempt for r in received] == [0, 1]
    assert received[1].retry_reason == "timeout"
    assert received[0].envelope_id != received[1].envelope_id
    payloads: list[dict[str, Any]] = [r.payload for r in received]
    assert payloads[0]["event_id"] == payloads[1]["event_id"]
