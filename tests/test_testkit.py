"""The test kit for bot authors: the driver, its fixtures, and a platform behind the same `say`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from flowagents import (
    AgentResult,
    AgentStatus,
    InputField,
    MessageChunkEvent,
    Orchestrator,
    StandardAgent,
    StoreError,
    flowagent,
)
from flowagents.storage.memory import MemoryStore
from flowagents.testing import ConversationDriver, PlatformConversation, RecordingOrchestrator, Transcript

pytest_plugins = ["flowagents.testing.driver"]


@flowagent(triggers=["kit pizza"], description="Order a pizza (test kit)")
class KitPizzaAgent(StandardAgent):
    size: str = InputField("Which size?", choices=["small", "large"])
    count: int = InputField("How many?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(
            AgentStatus.COMPLETED,
            f"{self.count} {self.size} pizza(s) coming up.",
            data={"size": self.size, "count": self.count},
        )


@flowagent(triggers=["kit story"], description="Tell a story (test kit)")
class KitStoryAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        for word in ("Once ", "upon ", "a time."):
            yield word


@flowagent(triggers=["kit silent"], description="Finish without a word (test kit)")
class KitSilentAgent(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED)  # no text: Discord shows "Done.", Slack nothing


class KitGuarded(Orchestrator):
    """Refuses "spam" with a reply and "hush" without one; a hook bug for "crash"."""

    async def prepare_context(self, message: str, context: dict[str, Any]) -> dict[str, Any]:
        if "crash" in message:
            raise RuntimeError("bug in a hook")
        return context

    async def should_process(self, message: str, context: dict[str, Any]) -> bool:
        return "spam" not in message and "hush" not in message

    async def rejection_reply(self, message: str, context: dict[str, Any]) -> str:
        return "No spam, please." if "spam" in message else ""


QUIET_AGENTS = [KitStoryAgent, KitSilentAgent]


class KitStoreDown(MemoryStore):
    async def claim_delivery(self, delivery_id: str, lease_seconds: float) -> bool:
        raise StoreError("the store is down")


@pytest.fixture
def flowagents_agents() -> Sequence[type[StandardAgent]]:  # overrides the kit's fixture
    return [KitPizzaAgent, KitStoryAgent]


async def test_driver_walks_a_multi_turn_conversation() -> None:
    async with ConversationDriver.for_agents([KitPizzaAgent], tenant_id="acme", user_id="ann") as chat:
        first = await chat.say("kit pizza")
        first.expect_routed("KitPizzaAgent", strategy="trigger", min_confidence=0.5)
        first.expect_question(field="size", choices=["small", "large"]).expect_reply(equals="Which size?")
        (await chat.say("large")).expect_question(field="count", contains="How many")
        done = await chat.say("3")
        done.expect_completed(agent="KitPizzaAgent", data={"size": "large", "count": 3})
        done.expect_reply(contains="3 large pizza(s)")
        assert done.result is not None and done.result.tenant_id == "acme"
        assert [s.new_state for s in done.states] == [AgentStatus.RUNNING, AgentStatus.COMPLETED]
        assert len(chat.history) == 3 and chat.active_agent is None


async def test_failed_expectation_shows_the_whole_turn() -> None:
    async with ConversationDriver.for_agents([KitPizzaAgent]) as chat:
        turn = await chat.say("what's the weather?")
        turn.expect_no_match()
        with pytest.raises(AssertionError) as caught:
            turn.expect_completed(agent="KitPizzaAgent")
    message = str(caught.value)
    assert "expected the agent to complete" in message
    assert (
        "> what's the weather?" in message
        and "[routing]" in message
        and "Sorry, I didn't get that." in message
    )


async def test_streamed_chunks_and_event_order(conversation: ConversationDriver) -> None:
    turn = await conversation.say("kit story")
    assert turn.chunks == ["Once ", "upon ", "a time."]
    turn.expect_events("routing", "state_change", "message_chunk", "message_chunk", "result")
    turn.expect_completed(agent="KitStoryAgent").expect_reply(equals="Once upon a time.")
    with pytest.raises(AssertionError):
        turn.expect_events("result", "routing")


async def test_fixture_orchestrator_uses_the_overridden_agents(flowagents_orchestrator: Orchestrator) -> None:
    assert {a.name for a in flowagents_orchestrator.agent_catalog()} == {"KitPizzaAgent", "KitStoryAgent"}


async def test_participants_and_duplicate_deliveries(conversation: ConversationDriver) -> None:
    bob = conversation.as_user("bob")
    (await conversation.say("kit pizza", delivery_id="ev-1")).expect_question(field="size")
    (await conversation.say("kit pizza", delivery_id="ev-1")).expect_duplicate()
    (await bob.say("small")).expect_no_match()  # bob has no pizza order waiting
    (await conversation.say("small")).expect_question(field="count")
    assert conversation.active_agent is not None and conversation.active_agent.asking == "count"


async def test_expect_rejected_passes_for_a_refusal_only() -> None:
    async with ConversationDriver.for_agents([KitPizzaAgent], orchestrator_class=KitGuarded) as chat:
        (await chat.say("kit pizza spam")).expect_rejected(contains="No spam")
        (await chat.say("kit pizza hush")).expect_rejected().expect_reply(equals="")
        crashed = await chat.say("kit pizza crash")
    crashed.expect_error("internal_error").expect_status(AgentStatus.FAILED)
    with pytest.raises(AssertionError) as caught:
        crashed.expect_rejected()
    message = str(caught.value)
    assert "but the turn failed (internal_error)" in message and "> kit pizza crash" in message
    assert "[error]" in message and "[result]" in message
    async with ConversationDriver.for_agents([KitPizzaAgent], store=KitStoreDown()) as chat:
        outage = await chat.say("kit pizza", delivery_id="ev-1")
    outage.expect_error("store_unavailable")
    with pytest.raises(AssertionError, match=r"the turn failed \(store_unavailable\)"):
        outage.expect_rejected()


@flowagent(triggers=["kit gated"], description="Stream, wait for the test, stream again (test kit)")
class KitGatedAgent(StandardAgent):
    gate: asyncio.Event | None = None

    async def on_running(self, msg: str) -> AsyncIterator[str]:
        assert KitGatedAgent.gate is not None
        yield "first "
        await KitGatedAgent.gate.wait()
        yield "second"


async def test_stream_yields_events_as_they_happen() -> None:
    KitGatedAgent.gate = gate = asyncio.Event()
    seen: list[str] = []
    async with ConversationDriver.for_agents([KitGatedAgent]) as chat, asyncio.timeout(10):
        # the timeout is a deadlock guard only: a stream that buffered the turn would never open the gate
        async for event in chat.stream("kit gated"):
            seen.append(event.type)
            if isinstance(event, MessageChunkEvent) and event.content == "first ":
                assert not gate.is_set()  # the agent is still waiting: this chunk came as it happened
                gate.set()
    assert seen[0] == "routing" and seen[-1] == "result"
    assert seen.count("message_chunk") == 2 and gate.is_set()


async def test_a_slack_conversation_behind_the_same_interface() -> None:
    from flowagents.testing.slack import FakeSlack, SlackTestBot

    async with ConversationDriver.for_agents([KitPizzaAgent, KitStoryAgent]) as local, FakeSlack() as fake:
        recorder = RecordingOrchestrator(local.orchestrator)
        async with SlackTestBot(fake, recorder, workspace=fake.add_workspace("T1KIT")) as bot:
            chat = PlatformConversation.over_slack(bot, team_id="T1KIT", user="U1")
            turns: list[Transcript] = [await chat.say("kit story"), await chat.say("kit pizza")]
    turns[0].expect_completed(agent="KitStoryAgent").expect_reply(equals="Once upon a time.")
    assert turns[0].platform_text == "Once upon a time."
    turns[1].expect_question(field="size", choices=["small", "large"])
    assert turns[1].result is not None and turns[1].result.tenant_id == "T1KIT"
    assert turns[1].platform_text == "Which size?"


async def test_slack_platform_text_is_only_this_turns_answer() -> None:
    from flowagents.testing.slack import FakeSlack, SlackTestBot

    async with (
        ConversationDriver.for_agents(QUIET_AGENTS, orchestrator_class=KitGuarded) as local,
        FakeSlack() as fake,
    ):
        recorder = RecordingOrchestrator(local.orchestrator)
        async with SlackTestBot(fake, recorder, workspace=fake.add_workspace("T1KIT")) as bot:
            chat = PlatformConversation.over_slack(bot, team_id="T1KIT", user="U1")
            story = await chat.say("kit story")
            silent = await chat.say("kit silent")
            hushed = await chat.say("hush")
    assert story.platform_text == "Once upon a time."
    silent.expect_completed(agent="KitSilentAgent").expect_reply(equals="")
    assert silent.platform_text == ""  # Slack posts nothing for an empty answer
    hushed.expect_rejected()
    assert hushed.platform_text == ""


@contextlib.asynccontextmanager
async def discord_chat(local: ConversationDriver, fake: Any) -> AsyncIterator[PlatformConversation]:
    """A `PlatformConversation` with user 7 over a `DiscordChannel` connected to `fake`."""
    from adapters.discord import DiscordChannel

    recorder = RecordingOrchestrator(local.orchestrator)
    channel = DiscordChannel(recorder, token=fake.token, api_url=fake.api_url, gateway_url=fake.gateway_url)
    runner = asyncio.create_task(channel.start())
    try:
        await channel.wait_until_ready(timeout=10)
        yield PlatformConversation.over_discord(fake, recorder, user_id=7)
    finally:
        await channel.stop()
        await asyncio.wait_for(runner, 10)


async def test_a_discord_conversation_behind_the_same_interface() -> None:
    from flowagents.testing.discord import FakeDiscord

    async with ConversationDriver.for_agents([KitPizzaAgent, KitStoryAgent]) as local, FakeDiscord() as fake:
        fake.add_guild("Acme")
        async with discord_chat(local, fake) as chat:
            story = await chat.say("kit story")
            pizza = await chat.say("kit pizza")
            size = await chat.say("large")
    story.expect_completed(agent="KitStoryAgent")
    assert story.platform_text == "Once upon a time."
    pizza.expect_question(field="size")
    size.expect_question(field="count").expect_reply(equals="How many?")
    assert size.platform_text == "How many?"


async def test_discord_turns_without_text_settle() -> None:
    from flowagents.testing.discord import FakeDiscord

    async with (
        ConversationDriver.for_agents(QUIET_AGENTS, orchestrator_class=KitGuarded) as local,
        FakeDiscord() as fake,
        discord_chat(local, fake) as chat,
    ):
        story = await chat.say("kit story")
        silent = await chat.say("kit silent")  # used to wait 10 s for the text, then TimeoutError
        hushed = await chat.say("hush")
        again = await chat.say("kit story")
        shown = [m.content for m in fake.bot_messages(fake.dm_channel_id(7))]
    assert story.platform_text == "Once upon a time."
    silent.expect_completed(agent="KitSilentAgent").expect_reply(equals="")
    assert silent.platform_text == "Done."
    hushed.expect_rejected()
    assert hushed.platform_text == ""  # a silent refusal: nothing shown (not the previous answer)
    assert again.platform_text == "Once upon a time."
    assert shown == ["Once upon a time.", "Done.", "Once upon a time."]  # each answer delivered by its say


async def test_platform_conversation_names_what_never_settled() -> None:
    async with ConversationDriver.for_agents([KitStoryAgent]) as local:
        recorder = RecordingOrchestrator(local.orchestrator)
        ignored = PlatformConversation(recorder, send=lambda text: asyncio.sleep(0), timeout=0.05)
        with pytest.raises(TimeoutError, match=r"no turn for 'hello' reached the orchestrator in 0\.05 s"):
            await ignored.say("hello")

        delivering = asyncio.Event()
        release = asyncio.Event()

        async def platform_turn() -> None:  # reads the turn, then is slow to deliver it
            async for _ in recorder.process_stream("kit story"):
                pass
            delivering.set()
            await release.wait()

        task = asyncio.create_task(platform_turn())
        await delivering.wait()
        turn = recorder.turns[-1]
        with pytest.raises(TimeoutError, match=r"still delivering the answer to 'kit story' after 0\.05 s"):
            await recorder.wait_delivered(turn, timeout=0.05)
        release.set()
        await recorder.wait_delivered(turn, timeout=5)
        assert task.done()


# ------------------------------------------------------------------------------------ docs examples

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
async def test_docs_operations_examples_run(source: str) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, str(DOC), "exec"), namespace)
    for name, function in list(namespace.items()):
        if not (name.startswith("test_") and inspect.iscoroutinefunction(function)):
            continue
        if "conversation" in inspect.signature(function).parameters:
            agents = namespace["flowagents_agents"].__wrapped__()
            async with ConversationDriver.for_agents(agents) as chat:
                await function(chat)
        else:
            await function()
