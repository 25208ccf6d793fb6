"""Runs the real Slack channel against a :class:`FakeSlack`, for end-to-end bot tests."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from flowagents.testing._slack_fake import Delivery, FakeMessage, FakeSlack, JsonDict, Workspace

if TYPE_CHECKING:
    from adapters.slack import SlackChannel


class SlackTestBot:
    """A :class:`adapters.slack.SlackChannel` wired to a fake Slack, with helpers to talk to it.

    ``mode="socket"`` connects over Socket Mode; ``mode="http"`` serves signed HTTP events on
    127.0.0.1. ``oauth=True`` uses the OAuth install flow instead of a single bot token (install
    workspaces with :meth:`install`). Extra keyword arguments go to ``SlackChannel``.
    """

    def __init__(
        self,
        fake: FakeSlack,
        orchestrator: Any,
        *,
        mode: Literal["socket", "http"] = "socket",
        workspace: Workspace | None = None,
        oauth: bool = False,
        installation_db_path: str | None = None,
        **channel_kwargs: Any,
    ) -> None:
        self.fake = fake
        self.orchestrator = orchestrator
        self.mode = mode
        self.oauth = oauth
        self.workspace = workspace
        self._db = installation_db_path
        self._kwargs = channel_kwargs
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.channel: SlackChannel | None = None

    async def start(self) -> SlackTestBot:
        from adapters._slack_pacing import RateLimit
        from adapters.slack import SlackChannel

        if self.workspace is None and not self.oauth:
            self.workspace = next(iter(self.fake.workspaces.values()), None) or self.fake.add_workspace(
                "T0TEST"
            )
        kwargs: dict[str, Any] = {
            "api_url": self.fake.api_url,
            "edit_interval": 0.05,
            "rate_limits": {m: RateLimit(lim.calls, lim.per_seconds) for m, lim in self.fake.limits.items()},
        }
        if self.oauth:
            kwargs.update(
                client_id=self.fake.client_id,
                client_secret=self.fake.client_secret,
                installation_db_path=self._db,
            )
        else:
            assert self.workspace is not None
            kwargs["bot_token"] = self.workspace.bot_token
        if self.mode == "socket":
            kwargs["app_token"] = self.fake.app_token
        else:
            kwargs["signing_secret"] = self.fake.signing_secret
        kwargs.update(self._kwargs)
        web_app = web.Application()
        sock: socket.socket | None = None
        if self.oauth or self.mode == "http":
            # Bind first: the OAuth redirect URI has to name the port.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            if self.oauth:
                kwargs.setdefault("redirect_uri", self.url + "/slack/oauth_redirect")
        self.channel = SlackChannel(self.orchestrator, **kwargs)
        self.channel.attach(web_app)
        if sock is not None:
            self._runner = web.AppRunner(web_app, handle_signals=False)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()
        await self.channel.connect()
        if self.mode == "socket":
            await self.fake.wait_socket_connected()
        return self

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> SlackTestBot:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ talking to the bot

    async def install(self, team_id: str, *, enterprise_id: str | None = None) -> Workspace:
        """Install the app into ``team_id`` through the OAuth flow (``oauth=True`` only)."""
        status = await self.fake.install(self.url + "/slack/install", team_id, enterprise_id=enterprise_id)
        if status != 200:
            raise AssertionError(f"OAuth install into {team_id} failed with HTTP {status}")
        return self.fake.workspaces[team_id]

    async def deliver(self, payload: JsonDict, **http_options: Any) -> Delivery:
        """Deliver an Events API payload over this bot's transport."""
        if self.mode == "socket":
            return await self.fake.send_socket_event(payload)
        return await self.fake.send_http_event(self.url + "/slack/events", payload, **http_options)

    async def redeliver(self, delivery: Delivery, **http_options: Any) -> Delivery:
        """Deliver the same event again as Slack's retry does."""
        if self.mode == "socket":
            return await self.fake.redeliver_socket(delivery)
        http_options.setdefault("retry_num", delivery.retry_attempt + 1)
        return await self.fake.send_http_event(self.url + "/slack/events", delivery.payload, **http_options)

    async def mention(
        self, team_id: str, *, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> Delivery:
        """``@bot text`` in a channel (or a thread of it)."""
        ws = self.fake.workspaces[team_id]
        event = self.fake.app_mention(
            team_id, channel=channel, user=user, text=f"<@{ws.bot_user_id}> {text}", thread_ts=thread_ts
        )
        return await self.deliver(self.fake.event_callback(team_id, event))

    async def say(
        self,
        team_id: str,
        *,
        channel: str,
        user: str,
        text: str,
        thread_ts: str | None = None,
        channel_type: str = "channel",
        **extra: Any,
    ) -> Delivery:
        """A plain message (``channel_type="im"`` for a DM)."""
        event = self.fake.user_message(
            team_id,
            channel=channel,
            user=user,
            text=text,
            thread_ts=thread_ts,
            channel_type=channel_type,
            **extra,
        )
        return await self.deliver(self.fake.event_callback(team_id, event))

    async def dm(self, team_id: str, *, user: str, text: str, channel: str | None = None) -> Delivery:
        """A direct message to the bot."""
        return await self.say(team_id, channel=channel or f"D{user}", user=user, text=text, channel_type="im")

    async def click(self, team_id: str, *, message: FakeMessage, user: str, label: str) -> Delivery:
        """Click the button labelled ``label`` on one of the bot's messages."""
        for block in message.blocks or []:
            for element in block.get("elements", []):
                if element.get("type") == "button" and element.get("text", {}).get("text") == label:
                    payload = self.fake.block_action(
                        team_id,
                        message=message,
                        user=user,
                        action_id=element["action_id"],
                        value=element["value"],
                        block_id=block.get("block_id"),
                    )
                    return await self.deliver(payload)
        raise AssertionError(f"no button {label!r} on message {message.ts}")

    async def settle(self, handled: int, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the channel has fully handled ``handled`` events in total (answers sent)."""
        channel = self.channel
        assert channel is not None
        await self.fake.wait_for(lambda: channel.events_handled >= handled, timeout=timeout)
