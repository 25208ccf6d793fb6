"""End-to-end tests of the Slack channel: real slack-bolt / slack_sdk against the loopback fake Slack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from slack_sdk.web.async_client import AsyncWebClient

from adapters._slack_format import to_mrkdwn
from adapters._slack_pacing import BudgetRegistry, RateLimit
from adapters._slack_reply import UNDELIVERED, ReplyWriter, web_api_retry_handlers
from flowagents import AgentResult, AgentStatus, InputField, Orchestrator, StandardAgent, flowagent
from flowagents.testing.slack import FakeSlack, SlackTestBot, TierLimit

LONG_ANSWER = "\n\n".join(f"Paragraph {i}: " + " ".join(f"word{i}_{j}" for j in range(60)) for i in range(12))


@flowagent(triggers=["book table", "reservation"], name="SlackBooking", description="Books a table for you.")
class SlackBookingAgent(StandardAgent):
    guests = InputField("How many guests?", type=int)
    day = InputField("Which day?", type=str)

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(
            status=AgentStatus.COMPLETED, raw_message=f"Booked a table for {self.guests} on {self.day}!"
        )


@flowagent(triggers=["tell me a story"], name="SlackStory", description="Tells a short story.")
class SlackStoryAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        for word in ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "**bot**", "."]:
            yield word
            await asyncio.sleep(0)


@flowagent(triggers=["essay"], name="SlackEssay", description="Writes a long essay.")
class SlackEssayAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        for paragraph in LONG_ANSWER.split("\n\n"):
            yield paragraph + "\n\n"
            await asyncio.sleep(0.005)


@flowagent(triggers=["crash"], name="SlackCrash", description="Always fails.")
class SlackCrashAgent(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        raise RuntimeError("database password is hunter2")


@flowagent(triggers=["take a note"], name="SlackNote", description="Notes something down.")
class SlackNoteAgent(StandardAgent):
    note = InputField("What should I note?", type=str)

    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        text = f"Noted: {self.note}"
        for start in range(0, len(text), 3):  # small pieces: a mention may arrive split in two
            yield text[start : start + 3]
            await asyncio.sleep(0.01)


CODE_LINES = [f"total = add(total, {i})  # step {i} of the sum" for i in range(40)]
CODE_ANSWER = (
    "Here is the script:\n\n```python\n" + "\n".join(CODE_LINES) + "\n```\n\nRun it with `python sum.py`."
)


@flowagent(triggers=["code sample"], name="SlackCode", description="Shows a long code sample.")
class SlackCodeAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        for line in CODE_ANSWER.splitlines(keepends=True):
            yield line
            await asyncio.sleep(0)


AGENTS = [
    SlackBookingAgent,
    SlackStoryAgent,
    SlackEssayAgent,
    SlackCrashAgent,
    SlackNoteAgent,
    SlackCodeAgent,
]
BROADCASTS = ("<!channel>", "<!here>", "<!everyone>", "<!subteam^S1|@devs>")


def words(text: str) -> list[str]:
    return text.replace("*", "").split()


@pytest.fixture
async def orchestrator() -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(agents=AGENTS)
    await orch.initialize()
    yield orch
    await orch.close()


@pytest.fixture
async def fast_fake() -> AsyncIterator[FakeSlack]:
    """A fake with Slack's limit shapes scaled down so tests run fast."""
    limits = {
        "chat.postMessage": TierLimit(5, 1.0),
        "chat.update": TierLimit(50, 1.0),
        "chat.startStream": TierLimit(50, 1.0),
        "chat.appendStream": TierLimit(100, 1.0),
        "chat.stopStream": TierLimit(50, 1.0),
    }
    async with FakeSlack(limits=limits) as fake:
        yield fake


async def test_mention_gets_a_threaded_streamed_answer(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        delivery = await bot.mention("T1", channel="C1", user="U1", text="tell me a story")
        await bot.settle(1)
    mention_ts = delivery.payload["event"]["ts"]
    replies = fast_fake.bot_messages(channel="C1")
    assert len(replies) == 1
    reply = replies[0]
    assert reply.thread_ts == mention_ts  # answered in a thread under the mention
    assert reply.stream_state == "stopped"  # native streaming, closed at the end
    assert reply.text == "Once upon a time there was a **bot**."
    assert fast_fake.calls_to("chat.startStream")[0].params["recipient_user_id"] == "U1"
    assert delivery.acked.is_set()


async def test_thread_follow_up_continues_the_conversation(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        first = await bot.mention("T1", channel="C1", user="U1", text="book table")
        root = first.payload["event"]["ts"]
        await bot.settle(1)
        await bot.say("T1", channel="C1", user="U1", text="4", thread_ts=root)
        await bot.settle(2)
        await bot.say("T1", channel="C1", user="U1", text="Friday", thread_ts=root)
        await bot.settle(3)
        # A message in some other thread, without a mention, is not for the bot.
        await bot.say("T1", channel="C1", user="U1", text="book table", thread_ts="1.000001")
        await bot.settle(4)
    texts = [m.text for m in fast_fake.bot_messages(channel="C1")]
    assert texts == ["How many guests?", "Which day?", "Booked a table for 4 on Friday!"]
    assert all(m.thread_ts == root for m in fast_fake.bot_messages(channel="C1"))


async def test_others_talking_in_the_thread_without_a_mention_are_left_alone(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        first = await bot.mention("T1", channel="C1", user="U1", text="book table")
        root = first.payload["event"]["ts"]
        await bot.settle(1)
        await bot.say("T1", channel="C1", user="U2", text="I'll join you too!", thread_ts=root)
        await bot.settle(2)
        await bot.say("T1", channel="C1", user="U1", text="4", thread_ts=root)
        await bot.settle(3)
        await bot.mention(
            "T1", channel="C1", user="U2", text="tell me a story", thread_ts=root
        )  # asks the bot
        await bot.settle(4)
    texts = [m.text for m in fast_fake.bot_messages(channel="C1")]
    assert texts == ["How many guests?", "Which day?", "Once upon a time there was a **bot**."]


async def test_thread_follow_up_after_a_restart_of_the_channel(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        first = await bot.mention("T1", channel="C1", user="U1", text="book table")
        await bot.settle(1)
    root = first.payload["event"]["ts"]
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as restarted:
        await restarted.say("T1", channel="C1", user="U1", text="6", thread_ts=root)
        await restarted.settle(1)
    assert [m.text for m in fast_fake.bot_messages(channel="C1")] == ["How many guests?", "Which day?"]


async def test_dm_slot_filling_over_several_messages(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        for n, text in enumerate(["I need a reservation", "2", "Saturday"], start=1):
            await bot.dm("T1", user="U7", text=text, channel="D7")
            await bot.settle(n)
    replies = fast_fake.bot_messages(channel="D7")
    assert [m.text for m in replies] == [
        "How many guests?",
        "Which day?",
        "Booked a table for 2 on Saturday!",
    ]
    assert all(m.thread_ts is None for m in replies)  # top level of the DM, not a thread
    assert not fast_fake.calls_to("chat.startStream")


async def test_no_match_gives_a_block_kit_help_reply(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        await bot.mention("T1", channel="C1", user="U1", text="what is the meaning of life")
        await bot.settle(1)
    [reply] = fast_fake.bot_messages(channel="C1")
    assert reply.blocks is not None
    shown = "\n".join(b["text"]["text"] for b in reply.blocks if "text" in b)
    for name, description, example in [
        ("SlackBooking", "Books a table for you.", "book table"),
        ("SlackStory", "Tells a short story.", "tell me a story"),
    ]:
        assert name in shown and description in shown and f"`{example}`" in shown
    assert "Sorry, I didn't get that." in reply.text


async def test_failed_agent_gives_a_short_apology(fast_fake: FakeSlack, orchestrator: Orchestrator) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        await bot.dm("T1", user="U1", text="crash please")
        await bot.settle(1)
    [reply] = fast_fake.bot_messages(channel="DU1")
    assert reply.text.startswith("Sorry")
    assert "hunter2" not in reply.text and "Traceback" not in reply.text and "RuntimeError" not in reply.text


async def test_two_workspaces_with_the_same_user_are_kept_apart(
    fast_fake: FakeSlack, orchestrator: Orchestrator, tmp_path: Path
) -> None:
    db = tmp_path / "installs.sqlite3"
    key = Fernet.generate_key().decode()
    async with SlackTestBot(
        fast_fake, orchestrator, oauth=True, installation_db_path=str(db), secret_key=key
    ) as bot:
        one = await bot.install("T1")
        two = await bot.install("T2")
        await bot.dm("T1", user="USAME", text="book table", channel="DSAME")
        await bot.settle(1)
        await bot.dm("T2", user="USAME", text="book table", channel="DSAME")
        await bot.settle(2)
        await bot.dm("T1", user="USAME", text="3", channel="DSAME")
        await bot.settle(3)
        await bot.dm("T2", user="USAME", text="5", channel="DSAME")
        await bot.settle(4)
        await bot.dm("T1", user="USAME", text="Monday", channel="DSAME")
        await bot.settle(5)
    assert [m.text for m in fast_fake.bot_messages(team_id="T1")] == [
        "How many guests?",
        "Which day?",
        "Booked a table for 3 on Monday!",
    ]
    assert [m.text for m in fast_fake.bot_messages(team_id="T2")] == ["How many guests?", "Which day?"]
    # Each workspace was answered with its own installation's token.
    posts = fast_fake.calls_to("chat.postMessage")
    assert {c.token for c in posts if c.team_id == "T1"} == {one.bot_token}
    assert {c.token for c in posts if c.team_id == "T2"} == {two.bot_token}
    # Installation tokens are encrypted at rest.
    stored = db.read_bytes()
    assert one.bot_token.encode() not in stored and two.bot_token.encode() not in stored


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_uninstalling_the_app_deletes_the_workspace_installation(
    fast_fake: FakeSlack, orchestrator: Orchestrator, tmp_path: Path, mode: str
) -> None:
    db = tmp_path / "installs.sqlite3"
    async with SlackTestBot(
        fast_fake,
        orchestrator,
        oauth=True,
        mode=mode,
        installation_db_path=str(db),  # type: ignore[arg-type]
    ) as bot:
        assert bot.channel is not None
        store = bot.channel.app.installation_store
        assert store is not None
        await bot.install("T1")
        await bot.install("T2")
        gone = await bot.deliver(fast_fake.uninstall("T1"))
        await bot.settle(1)
        assert gone.acked.is_set() if mode == "socket" else gone.http_status == 200
        # The revoked token is not kept (nor offered to later events of that workspace).
        assert await store.async_find_bot(enterprise_id=None, team_id="T1") is None
        assert await store.async_find_installation(enterprise_id=None, team_id="T1") is None
        assert await store.async_find_bot(enterprise_id=None, team_id="T2") is not None
        again = await bot.install("T1")  # installed again: served with the new token
        await bot.dm("T1", user="U1", text="tell me a story")
        await bot.settle(2)
    [answer] = fast_fake.calls_to("chat.postMessage")
    assert answer.token == again.bot_token and answer.response["ok"]


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_redelivery_gives_one_answer(
    fast_fake: FakeSlack, orchestrator: Orchestrator, mode: str
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, mode=mode) as bot:  # type: ignore[arg-type]
        first = await bot.mention("T1", channel="C1", user="U1", text="tell me a story")
        await bot.settle(1)
        retry = await bot.redeliver(first)
        await bot.settle(2)
        assert retry.acked.is_set() and retry.retry_attempt == 1
    assert len(fast_fake.bot_messages(channel="C1")) == 1


async def test_event_whose_first_delivery_was_lost_is_still_answered(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, mode="http") as bot:
        event = fast_fake.app_mention(
            "T1", channel="C1", user="U1", text=f"<@{ws.bot_user_id}> tell me a story"
        )
        payload = fast_fake.event_callback("T1", event)
        # Slack's first attempt never reached the app; only the retry arrives.
        await fast_fake.send_http_event(bot.url + "/slack/events", payload, retry_num=1)
        await bot.settle(1)
    assert [m.text for m in fast_fake.bot_messages(channel="C1")] == ["Once upon a time there was a **bot**."]


async def test_429_with_retry_after_is_survived_with_the_complete_text(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    fast_fake.force_rate_limit("chat.update", retry_after=1, times=2)
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, max_message_chars=12_000) as bot:
        await bot.dm("T1", user="U1", text="essay please")
        await bot.settle(1, timeout=20)
    assert len(fast_fake.rate_limited_calls) == 2  # each Retry-After waited: an early retry gets a 429 too
    assert words(fast_fake.transcript(channel="DU1")) == words(LONG_ANSWER)


@pytest.mark.parametrize(("status", "error"), [(500, "internal_error"), (200, "internal_error")])
async def test_slack_server_error_on_a_post_is_retried_and_no_text_is_lost(
    fast_fake: FakeSlack,
    orchestrator: Orchestrator,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: str,
) -> None:
    ws = fast_fake.add_workspace("T1")
    caplog.set_level(logging.WARNING, logger="adapters.slack")
    fast_fake.force_error("chat.postMessage", error, status=status)
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, max_message_chars=1500) as bot:
        await bot.dm("T1", user="U1", text="essay please")
        await bot.settle(1, timeout=20)
    assert [c.status for c in fast_fake.calls_to("chat.postMessage")][:2] == [status, 200]
    assert not caplog.records  # retried at once: the answer never paused
    assert words(fast_fake.transcript(channel="DU1")) == words(LONG_ANSWER)


def dm_writer(fake: FakeSlack, bot_token: str) -> ReplyWriter:
    """The channel's reply writer for a DM to U1, small messages, no pause between edits."""
    client = AsyncWebClient(token=bot_token, base_url=fake.api_url, retry_handlers=web_api_retry_handlers())
    limits = {m: RateLimit(lim.calls, lim.per_seconds) for m, lim in fake.limits.items()}
    return ReplyWriter(
        client,
        BudgetRegistry(limits),
        workspace="T1",
        channel="DU1",
        thread_ts=None,
        recipient_team_id="T1",
        recipient_user_id="U1",
        native_streaming=False,
        max_chars=60,
        edit_interval=0.0,
    )


@pytest.mark.parametrize("fault", ["fatal_error", "disconnect"])
@pytest.mark.parametrize("failures", [1, 2])
async def test_post_that_keeps_failing_mid_answer_is_tried_again_at_the_end_then_apologised_for(
    fast_fake: FakeSlack, failures: int, fault: str
) -> None:
    ws = fast_fake.add_workspace("T1")
    writer = dm_writer(fast_fake, ws.bot_token)
    writer.feed("The first part of the answer.\n\n")
    await fast_fake.wait_for(lambda: fast_fake.bot_messages(channel="DU1"))
    # Neither is retried by the client (a dropped connection once only): the next message is not posted.
    if fault == "fatal_error":
        fast_fake.force_error("chat.postMessage", "fatal_error", times=failures)
    else:
        fast_fake.force_disconnect("chat.postMessage", times=2 * failures)
    writer.feed("The second part, which has to go into a new message.\n\n")
    if fault == "fatal_error":
        await fast_fake.wait_for(
            lambda: any(c.status == 200 and not c.response["ok"] for c in fast_fake.calls)
        )
    else:  # dropped, then dropped again on slack_sdk's one retry
        await fast_fake.wait_for(lambda: len(fast_fake.dropped) == 2)
    writer.feed("The last part.")
    await writer.finish()
    texts = [m.text for m in fast_fake.bot_messages(channel="DU1")]
    if failures == 1:  # the rest is delivered once the answer is complete
        assert words("\n".join(texts)) == words(writer.text)
    else:
        assert texts[0].startswith("The first part of the answer.")
        assert texts[-1] == UNDELIVERED


async def test_an_answer_that_starts_with_blank_lines_is_streamed_without_a_refused_post(
    fast_fake: FakeSlack,
) -> None:
    ws = fast_fake.add_workspace("T1")
    writer = dm_writer(fast_fake, ws.bot_token)
    writer.feed("\n\n")  # Slack answers no_text to a message of blanks
    await asyncio.sleep(0.1)  # room for the flusher to send it, if it would
    writer.feed("Here is the answer.")
    await fast_fake.wait_for(lambda: fast_fake.bot_messages(channel="DU1"))
    await writer.finish()
    assert [m.text for m in fast_fake.bot_messages(channel="DU1")] == ["Here is the answer."]
    assert all(c.response["ok"] for c in fast_fake.calls)


async def test_native_stream_expiry_mid_answer_loses_no_text(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    fast_fake.stream_expires_after_chars = 300
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, max_message_chars=12_000) as bot:
        await bot.mention("T1", channel="C1", user="U1", text="essay please")
        await bot.settle(1)
    messages = fast_fake.bot_messages(channel="C1")
    assert messages[0].stream_state == "expired"
    assert len(messages) >= 2
    assert words(fast_fake.transcript(channel="C1")) == words(LONG_ANSWER)


async def test_refused_native_stream_falls_back_to_post_and_edit(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    fast_fake.refuse_streams_with = "not_allowed_token_type"
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        await bot.mention("T1", channel="C1", user="U1", text="tell me a story")
        await bot.settle(1)
    [reply] = fast_fake.bot_messages(channel="C1")
    assert reply.stream_state is None
    assert reply.text == "Once upon a time there was a *bot*."  # Markdown bold rendered as Slack mrkdwn


async def test_long_answer_continues_in_new_messages_at_boundaries(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, max_message_chars=1500) as bot:
        await bot.dm("T1", user="U1", text="essay please")
        await bot.settle(1)
    messages = fast_fake.bot_messages(channel="DU1")
    assert len(messages) >= 4
    assert all(len(m.text) <= 1500 for m in messages)
    assert all(m.text.rstrip().endswith(tuple("0123456789")) for m in messages)  # cut between words
    assert words(fast_fake.transcript(channel="DU1")) == words(LONG_ANSWER)


def code_lines(text: str) -> tuple[list[str], bool]:
    """The lines of ``text`` inside its code blocks, and whether its last code block is closed."""
    inside, lines = False, []
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines, not inside


@pytest.mark.parametrize("where", ["dm", "thread"])
async def test_long_code_block_is_closed_and_reopened_across_messages(
    fast_fake: FakeSlack, orchestrator: Orchestrator, where: str
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, max_message_chars=400) as bot:
        if where == "dm":  # post and edit: Slack mrkdwn
            await bot.dm("T1", user="U1", text="code sample please")
        else:  # native streaming: Markdown
            await bot.mention("T1", channel="C1", user="U1", text="code sample please")
        await bot.settle(1)
    messages = fast_fake.bot_messages(channel="DU1" if where == "dm" else "C1")
    assert len(messages) >= 3
    assert all(len(m.text) <= 400 for m in messages)
    shown: list[str] = []
    for m in messages:
        lines, closed = code_lines(m.text)
        assert closed, m.text  # every message renders its part of the code as code
        shown += lines
    assert shown == CODE_LINES  # each line of code once, in a code block, none cut in two
    assert messages[-1].text.rstrip().endswith("Run it with `python sum.py`.")


async def test_a_streamed_answer_with_little_room_left_never_cuts_a_word(fast_fake: FakeSlack) -> None:
    ws = fast_fake.add_workspace("T1")
    writer = dm_writer(fast_fake, ws.bot_token)
    writer.feed("This first line fills most of the message up.\n")  # 12 characters of room left
    await fast_fake.wait_for(lambda: fast_fake.bot_messages(channel="DU1"))
    writer.feed("\nSupercalifragilistic words follow on the next line.")
    await writer.finish()
    messages = fast_fake.bot_messages(channel="DU1")
    assert len(messages) == 2 and all(len(m.text) <= 60 for m in messages)
    assert [w for m in messages for w in words(m.text)] == words(writer.text)


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        ("<https://x.io|the full setup guide>", "<https://x.io|the full setup guide>"),
        ("[the full setup guide](https://x.io)", "<https://x.io|the full setup guide>"),
        ("`pip install --upgrade flowagents`", "`pip install --upgrade flowagents`"),
        ("<!date^1^{time}|at 6:39 AM today>", "<!date^1^{time}|at 6:39 AM today>"),
    ],
)
async def test_a_link_mention_or_code_span_at_a_message_boundary_is_never_cut(
    fast_fake: FakeSlack, token: str, shown: str
) -> None:
    ws = fast_fake.add_workspace("T1")
    writer = dm_writer(fast_fake, ws.bot_token)
    writer.feed("Read this first, then go on.\n\n")  # 30 characters of room left
    await fast_fake.wait_for(lambda: fast_fake.bot_messages(channel="DU1"))
    writer.feed(f"{token} is worth a read.")
    await writer.finish()
    texts = [m.text for m in fast_fake.bot_messages(channel="DU1")]
    assert any(shown in text for text in texts), texts
    assert [w for t in texts for w in words(t)] == words(to_mrkdwn(writer.text))


async def test_twenty_conversations_stream_at_once_without_a_single_429(orchestrator: Orchestrator) -> None:
    limits = {
        "chat.postMessage": TierLimit(1, 0.2),
        "chat.update": TierLimit(10, 0.5),
        "chat.startStream": TierLimit(8, 0.5),
        "chat.appendStream": TierLimit(20, 0.5),
        "chat.stopStream": TierLimit(8, 0.5),
    }
    async with FakeSlack(limits=limits) as fake:
        ws = fake.add_workspace("T1")
        async with SlackTestBot(fake, orchestrator, workspace=ws) as bot:
            for i in range(10):
                await bot.mention("T1", channel=f"C{i}", user=f"U{i}", text="tell me a story")
                await bot.dm("T1", user=f"U{i}", text="essay please", channel=f"D{i}")
            await bot.settle(20, timeout=60)
        assert fake.rate_limited_calls == []
        for i in range(10):
            assert words(fake.transcript(channel=f"C{i}")) == words("Once upon a time there was a **bot**.")
            assert words(fake.transcript(channel=f"D{i}")) == words(LONG_ANSWER)


async def test_http_mode_rejects_bad_signature_and_stale_timestamp(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, mode="http") as bot:
        url = bot.url + "/slack/events"
        event = fast_fake.app_mention(
            "T1", channel="C1", user="U1", text=f"<@{ws.bot_user_id}> tell me a story"
        )
        payload = fast_fake.event_callback("T1", event)
        forged = await fast_fake.send_http_event(url, payload, signature="v0=" + "0" * 64)
        stale = await fast_fake.send_http_event(url, payload, timestamp=1_600_000_000)
        good = await fast_fake.send_http_event(url, payload)
        await bot.settle(1)
    assert forged.http_status == 401 and stale.http_status == 401
    assert good.http_status == 200
    assert len(fast_fake.bot_messages(channel="C1")) == 1


async def test_http_mode_answers_a_body_that_is_not_a_slack_payload_with_a_clean_4xx(
    fast_fake: FakeSlack, orchestrator: Orchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    ws = fast_fake.add_workspace("T1")
    caplog.set_level(logging.WARNING)
    forged = "v0=" + "0" * 64
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, mode="http") as bot:
        url = bot.url + "/slack/events"
        statuses = {}
        for body in ["this is not json", "[1, 2, 3]", "{truncated", "null"]:
            unsigned = await fast_fake.send_http_event(url, {}, raw_body=body, signature=forged)
            signed = await fast_fake.send_http_event(url, {}, raw_body=body)
            statuses[body] = (unsigned.http_status, signed.http_status)
        challenge = await fast_fake.send_http_event(
            url, {"type": "url_verification", "token": "t", "challenge": "c-123"}
        )
        await bot.dm("T1", user="U1", text="tell me a story")
        await bot.settle(1)
    assert statuses == {body: (401, 400) for body in statuses}
    assert not [r for r in caplog.records if r.name == "aiohttp.server"]  # no server tracebacks
    assert challenge.http_status == 200 and "c-123" in (challenge.http_body or "")
    assert len(fast_fake.bot_messages(channel="DU1")) == 1


async def test_malformed_event_is_logged_and_ignored(
    fast_fake: FakeSlack, orchestrator: Orchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    ws = fast_fake.add_workspace("T1")
    caplog.set_level(logging.WARNING, logger="adapters.slack")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        broken = fast_fake.event_callback(
            "T1", {"type": "message", "text": "no channel, no ts", "user": "U1"}
        )
        await bot.deliver(broken)
        await bot.settle(1)
        await bot.dm("T1", user="U1", text="tell me a story")
        await bot.settle(2)
    assert any("malformed" in r.getMessage() for r in caplog.records)
    assert [m.text for m in fast_fake.bot_messages()] == ["Once upon a time there was a *bot*."]


async def test_ignores_own_and_other_bots_edits_joins_and_empty_text(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        dm = {"channel": "DU1", "channel_type": "im"}
        await bot.say("T1", user=ws.bot_user_id, text="tell me a story", **dm)
        await bot.say("T1", user="U2", text="tell me a story", bot_id="BOTHER", **dm)
        await bot.say("T1", user="U1", text="tell me a story", subtype="message_changed", **dm)
        await bot.say("T1", user="U1", text="<@U1> joined", subtype="channel_join", **dm)
        await bot.mention("T1", channel="C1", user="U1", text="   ")
        await bot.settle(5)
        assert fast_fake.bot_messages() == []
        await bot.mention("T1", channel="C1", user="U1", text="tell me a story")
        await bot.settle(6)
    assert len(fast_fake.bot_messages()) == 1


async def test_user_messages_with_a_file_or_also_sent_to_the_channel_are_answered(
    fast_fake: FakeSlack, orchestrator: Orchestrator
) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        first = await bot.mention("T1", channel="C1", user="U1", text="book table")
        await bot.settle(1)
        root = first.payload["event"]["ts"]
        # The answer to the question, with "Also send to #channel" ticked.
        await bot.say("T1", channel="C1", user="U1", text="4", thread_ts=root, subtype="thread_broadcast")
        await bot.settle(2)
        # A DM with a file attached.
        files = [{"id": "F1", "name": "menu.pdf", "mimetype": "application/pdf"}]
        await bot.say(
            "T1",
            channel="DU1",
            channel_type="im",
            user="U1",
            text="tell me a story",
            files=files,
        )
        await bot.settle(3)
    assert [m.text for m in fast_fake.bot_messages(channel="C1")] == ["How many guests?", "Which day?"]
    assert [m.text for m in fast_fake.bot_messages(channel="DU1")] == ["Once upon a time there was a *bot*."]


async def test_respond_to_bots_when_configured(fast_fake: FakeSlack, orchestrator: Orchestrator) -> None:
    ws = fast_fake.add_workspace("T1")
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws, respond_to_bots=True) as bot:
        await bot.say(
            "T1", channel="DU2", channel_type="im", user="U2", text="tell me a story", bot_id="BOTHER"
        )
        await bot.settle(1)
    assert len(fast_fake.bot_messages(channel="DU2")) == 1


@pytest.mark.parametrize("where", ["dm", "thread"])
async def test_broadcast_mentions_a_user_typed_are_not_echoed_as_pings(
    fast_fake: FakeSlack, orchestrator: Orchestrator, where: str
) -> None:
    ws = fast_fake.add_workspace("T1")
    note = "tell " + " and ".join(BROADCASTS) + " that <@U2> is late"  # what Slack sends for @channel etc.
    async with SlackTestBot(fast_fake, orchestrator, workspace=ws) as bot:
        if where == "dm":  # post and edit
            await bot.dm("T1", user="U1", text="take a note", channel="D1")
            await bot.settle(1)
            await bot.dm("T1", user="U1", text=note, channel="D1")
        else:  # native streaming in a thread
            first = await bot.mention("T1", channel="C1", user="U1", text="take a note")
            await bot.settle(1)
            await bot.say("T1", channel="C1", user="U1", text=note, thread_ts=first.payload["event"]["ts"])
        await bot.settle(2)
    answer = fast_fake.bot_messages(team_id="T1")[-1].text
    assert "is late" in answer
    for ping in BROADCASTS:
        assert ping not in answer  # the bot would notify the whole channel (or user group) for the user
    assert "<@U2>" in answer  # a single person's mention is what the user could send themselves
