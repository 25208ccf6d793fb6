"""The public Slack test kit (fixture, buttons) and channel lifecycle / configuration behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.slack import SlackChannel
from flowagents import (
    AgentResult,
    AgentStatus,
    ConfigurationError,
    InputField,
    Orchestrator,
    StandardAgent,
    flowagent,
)
from flowagents.testing.slack import FakeSlack, SlackTestBot, fake_slack

__all__ = ["fake_slack"]  # the kit's pytest fixture, used below by name


class Gate:
    """Lets a test hold the slow agent; a fresh event per test (events bind to one loop)."""

    event = asyncio.Event()


@flowagent(triggers=["order pizza"], name="SlackPizza", description="Orders a pizza.")
class SlackPizzaAgent(StandardAgent):
    size = InputField("Which size?", choices=["small", "large"])

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(status=AgentStatus.COMPLETED, raw_message=f"Ordered a {self.size} pizza.")


@flowagent(triggers=["slow job"], name="SlackSlow", description="Takes its time.")
class SlackSlowAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        yield "Working on it... "
        await Gate.event.wait()
        yield "done."


@pytest.fixture
async def orchestrator() -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(agents=[SlackPizzaAgent, SlackSlowAgent])
    await orch.initialize()
    yield orch
    await orch.close()


async def test_kit_fixture_with_real_tiers_answers_a_dm(
    fake_slack: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fake_slack.add_workspace("T1")
    async with SlackTestBot(fake_slack, orchestrator, workspace=ws) as bot:
        await bot.dm("T1", user="U1", text="order pizza")
        await bot.settle(1)
    [question] = fake_slack.bot_messages(channel="DU1")
    assert question.text == "Which size?"


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_choice_buttons_answer_the_question(
    fake_slack: FakeSlack, orchestrator: Orchestrator, mode: str
) -> None:
    ws = fake_slack.add_workspace("T1")
    async with SlackTestBot(fake_slack, orchestrator, workspace=ws, mode=mode) as bot:  # type: ignore[arg-type]
        await bot.mention("T1", channel="C1", user="U1", text="order pizza")
        await bot.settle(1)
        [question] = fake_slack.bot_messages(channel="C1")
        assert question.text.startswith("Which size?")
        await bot.click("T1", message=question, user="U1", label="large")
        await bot.settle(2)
    texts = [m.text for m in fake_slack.bot_messages(channel="C1")]
    assert texts[-1] == "Ordered a large pizza."
    assert all(m.thread_ts == question.thread_ts for m in fake_slack.bot_messages(channel="C1"))


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_choice_button_clicked_twice_answers_once(
    fake_slack: FakeSlack, orchestrator: Orchestrator, mode: str
) -> None:
    ws = fake_slack.add_workspace("T1")
    async with SlackTestBot(fake_slack, orchestrator, workspace=ws, mode=mode) as bot:  # type: ignore[arg-type]
        await bot.dm("T1", user="U1", text="order pizza")
        await bot.settle(1)
        [question] = fake_slack.bot_messages(channel="DU1")
        await bot.click("T1", message=question, user="U1", label="large")
        await bot.click("T1", message=question, user="U1", label="large")  # a double click
        await bot.settle(3)
        await bot.click("T1", message=question, user="U1", label="small")  # long after, on the old question
        await bot.settle(4)
    # The second and third click were not the user's next message (a help reply for "large", "small").
    assert [m.text for m in fake_slack.bot_messages(channel="DU1")] == [
        "Which size?",
        "Ordered a large pizza.",
    ]


async def test_only_the_asked_user_answers_with_a_button(
    fake_slack: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fake_slack.add_workspace("T1")
    async with SlackTestBot(fake_slack, orchestrator, workspace=ws) as bot:
        await bot.mention("T1", channel="C1", user="U1", text="order pizza")
        await bot.settle(1)
        [question] = fake_slack.bot_messages(channel="C1")
        await bot.click("T1", message=question, user="U2", label="small")  # someone else in the channel
        await bot.settle(2)
        await bot.click("T1", message=question, user="U1", label="large")
        await bot.settle(3)
    assert [m.text for m in fake_slack.bot_messages(channel="C1")] == [
        "Which size?",
        "Ordered a large pizza.",
    ]
    [notice] = fake_slack.ephemeral_messages
    assert (notice.user, notice.channel, notice.thread_ts) == ("U2", "C1", question.thread_ts)
    assert notice.text == "This question is for <@U1>."


async def test_thread_follow_ups_by_mention_when_no_message_events(
    fake_slack: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fake_slack.add_workspace("T1")
    async with SlackTestBot(fake_slack, orchestrator, workspace=ws) as bot:
        first = await bot.mention("T1", channel="C1", user="U1", text="order pizza")
        await bot.settle(1)
        root = first.payload["event"]["ts"]
        await bot.mention("T1", channel="C1", user="U1", text="small", thread_ts=root)
        await bot.settle(2)
    assert [m.text for m in fake_slack.bot_messages(channel="C1")] == [
        "Which size?",
        "Ordered a small pizza.",
    ]


async def test_enterprise_grid_tenant_is_enterprise_and_team(
    fake_slack: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fake_slack.add_workspace("T1", enterprise_id="E1")
    async with SlackTestBot(fake_slack, orchestrator, workspace=ws) as bot:
        await bot.dm("T1", user="U1", text="order pizza")
        await bot.settle(1)
    active = orchestrator.get_active_agents(tenant_id="E1:T1")
    assert [(a.agent, a.user_id, a.conversation_id) for a in active] == [("SlackPizza", "U1", "DU1")]
    assert orchestrator.get_active_agents(tenant_id="T1") == []


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_events_are_acknowledged_before_the_work_is_done(
    fake_slack: FakeSlack, orchestrator: Orchestrator, mode: str
) -> None:
    ws = fake_slack.add_workspace("T1")
    Gate.event = asyncio.Event()
    try:
        async with SlackTestBot(fake_slack, orchestrator, workspace=ws, mode=mode) as bot:  # type: ignore[arg-type]
            delivery = await bot.dm("T1", user="U1", text="slow job")
            await asyncio.wait_for(delivery.acked.wait(), 5)
            assert "done." not in fake_slack.transcript(channel="DU1")  # the agent is still working
            Gate.event.set()
            await bot.settle(1)
    finally:
        Gate.event.set()
    assert fake_slack.transcript(channel="DU1") == "Working on it... done."


async def test_redelivery_during_a_running_turn_gives_one_answer(
    fake_slack: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fake_slack.add_workspace("T1")
    Gate.event = asyncio.Event()
    try:
        async with SlackTestBot(fake_slack, orchestrator, workspace=ws) as bot:
            first = await bot.dm("T1", user="U1", text="slow job")
            await fake_slack.wait_for(lambda: fake_slack.bot_messages(channel="DU1"))
            retry = await bot.redeliver(first)
            await asyncio.wait_for(retry.acked.wait(), 5)
            Gate.event.set()
            await bot.settle(2)
    finally:
        Gate.event.set()
    assert [m.text for m in fake_slack.bot_messages(channel="DU1")] == ["Working on it... done."]


async def test_stop_finishes_running_turns_and_refuses_new_events(
    fake_slack: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fake_slack.add_workspace("T1")
    Gate.event = asyncio.Event()
    bot = await SlackTestBot(fake_slack, orchestrator, workspace=ws, mode="http").start()
    try:
        await bot.dm("T1", user="U1", text="slow job")
        await fake_slack.wait_for(lambda: fake_slack.bot_messages(channel="DU1"))
        assert bot.channel is not None
        stopping = asyncio.create_task(bot.channel.stop())
        await asyncio.sleep(0)
        late = await bot.dm("T1", user="U2", text="order pizza")
        assert late.http_status == 503  # not acknowledged: Slack will deliver it again later
        Gate.event.set()
        await stopping
    finally:
        Gate.event.set()
        await bot.stop()
    assert fake_slack.transcript(channel="DU1") == "Working on it... done."
    assert fake_slack.bot_messages(channel="DU2") == []


async def test_start_serves_until_stop(fake_slack: FakeSlack, orchestrator: Orchestrator) -> None:
    ws = fake_slack.add_workspace("T1")
    channel = SlackChannel(
        orchestrator, bot_token=ws.bot_token, app_token=fake_slack.app_token, api_url=fake_slack.api_url
    )
    serving = asyncio.create_task(channel.start())
    await fake_slack.wait_socket_connected()
    assert not serving.done()
    await channel.stop()
    await asyncio.wait_for(serving, 5)


def test_from_settings_reads_the_bots_settings() -> None:
    from types import SimpleNamespace

    from pydantic import SecretStr

    settings = SimpleNamespace(
        slack_bot_token=SecretStr("xoxb-1"),
        slack_app_token=None,
        slack_signing_secret=SecretStr("s3cret"),
        slack_client_id=None,
        slack_client_secret=None,
        slack_api_url="https://slack-gov.com/api",
        slack_installation_db=None,
        slack_respond_to_bots=True,
        flowagents_secret_key=None,
        flowagents_shutdown_grace=5.0,
    )
    channel = SlackChannel.from_settings(Orchestrator(agents=[SlackPizzaAgent]), settings)
    assert channel.mode == "http" and channel.api_url == "https://slack-gov.com/api/"
    assert channel.respond_to_bots and channel.shutdown_grace == 5.0


def test_from_env_reads_slack_settings() -> None:
    orch = Orchestrator(agents=[SlackPizzaAgent])
    assert SlackChannel.from_env(orch, env={}) is None
    socket = SlackChannel.from_env(
        orch,
        env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "SLACK_API_URL": "https://x.test/api"},
    )
    assert socket is not None and socket.mode == "socket" and socket.api_url == "https://x.test/api/"
    assert not socket.needs_http
    http = SlackChannel.from_env(orch, env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"})
    assert http is not None and http.mode == "http" and http.api_url == "https://slack.com/api/"
    assert http.needs_http
    with pytest.raises(ConfigurationError, match="SLACK_SIGNING_SECRET"):
        SlackChannel.from_env(orch, env={"SLACK_BOT_TOKEN": "xoxb-1"})
    with pytest.raises(ConfigurationError, match="SLACK_SIGNING_SECRET"):  # blank is no secret
        SlackChannel(orch, bot_token="xoxb-1", signing_secret="  ")
