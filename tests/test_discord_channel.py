"""End-to-end tests of the Discord channel: the real discord.py against the loopback fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import discord
import pytest

from adapters import discord as discord_adapter
from adapters.discord import DEFAULT_DM_TENANT, RESTARTING, DiscordChannel
from flowagents import AgentStatus, InputField, Orchestrator, StandardAgent, flowagent
from flowagents.errors import ConfigurationError
from flowagents.guards import RateLimit
from flowagents.testing._discord_rest import Request, error, jresp
from flowagents.testing.discord import FakeDiscord, FakeDiscordConfig, FakeGuild, FakeInteraction

# Scaled-down budgets: the fake enforces them, the channel paces within them.
EDIT_BUDGET = (5, 0.5)

LONG_ANSWER = "\n\n".join(f"Paragraph {i}: " + " ".join(f"w{i}_{j}" for j in range(40)) for i in range(10))


@flowagent(
    triggers=["book table"], name="DiscordBooking", description="Books a table.", examples=["book table"]
)
class DiscordBookingAgent(StandardAgent):
    guests: int = InputField("How many guests?")
    day: str = InputField("Which day?")

    async def on_running(self, msg: str) -> object:
        return self.make_result(
            status=AgentStatus.COMPLETED, raw_message=f"Booked for {self.guests} on {self.day}!"
        )


@flowagent(triggers=["order lunch"], name="DiscordLunch", description="Orders lunch.")
class DiscordLunchAgent(StandardAgent):
    dish: str = InputField("Which dish?", choices=["Pizza", "Salad", "Soup"])

    async def on_running(self, msg: str) -> object:
        return self.make_result(status=AgentStatus.COMPLETED, raw_message=f"Ordered {self.dish}.")


@flowagent(triggers=["tell story"], name="DiscordStory", description="Tells a story.")
class DiscordStoryAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        for word in ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "bot", "."]:
            yield word
            await asyncio.sleep(0.01)


@flowagent(triggers=["essay"], name="DiscordEssay", description="Writes a long essay.")
class DiscordEssayAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        for paragraph in LONG_ANSWER.split("\n\n"):
            yield paragraph + "\n\n"
            await asyncio.sleep(0.005)


@flowagent(triggers=["crash"], name="DiscordCrash", description="Always fails.")
class DiscordCrashAgent(StandardAgent):
    async def on_running(self, msg: str) -> object:
        raise RuntimeError("database password is hunter2")


CHATTY = " ".join(f"word{i}" for i in range(40))


@flowagent(triggers=["chatty"], name="DiscordChatty", description="Streams many small chunks.")
class DiscordChattyAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        words = CHATTY.split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "
            await asyncio.sleep(0.01)


GATE: dict[str, asyncio.Event] = {}


@flowagent(triggers=["slow answer"], name="DiscordSlow", description="Answers when released.")
class DiscordSlowAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        yield "First half. "
        await GATE["slow"].wait()
        yield "Second half."


CODE = "\n".join(f"    total += compute({i})  # step {i}" for i in range(80))
CODE_ANSWER = f"Here is the script:\n\n```python\ndef run():\n{CODE}\n```\n\nRun it with `python run.py`."


@flowagent(triggers=["write code"], name="DiscordCoder", description="Writes long code.")
class DiscordCoderAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        for line in CODE_ANSWER.splitlines(keepends=True):
            yield line
            await asyncio.sleep(0)


@flowagent(triggers=["blank start"], name="DiscordBlankStart", description="Starts with blank lines.")
class DiscordBlankStartAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        yield "\n\n"  # as LLMs often do before the first word
        await GATE["blank"].wait()
        yield "Here you go."


AGENTS = [
    DiscordCoderAgent,
    DiscordBlankStartAgent,
    DiscordBookingAgent,
    DiscordLunchAgent,
    DiscordStoryAgent,
    DiscordEssayAgent,
    DiscordCrashAgent,
    DiscordSlowAgent,
    DiscordChattyAgent,
]


STORY = "Once upon a time there was a bot."


@dataclass
class Env:
    fake: FakeDiscord
    channel: DiscordChannel
    orchestrator: Orchestrator
    guild: FakeGuild
    other: FakeGuild

    @property
    def channel_id(self) -> int:
        return self.guild.channel_ids[0]


@contextlib.asynccontextmanager
async def running(
    *, allow_429: bool = False, channel_options: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[Env]:
    """A fake Discord with two servers and a DiscordChannel connected to it."""
    settings = {
        "edit_limit": EDIT_BUDGET[0],
        "edit_window": EDIT_BUDGET[1],
        "heartbeat_interval_ms": 500,
        **config,
    }
    async with FakeDiscord(FakeDiscordConfig(**settings)) as fake:
        guild = fake.add_guild("Acme")
        other = fake.add_guild("Globex")
        orchestrator = Orchestrator(agents=AGENTS)
        await orchestrator.initialize()
        options: dict[str, Any] = {
            "edit_budget": EDIT_BUDGET,
            "guild_ready_timeout": 0.05,
            **(channel_options or {}),
        }
        channel = DiscordChannel(
            orchestrator,
            token=fake.token,
            api_url=fake.api_url,
            gateway_url=fake.gateway_url,
            guild_ids=[guild.id, other.id],
            **options,
        )
        runner = asyncio.create_task(channel.start())
        await channel.wait_until_ready(timeout=10)
        try:
            yield Env(fake, channel, orchestrator, guild, other)
        finally:
            await channel.stop()
            await asyncio.wait_for(runner, 10)
            await orchestrator.close()
        if not allow_429:
            assert not fake.rate_limited, f"unexpected 429s: {fake.rate_limited}"


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with running() as e:
        yield e


async def ask(
    env: Env, text: str, *, user_id: int = 42, guild: FakeGuild | None = None, times: int = 1
) -> FakeInteraction:
    guild = guild or env.guild
    return await env.fake.slash_command(
        "ask",
        {"message": text},
        user_id=user_id,
        guild_id=guild.id,
        channel_id=guild.channel_ids[0],
        times=times,
    )


async def test_commands_synced_to_configured_guilds(env: Env) -> None:
    names = {c["name"] for c in env.fake.world.commands[env.guild.id]}
    assert names == {"ask", "help", "cancel"}
    assert {c["name"] for c in env.fake.world.commands[env.other.id]} == names


async def test_ask_is_deferred_and_streamed_with_the_right_final_text(env: Env) -> None:
    inter = await ask(env, "tell story please")
    await env.fake.wait_for(lambda: env.fake.final_text(inter) == "Once upon a time there was a bot.")
    assert inter.callback_type == 5  # deferred ("thinking...") first
    callback = env.fake.calls_to("POST", "/callback")[0]
    first_edit = env.fake.calls_to("PATCH", "/messages/@original")[0]
    assert env.fake.calls.index(callback) < env.fake.calls.index(first_edit)
    assert len(env.fake.interaction_messages(inter)) == 1


def words(text: str) -> list[str]:
    return text.split()


async def test_dm_slot_filling_over_several_messages(env: Env) -> None:
    fake = env.fake
    dm = fake.dm_channel_id(7)
    await fake.user_message("book table please", user_id=7)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == ["How many guests?"])
    await fake.user_message("4", user_id=7)
    await fake.wait_for(lambda: len(fake.bot_messages(dm)) == 2)
    await fake.user_message("friday", user_id=7)
    await fake.wait_for(lambda: len(fake.bot_messages(dm)) == 3)
    assert [m.content for m in fake.bot_messages(dm)] == [
        "How many guests?",
        "Which day?",
        "Booked for 4 on friday!",
    ]
    assert fake.calls_to("POST", f"/channels/{dm}/typing"), "typing indicator while the agent works"


async def test_a_dm_that_mentions_the_bot_is_read_without_the_mention(env: Env) -> None:
    fake = env.fake
    dm = fake.dm_channel_id(8)
    await fake.user_message("book table please", user_id=8)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == ["How many guests?"])
    await fake.user_message("4", user_id=8, mention_bot=True)  # "@bot 4", as in a server channel
    await fake.wait_for(lambda: len(fake.bot_messages(dm)) == 2)
    assert fake.bot_messages(dm)[-1].content == "Which day?"


async def lunch_question(env: Env) -> Any:
    """Ask for lunch through /ask and return the question message once its buttons are there."""
    fake = env.fake
    inter = await ask(env, "order lunch")
    await fake.wait_for(
        lambda: (
            bool(fake.interaction_messages(inter)) and bool(fake.interaction_messages(inter)[-1].components)
        )
    )
    return fake.interaction_messages(inter)[-1]


async def test_choices_field_answered_by_a_button(env: Env) -> None:
    fake = env.fake
    question = await lunch_question(env)
    assert question.content == "Which dish?"
    labels = [c["label"] for row in question.components for c in row["components"]]
    assert labels == ["Pizza", "Salad", "Soup"]
    salad = next(cid for cid in question.custom_ids if cid.endswith(":Salad"))
    # Someone else cannot answer this user's question.
    stranger = await fake.click(question, salad, user_id=99)
    await fake.wait_for(lambda: stranger.acknowledged)
    assert fake.world.messages[question.id].components, "buttons stay for the asked user"
    click = await fake.click(question, salad, user_id=42)
    await fake.wait_for(lambda: fake.final_text(click).endswith("Ordered Salad."))
    assert fake.world.messages[question.id].components == []  # buttons removed after the answer
    assert "Salad" in fake.world.messages[question.id].content


async def test_a_button_clicked_twice_answers_once(env: Env) -> None:
    fake = env.fake
    question = await lunch_question(env)
    seen = dataclasses.replace(question, components=copy.deepcopy(question.components))
    salad = next(cid for cid in seen.custom_ids if cid.endswith(":Salad"))
    first = await fake.click(seen, salad, user_id=42)
    second = await fake.click(seen, salad, user_id=42)  # a double click: the buttons were still shown
    await fake.wait_for(lambda: first.acknowledged and second.acknowledged)
    await fake.wait_for(lambda: fake.final_text(first).endswith("Ordered Salad."))
    await env.channel.stop()  # lets every running turn finish
    # The second click was not the user's next message (it got a help reply with the agent list).
    assert [m.content for m in fake.interaction_messages(second) if m.id != question.id] == []
    assert "Salad" in fake.world.messages[question.id].content


async def test_many_choices_use_a_select_menu(env: Env) -> None:
    fake = env.fake

    @flowagent(triggers=["pick color"], name="DiscordColor", description="Picks a color.")
    class ColorAgent(StandardAgent):
        color: str = InputField("Which color?", choices=["red", "green", "blue", "cyan", "magenta", "yellow"])

        async def on_running(self, msg: str) -> object:
            return f"You picked {self.color}."

    orchestrator = Orchestrator(agents=[ColorAgent])
    await orchestrator.initialize()
    env.channel.orchestrator = orchestrator
    dm = fake.dm_channel_id(5)
    await fake.user_message("pick color", user_id=5)
    await fake.wait_for(lambda: bool(fake.bot_messages(dm)) and bool(fake.bot_messages(dm)[-1].components))
    question = fake.bot_messages(dm)[-1]
    menu = question.components[0]["components"][0]
    assert menu["type"] == 3 and [o["value"] for o in menu["options"]][:2] == ["red", "green"]
    pick = await fake.select(question, menu["custom_id"], ["blue"], user_id=5)
    await fake.wait_for(
        lambda: [m.content for m in fake.interaction_messages(pick)][-1:] == ["You picked blue."]
    )
    assert fake.world.messages[question.id].components == []
    await orchestrator.close()


async def test_help_lists_the_agents(env: Env) -> None:
    fake = env.fake
    inter = await fake.slash_command("help", user_id=1, guild_id=env.guild.id, channel_id=env.channel_id)
    await fake.wait_for(lambda: bool(fake.interaction_messages(inter)))
    embed = fake.interaction_messages(inter)[0].embeds[0]
    names = [f["name"] for f in embed["fields"]]
    assert "DiscordBooking" in names and "DiscordLunch" in names
    booking = next(f for f in embed["fields"] if f["name"] == "DiscordBooking")
    assert "Books a table." in booking["value"] and "book table" in booking["value"]


async def test_no_match_becomes_a_help_reply(env: Env) -> None:
    fake = env.fake
    inter = await ask(env, "what is the meaning of life")
    await fake.wait_for(lambda: any(m.embeds for m in fake.interaction_messages(inter)))
    last = fake.interaction_messages(inter)[-1]
    assert last.content.strip()
    assert "DiscordStory" in [f["name"] for f in last.embeds[0]["fields"]]


async def test_dm_senders_do_not_share_a_servers_rate_budget(env: Env) -> None:
    fake = env.fake
    env.orchestrator.guards = [RateLimit(per_user=(5, 60), per_tenant=(2, 60))]
    for user in (21, 22, 23):  # three people, one DM each: the DM tenant is no team
        await fake.user_message("tell story", user_id=user)
    for user in (21, 22, 23):
        dm = fake.dm_channel_id(user)
        await fake.wait_for(lambda dm=dm: [m.content for m in fake.bot_messages(dm)] == [STORY])
    for user in (24, 25, 26):  # a server is one team: its budget is shared
        await fake.user_message(
            "tell story", user_id=user, guild_id=env.guild.id, channel_id=env.channel_id, mention_bot=True
        )
    busy = "I'm getting a lot of messages from your team right now. Please try again in 30 seconds."
    await fake.wait_for(
        lambda: sorted(m.content for m in fake.bot_messages(env.channel_id)) == sorted([STORY, STORY, busy])
    )


async def test_two_servers_with_the_same_user_id_are_kept_apart(env: Env) -> None:
    fake = env.fake
    first = await ask(env, "book table", user_id=42)
    await fake.wait_for(lambda: fake.final_text(first) == "How many guests?")
    second = await ask(env, "2", user_id=42, guild=env.other)
    await fake.wait_for(
        lambda: any(m.embeds for m in fake.interaction_messages(second))
    )  # no match in Globex
    third = await ask(env, "3", user_id=42)
    await fake.wait_for(lambda: fake.final_text(third) == "Which day?")  # Acme's booking continues
    assert {a.tenant_id for a in env.orchestrator.get_active_agents(tenant_id=str(env.guild.id))} == {
        str(env.guild.id)
    }
    assert env.orchestrator.get_active_agents(tenant_id=str(env.other.id)) == []


async def test_dms_use_their_own_tenant(env: Env) -> None:
    fake = env.fake
    await fake.user_message("book table", user_id=8)
    await fake.wait_for(lambda: bool(fake.bot_messages(fake.dm_channel_id(8))))
    active = env.orchestrator.get_active_agents(tenant_id=DEFAULT_DM_TENANT)
    assert [a.agent for a in active] == ["DiscordBooking"]


async def test_ten_conversations_stream_at_once_in_one_channel(env: Env) -> None:
    fake = env.fake
    inters = [await ask(env, "chatty", user_id=100 + i) for i in range(10)]
    await fake.wait_for(lambda: all(fake.final_text(i) == CHATTY for i in inters), timeout=30)
    assert not fake.rate_limited
    assert env.channel.rate_limited == 0
    assert env.channel.pacer.waits > 0  # the channel's edit budget really was shared
    assert all(len(fake.interaction_messages(i)) == 1 for i in inters)
    edits = fake.calls_to("PATCH", "/messages/@original")
    assert len(edits) < 10 * len(CHATTY.split())  # chunks were coalesced


async def test_long_answer_is_split_at_paragraph_boundaries(env: Env) -> None:
    fake = env.fake
    assert 2400 < len(LONG_ANSWER) < 2700
    inter = await ask(env, "essay")
    await fake.wait_for(lambda: fake.final_text(inter).strip() == LONG_ANSWER, timeout=20)
    pages = [m.content for m in fake.interaction_messages(inter)]
    assert len(pages) == 2
    assert all(len(p) <= 2000 for p in pages)
    assert pages[0].endswith("\n\n") and pages[1].startswith("Paragraph")
    assert words("".join(pages)) == words(LONG_ANSWER)


async def test_a_long_code_block_stays_code_in_every_message(env: Env) -> None:
    fake = env.fake
    assert 2500 < len(CODE_ANSWER) < 3500
    inter = await ask(env, "write code")
    await fake.wait_for(lambda: fake.final_text(inter).endswith("Run it with `python run.py`."), timeout=20)
    pages = [m.content for m in fake.interaction_messages(inter)]
    assert len(pages) == 2 and all(len(p) <= 2000 for p in pages)
    assert all(p.count("```") == 2 for p in pages)  # each message opens and closes its code block
    assert pages[0].endswith("\n```") and pages[1].startswith("```python\n    total += compute(")
    assert pages[0].removesuffix("```") + pages[1].removeprefix("```python\n") == CODE_ANSWER


async def test_gateway_reconnect_mid_answer_gives_one_complete_answer() -> None:
    async with running(replay_overlap=5) as env:
        fake = env.fake
        GATE["slow"] = asyncio.Event()
        inter = await ask(env, "slow answer")
        await fake.wait_for(lambda: fake.final_text(inter) == "First half. ")
        await fake.request_reconnect()
        await fake.wait_resumed()  # the resume replays the INTERACTION_CREATE again
        GATE["slow"].set()
        await fake.wait_for(lambda: fake.final_text(inter) == "First half. Second half.")
        await fake.drop_connection()
        await fake.wait_resumed()
        after = await ask(env, "tell story")
        await fake.wait_for(lambda: fake.final_text(after) == "Once upon a time there was a bot.")
        assert fake.gateway.resumes == 2 and fake.gateway.identifies == 1
        assert inter.callback_count == 1
        assert len(fake.interaction_messages(inter)) == 1
        assert (
            len(fake.bot_messages(env.channel_id)) == 2
        )  # one answer per question, no replayed second answer


async def test_stopping_refuses_new_messages_while_the_running_answer_finishes(env: Env) -> None:
    fake = env.fake
    GATE["slow"] = asyncio.Event()
    running_dm = fake.dm_channel_id(51)
    await fake.user_message("slow answer", user_id=51)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(running_dm)] == ["First half. "])
    stopping = asyncio.create_task(env.channel.stop(timeout=10))
    await asyncio.sleep(0.05)
    late_dm = fake.dm_channel_id(52)
    await fake.user_message("book table", user_id=52)
    late_command = await ask(env, "book table", user_id=53)
    await fake.wait_for(lambda: bool(fake.bot_messages(late_dm)) and fake.final_text(late_command) != "")
    assert [m.content for m in fake.bot_messages(late_dm)] == [RESTARTING]
    assert fake.final_text(late_command) == RESTARTING
    assert env.orchestrator.get_active_agents(tenant_id=DEFAULT_DM_TENANT) == []
    assert env.orchestrator.get_active_agents(tenant_id=str(env.guild.id)) == []
    assert not stopping.done()  # the running answer is still allowed to finish
    GATE["slow"].set()
    await asyncio.wait_for(stopping, 10)
    assert "".join(m.content for m in fake.bot_messages(running_dm)) == "First half. Second half."


async def test_duplicate_deliveries_never_answer_twice(env: Env) -> None:
    fake = env.fake
    inter = await ask(env, "tell story", times=2)
    dm = fake.dm_channel_id(9)
    await fake.user_message("tell story", user_id=9, times=3)
    await fake.wait_for(lambda: fake.final_text(inter) == "Once upon a time there was a bot.")
    await fake.wait_for(
        lambda: [m.content for m in fake.bot_messages(dm)] == ["Once upon a time there was a bot."]
    )
    # Let any late duplicate handling finish before counting.
    await asyncio.sleep(0.3)
    assert len(fake.bot_messages(dm)) == 1
    assert len(fake.bot_messages(env.channel_id)) == 1


async def test_bad_option_value_is_answered_clearly(env: Env) -> None:
    fake = env.fake
    bad = await fake.slash_command(
        "ask",
        [{"name": "message", "type": 4, "value": 5}],
        user_id=1,
        guild_id=env.guild.id,
        channel_id=env.channel_id,
    )
    await fake.wait_for(lambda: bool(fake.interaction_messages(bad)))
    msg = fake.interaction_messages(bad)[0]
    assert "/ask message:" in msg.content and "Traceback" not in msg.content
    missing = await fake.slash_command("ask", [], user_id=1, guild_id=env.guild.id, channel_id=env.channel_id)
    await fake.wait_for(lambda: bool(fake.interaction_messages(missing)))
    assert "/ask message:" in fake.interaction_messages(missing)[0].content


async def test_oversized_message_is_answered_clearly(env: Env) -> None:
    fake = env.fake
    inter = await ask(env, "x" * 5000)
    await fake.wait_for(lambda: bool(fake.interaction_messages(inter)))
    text = fake.interaction_messages(inter)[0].content
    assert "5,000 characters" in text and "4,000" in text
    dm = fake.dm_channel_id(3)
    await fake.user_message("y" * 4500, user_id=3)
    await fake.wait_for(lambda: bool(fake.bot_messages(dm)))
    assert "4,500 characters" in fake.bot_messages(dm)[0].content


async def test_failed_agent_gives_a_short_apology(env: Env) -> None:
    fake = env.fake
    inter = await ask(env, "crash")
    await fake.wait_for(lambda: fake.final_text(inter) != "")
    text = fake.final_text(inter)
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert len(text) < 300


async def test_mention_in_a_server_channel_is_answered_as_a_reply(env: Env) -> None:
    fake = env.fake
    await fake.user_message("hello everyone", user_id=4, guild_id=env.guild.id, channel_id=env.channel_id)
    question = await fake.user_message(
        "tell story", user_id=4, guild_id=env.guild.id, channel_id=env.channel_id, mention_bot=True
    )
    await fake.wait_for(lambda: bool(fake.bot_messages(env.channel_id)))
    await fake.wait_for(
        lambda: fake.bot_messages(env.channel_id)[0].content == "Once upon a time there was a bot."
    )
    reply = fake.bot_messages(env.channel_id)[0]
    assert reply.reference_id == question.id
    assert len(fake.bot_messages(env.channel_id)) == 1  # the message without a mention was ignored


async def test_cancel_stops_the_active_agent(env: Env) -> None:
    fake = env.fake
    first = await ask(env, "book table")
    await fake.wait_for(lambda: fake.final_text(first) == "How many guests?")
    cancel = await fake.slash_command("cancel", user_id=42, guild_id=env.guild.id, channel_id=env.channel_id)
    await fake.wait_for(lambda: fake.final_text(cancel) != "")
    assert env.orchestrator.get_active_agents(tenant_id=str(env.guild.id)) == []


async def test_answer_outliving_the_interaction_token_continues_in_the_channel() -> None:
    async with running(interaction_ttl=1.0, channel_options={"interaction_ttl": 1.0}) as env:
        fake = env.fake
        GATE["slow"] = asyncio.Event()
        inter = await ask(env, "slow answer")
        await fake.wait_for(lambda: fake.final_text(inter) == "First half. ")
        await asyncio.sleep(1.1)  # the token expires (scaled down from 15 minutes)
        GATE["slow"].set()
        await fake.wait_for(lambda: len(fake.bot_messages(env.channel_id)) == 2)
        contents = [m.content for m in fake.bot_messages(env.channel_id)]
        assert contents == ["First half. ", "Second half."]
        assert fake.bot_messages(env.channel_id)[1].webhook_id is None  # a plain channel message


async def test_edits_cool_off_after_a_429_and_still_end_complete() -> None:
    # The fake's hidden budget is tighter than the one the channel was told: 429s happen.
    async with running(allow_429=True, edit_limit=1, edit_window=0.3) as env:
        fake = env.fake
        inters = [await ask(env, "tell story", user_id=200 + i) for i in range(3)]
        expected = "Once upon a time there was a bot."
        await fake.wait_for(lambda: all(fake.final_text(i) == expected for i in inters), timeout=30)
        assert env.channel.rate_limited == len(fake.rate_limited) > 0


async def test_shards_in_two_processes_serve_one_bot() -> None:
    async with FakeDiscord(FakeDiscordConfig(edit_limit=EDIT_BUDGET[0], edit_window=EDIT_BUDGET[1])) as fake:
        stamp = fake.world.snowflake() >> 22
        even = fake.add_guild("Even", guild_id=((stamp & ~1) << 22) | 1)
        odd = fake.add_guild("Odd", guild_id=((stamp | 1) << 22) | 2)
        orchestrator = Orchestrator(agents=AGENTS)  # shared state (one Redis in production)
        await orchestrator.initialize()
        channels = [
            DiscordChannel(
                orchestrator,
                token=fake.token,
                api_url=fake.api_url,
                gateway_url=fake.gateway_url,
                guild_ids=[even.id, odd.id],
                shard_count=2,
                shard_ids=[shard],
                edit_budget=EDIT_BUDGET,
                guild_ready_timeout=0.05,
            )
            for shard in (0, 1)
        ]
        runners = [asyncio.create_task(c.start()) for c in channels]
        try:
            for c in channels:
                await c.wait_until_ready(timeout=10)
            assert [g.id for g in channels[0].client.guilds] == [even.id]
            assert [g.id for g in channels[1].client.guilds] == [odd.id]
            answers = [
                await fake.slash_command(
                    "ask", {"message": "tell story"}, user_id=1, guild_id=g.id, channel_id=g.channel_ids[0]
                )
                for g in (even, odd)
            ]
            expected = "Once upon a time there was a bot."
            await fake.wait_for(lambda: all(fake.final_text(a) == expected for a in answers))
            assert sorted(fake.gateway.shards) == [0, 1]
        finally:
            for c in channels:
                await c.stop()
            await asyncio.gather(*runners, return_exceptions=True)
            await orchestrator.close()


async def test_refused_message_content_intent_is_a_clear_configuration_error() -> None:
    async with FakeDiscord(FakeDiscordConfig(allow_message_content=False)) as fake:
        orchestrator = Orchestrator(agents=AGENTS)
        channel = DiscordChannel(
            orchestrator,
            token=fake.token,
            api_url=fake.api_url,
            gateway_url=fake.gateway_url,
            message_content=True,
            guild_ready_timeout=0.05,
        )
        with pytest.raises(ConfigurationError, match="message-content intent"):
            await asyncio.wait_for(channel.start(), 10)


async def test_bad_token_is_a_clear_configuration_error() -> None:
    async with FakeDiscord() as fake:
        channel = DiscordChannel(Orchestrator(agents=AGENTS), token="wrong", api_url=fake.api_url)
        with pytest.raises(ConfigurationError, match="DISCORD_BOT_TOKEN"):
            await asyncio.wait_for(channel.start(), 10)


def test_from_env_reads_the_discord_variables() -> None:
    orchestrator = Orchestrator(agents=AGENTS)
    assert DiscordChannel.from_env(orchestrator, env={}) is None
    channel = DiscordChannel.from_env(
        orchestrator,
        env={
            "DISCORD_BOT_TOKEN": "t",
            "DISCORD_API_URL": "http://127.0.0.1:1/api/v10/",
            "DISCORD_GATEWAY_URL": "ws://127.0.0.1:1/gateway",
            "DISCORD_GUILD_IDS": "1, 2",
            "DISCORD_SHARD_COUNT": "4",
            "DISCORD_SHARD_IDS": "2,3",
        },
    )
    assert channel is not None
    assert channel.api_url == "http://127.0.0.1:1/api/v10" and channel.guild_ids == [1, 2]
    assert isinstance(channel.client, discord.AutoShardedClient) and channel.client.shard_ids == [2, 3]
    with pytest.raises(ConfigurationError, match="ws://"):
        DiscordChannel(orchestrator, token="t", gateway_url="https://example.com")
    with pytest.raises(ConfigurationError, match="SHARD_COUNT"):
        DiscordChannel(orchestrator, token="t", shard_ids=[1])


async def test_threads_are_conversations_of_their_own(env: Env) -> None:
    fake = env.fake
    thread = fake.add_thread(env.guild.id, env.channel_id)
    await fake.guild_join(env.guild)  # refresh the bot's cache with the thread
    first = await ask(env, "book table")
    await fake.wait_for(lambda: fake.final_text(first) == "How many guests?")
    in_thread = await fake.slash_command(
        "ask", {"message": "3"}, user_id=42, guild_id=env.guild.id, channel_id=thread.id
    )
    await fake.wait_for(
        lambda: any(m.embeds for m in fake.interaction_messages(in_thread))
    )  # nothing waits there
    again = await ask(env, "3")
    await fake.wait_for(lambda: fake.final_text(again) == "Which day?")


async def test_replies_without_a_ping_need_the_message_content_intent() -> None:
    async with running(channel_options={"message_content": True}) as env:
        fake = env.fake
        await fake.user_message(
            "book table", user_id=4, guild_id=env.guild.id, channel_id=env.channel_id, mention_bot=True
        )
        await fake.wait_for(
            lambda: [m.content for m in fake.bot_messages(env.channel_id)] == ["How many guests?"]
        )
        question = fake.bot_messages(env.channel_id)[0]
        await fake.user_message(
            "5", user_id=4, guild_id=env.guild.id, channel_id=env.channel_id, reply_to=question
        )
        await fake.wait_for(lambda: len(fake.bot_messages(env.channel_id)) == 2)
        assert fake.bot_messages(env.channel_id)[1].content == "Which day?"


async def test_invalid_session_reidentifies_through_the_configured_gateway(env: Env) -> None:
    fake = env.fake
    fake.gateway.ready.clear()
    await fake.invalidate_session()
    await fake.wait_until_ready()
    assert fake.gateway.identifies == 2
    inter = await ask(env, "tell story")
    await fake.wait_for(lambda: fake.final_text(inter) == "Once upon a time there was a bot.")


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("MESSAGE_CREATE", {"id": "1", "channel_id": "2", "content": "hi"}),  # no "type"
        ("INTERACTION_CREATE", {"id": "5", "type": 3, "token": "t", "application_id": "1", "version": 1}),
    ],
)
async def test_a_gateway_event_discord_py_cannot_read_costs_a_new_session_not_the_channel(
    env: Env, event: str, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_adapter, "RECONNECT_DELAY", 0.05)
    fake = env.fake
    fake.gateway.ready.clear()
    await fake.gateway.dispatch(env.guild.id, event, data)
    await fake.wait_until_ready()
    assert fake.gateway.identifies == 2
    inter = await ask(env, "tell story")
    await fake.wait_for(lambda: fake.final_text(inter) == "Once upon a time there was a bot.")


class GuardedOrchestrator(Orchestrator):
    async def should_process(self, message: str, context: dict[str, Any]) -> bool:
        return "blocked" not in message


async def test_declined_messages_resolve_the_deferred_response_and_stay_silent_in_dms(env: Env) -> None:
    fake = env.fake
    orchestrator = GuardedOrchestrator(agents=AGENTS)
    await orchestrator.initialize()
    env.channel.orchestrator = orchestrator
    inter = await ask(env, "blocked words")
    await fake.wait_for(lambda: fake.final_text(inter) != "")
    assert fake.final_text(inter) == "I can't take that request right now."
    dm = fake.dm_channel_id(11)
    await fake.user_message("blocked words", user_id=11)
    await fake.user_message("tell story", user_id=11)
    await fake.wait_for(lambda: bool(fake.bot_messages(dm)))
    await fake.wait_for(lambda: fake.bot_messages(dm)[-1].content == "Once upon a time there was a bot.")
    assert len(fake.bot_messages(dm)) == 1
    await orchestrator.close()


async def test_a_deleted_answer_message_is_posted_again(env: Env) -> None:
    fake = env.fake
    GATE["slow"] = asyncio.Event()
    dm = fake.dm_channel_id(12)
    await fake.user_message("slow answer", user_id=12)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == ["First half. "])
    fake.bot_messages(dm)[0].deleted = True  # a moderator removed it
    GATE["slow"].set()
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == ["First half. Second half."])


async def test_an_answer_starting_with_blank_lines_is_delivered(env: Env) -> None:
    # Discord refuses content that is only whitespace (50006): sent mid-stream, it used to end the answer.
    fake = env.fake
    GATE["blank"] = asyncio.Event()
    inter = await ask(env, "blank start")
    dm = fake.dm_channel_id(15)
    await fake.user_message("blank start", user_id=15)
    await asyncio.sleep(0.2)  # room for a blank edit or message, which must not be sent
    GATE["blank"].set()
    await fake.wait_for(lambda: fake.final_text(inter) == "\n\nHere you go.")
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == ["\n\nHere you go."])
    bodies = [c.json for c in fake.calls if c.method in ("POST", "PATCH") and isinstance(c.json, dict)]
    assert all(body.get("content") is None or body["content"].strip() for body in bodies)


def discord_fails(
    fake: FakeDiscord,
    method: str,
    route: str,
    status: int,
    *,
    when: Callable[[Request], bool] = lambda req: True,
    times: int | None = None,
    retry_after: float = 0.05,
) -> list[str]:
    """Make the fake answer ``method`` requests to routes containing ``route`` (and matching ``when``) with
    ``status``, ``times`` times or always, as Discord does on a bad minute; returns the failed paths.

    A 429 is Discord's own (a ``Via`` header and ``retry_after``), which discord.py retries up to 5 times."""
    failed: list[str] = []
    routes = fake.rest._routes
    for i, (verb, pattern, handler) in enumerate(routes):
        if verb != method or route not in pattern.pattern:
            continue

        async def flaky(req: Request, handler: Any = handler) -> Any:
            if when(req) and (times is None or len(failed) < times):
                failed.append(req.raw.path)
                if status == 429:
                    body = {"message": "You are being rate limited.", "retry_after": retry_after}
                    headers = {"Retry-After": str(retry_after), "Via": "1.1 google"}
                    return jresp({**body, "global": False}, status=429, headers=headers)
                return error(status, 0, f"{status}: Discord is having a bad minute")
            return await handler(req)

        routes[i] = (verb, pattern, flaky)
    return failed


@pytest.mark.parametrize("status", [403, 503])
async def test_answer_arrives_when_the_typing_indicator_fails(env: Env, status: int) -> None:
    fake = env.fake
    failed = discord_fails(fake, "POST", "/typing", status)
    dm = fake.dm_channel_id(13)
    await fake.user_message("book table", user_id=13)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == ["How many guests?"])
    await fake.user_message("2", user_id=13)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)][-1:] == ["Which day?"])
    assert len(failed) == 2  # tried once per message, then answered without it


async def test_final_text_survives_discord_server_errors_on_the_last_edit(env: Env) -> None:
    fake = env.fake
    final = "Once upon a time there was a bot."
    # Twice, so the final sync itself meets at least one 503 (discord.py's bot client does not retry 503s;
    # interaction webhook edits it does retry).
    failed = discord_fails(
        fake,
        "PATCH",
        "/messages/",
        503,
        when=lambda r: (r.body or {}).get("content") == final,
        times=2,
    )
    dm = fake.dm_channel_id(14)
    await fake.user_message("tell story", user_id=14)
    await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == [final])
    assert len(failed) == 2


async def test_final_text_survives_a_429_storm_on_the_last_edit() -> None:
    async with running(allow_429=True) as env:
        fake = env.fake
        final = "Once upon a time there was a bot."
        # Six in a row: more than discord.py's five tries of one request, so the final sync itself fails once.
        failed = discord_fails(
            fake, "PATCH", "/messages/", 429, when=lambda r: (r.body or {}).get("content") == final, times=6
        )
        dm = fake.dm_channel_id(16)
        await fake.user_message("tell story", user_id=16)
        await fake.wait_for(lambda: [m.content for m in fake.bot_messages(dm)] == [final])
        assert len(failed) == 6


@pytest.mark.parametrize("stale", ["legacy:button:1", "fa:c:notanumber:Pizza", "fa:c:42:"])
async def test_clicks_on_unknown_buttons_are_answered_once(env: Env, stale: str) -> None:
    fake = env.fake
    question = await lunch_question(env)
    pizza = question.components[0]["components"][0]
    valid = pizza["custom_id"]
    pizza["custom_id"] = stale  # a button from an older version of the bot (or a tampered one)
    click = await fake.click(question, stale, user_id=42)
    await fake.wait_for(lambda: click.acknowledged)
    notice = fake.interaction_messages(click)[0]
    assert "no longer valid" in notice.content and notice.flags & 64  # ephemeral
    pizza["custom_id"] = valid
    answer = await fake.click(question, valid, user_id=42)
    await fake.wait_for(lambda: fake.final_text(answer).endswith("Ordered Pizza."))
    await asyncio.sleep(0.1)  # room for a second acknowledgement, which must not come
    assert click.callback_count == answer.callback_count == 1
