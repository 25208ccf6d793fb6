"""A loopback fake Slack for testing bots over Slack with the real slack-bolt and slack_sdk.

The fake is an aiohttp server on 127.0.0.1 (random port) that speaks:

- the Web API (``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.delete``,
  ``chat.startStream`` / ``chat.appendStream`` / ``chat.stopStream``, ``conversations.replies``,
  ``apps.connections.open``, ``oauth.v2.access``) with per-workspace, per-method rate limits that
  answer real HTTP 429s with ``Retry-After``;
- Socket Mode (``hello``, envelopes with ``envelope_id``, ack tracking, redelivery with
  ``retry_attempt`` / ``retry_reason``);
- signed HTTP Events API deliveries (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``,
  ``X-Slack-Retry-Num``) and the OAuth install redirect.

Only the base URL changes: give your bot ``SLACK_API_URL=fake.api_url``. Usage in pytest::

    pytest_plugins = ["flowagents.testing.slack"]

    async def test_hello(fake_slack):
        ws = fake_slack.add_workspace("T1")
        ...  # start your SlackChannel with api_url=fake_slack.api_url, bot_token=ws.bot_token
        event = fake_slack.app_mention("T1", channel="C1", user="U1", text=f"<@{ws.bot_user_id}> hi")
        await fake_slack.send_socket_event(fake_slack.event_callback("T1", event))
        await fake_slack.wait_for(lambda: fake_slack.bot_messages(channel="C1"))

See docs/slack.md for the full guide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from flowagents.testing._slack_fake import (
    SLACK_TIER_LIMITS,
    STREAM_NOT_STREAMING,
    ApiCall,
    Delivery,
    FakeMessage,
    FakeSlack,
    TierLimit,
    Workspace,
)
from flowagents.testing._slack_harness import SlackTestBot

__all__ = [
    "SLACK_TIER_LIMITS",
    "STREAM_NOT_STREAMING",
    "ApiCall",
    "Delivery",
    "FakeMessage",
    "FakeSlack",
    "SlackTestBot",
    "TierLimit",
    "Workspace",
    "fake_slack",
]


@pytest_asyncio.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A started :class:`FakeSlack` with Slack's real rate-limit tiers; closed after the test."""
    async with FakeSlack() as fake:
        yield fake
