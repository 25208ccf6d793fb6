"""A conversation driver for testing agents without any platform, plus pytest fixtures.

    from flowagents.testing import ConversationDriver

    async def test_booking():
        async with ConversationDriver.for_agents([BookingAgent], tenant_id="acme", user_id="ann") as chat:
            (await chat.say("book a table")).expect_question(field="guests")
            (await chat.say("4")).expect_question(field="date")
            ...
            (await chat.say("7pm")).expect_completed(agent="BookingAgent").expect_reply(contains="Booked")

Every `say` returns a `Transcript` of that turn: the streamed events, the joined text and the result,
with `expect_*` helpers that raise `AssertionError` showing the whole turn. Platform harnesses (the
loopback Slack and Discord fakes) plug in behind the same `say` through `RecordingOrchestrator` and
`PlatformConversation`.

Fixtures (add `pytest_plugins = ["flowagents.testing.driver"]` to your root conftest.py): override
`flowagents_agents` to list your agent classes (default: every registered agent), or override
`flowagents_orchestrator` to use your own orchestrator subclass; `conversation` is a driver on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import pytest_asyncio

from flowagents.agent import StandardAgent
from flowagents.events import (
    DuplicateEvent,
    ErrorEvent,
    InputRequiredEvent,
    MessageChunkEvent,
    ResultEvent,
    RoutingEvent,
    StateChangeEvent,
    StreamEvent,
)
from flowagents.orchestrator import ActiveAgent, Orchestrator
from flowagents.results import AgentResult, AgentStatus
from flowagents.storage.memory import MemoryIsolation, MemoryStore

if TYPE_CHECKING:
    from flowagents.testing.discord import FakeDiscord
    from flowagents.testing.slack import SlackTestBot

__all__ = [
    "Conversation",
    "ConversationDriver",
    "PlatformConversation",
    "RecordingOrchestrator",
    "Transcript",
    "conversation",
    "flowagents_agents",
    "flowagents_orchestrator",
]


@dataclass
class Transcript:
    """One turn: what was said, every streamed event, the joined text and the result."""

    message: str
    events: list[StreamEvent] = field(default_factory=list)
    platform_text: str | None = None
    """What the platform finally showed for this turn, "" for nothing (platform conversations only)."""

    # ------------------------------------------------------------------ reading

    @property
    def text(self) -> str:
        """The reply text: all message chunks joined (equals `result.raw_message`)."""
        return "".join(e.content for e in self.events if isinstance(e, MessageChunkEvent))

    @property
    def result(self) -> AgentResult | None:
        """The turn's result (None for a duplicate delivery)."""
        return next((e.result for e in self.events if isinstance(e, ResultEvent)), None)

    @property
    def routing(self) -> RoutingEvent | None:
        """The routing decision of this turn, if one was made."""
        return next((e for e in self.events if isinstance(e, RoutingEvent)), None)

    @property
    def question(self) -> InputRequiredEvent | None:
        """The question asked at the end of this turn, if any."""
        return next((e for e in reversed(self.events) if isinstance(e, InputRequiredEvent)), None)

    @property
    def states(self) -> list[StateChangeEvent]:
        """State changes in order."""
        return [e for e in self.events if isinstance(e, StateChangeEvent)]

    @property
    def errors(self) -> list[ErrorEvent]:
        """Error events in order."""
        return [e for e in self.events if isinstance(e, ErrorEvent)]

    @property
    def chunks(self) -> list[str]:
        """The streamed pieces of text, in order."""
        return [e.content for e in self.events if isinstance(e, MessageChunkEvent)]

    @property
    def event_types(self) -> list[str]:
        """The `type` of every event, in order."""
        return [e.type for e in self.events]

    def __str__(self) -> str:
        lines = [f"> {self.message}"]
        for event in self.events:
            if isinstance(event, MessageChunkEvent):
                continue
            lines.append(f"  [{event.type}] " + event.model_dump_json(exclude={"type"})[:300])
        lines.append(f"< {self.text!r}")
        if self.platform_text is not None:
            lines.append(f"< platform: {self.platform_text!r}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ expectations

    def _fail(self, what: str) -> AssertionError:
        return AssertionError(f"{what}\nturn:\n{self}")

    def _result(self) -> AgentResult:
        result = self.result
        if result is None:
            raise self._fail("expected a result, but the turn has none (a duplicate delivery?)")
        return result

    def expect_reply(
        self, contains: str | None = None, *, equals: str | None = None, agent: str | None = None
    ) -> Transcript:
        """The reply contains (or equals) the text, and came from `agent` when given."""
        if equals is not None and self.text != equals:
            raise self._fail(f"expected the reply {equals!r}")
        if contains is not None and contains not in self.text:
            raise self._fail(f"expected the reply to contain {contains!r}")
        if equals is None and contains is None and not self.text:
            raise self._fail("expected a reply, got no text")
        if agent is not None and self._result().agent_name != agent:
            raise self._fail(f"expected the reply from {agent}")
        return self

    def expect_question(
        self, field: str | None = None, *, contains: str | None = None, choices: Sequence[str] | None = None
    ) -> Transcript:
        """The agent asks for `field` (and waits for input)."""
        question = self.question
        result = self._result()
        if question is None or result.status is not AgentStatus.WAITING_FOR_INPUT:
            raise self._fail(f"expected a question{f' for {field!r}' if field else ''}")
        if field is not None and question.field != field:
            raise self._fail(f"expected a question for {field!r}, got one for {question.field!r}")
        if contains is not None and contains not in question.question:
            raise self._fail(f"expected the question to contain {contains!r}")
        if choices is not None and list(question.choices or []) != list(choices):
            raise self._fail(f"expected the choices {list(choices)!r}")
        return self

    def expect_completed(
        self, agent: str | None = None, *, data: Mapping[str, Any] | None = None
    ) -> Transcript:
        """The agent completed (with these `data` items, when given)."""
        result = self._result()
        if result.status is not AgentStatus.COMPLETED or result.no_match or not result.processed:
            raise self._fail("expected the agent to complete")
        if agent is not None and result.agent_name != agent:
            raise self._fail(f"expected {agent} to complete")
        for key, value in (data or {}).items():
            if result.data.get(key) != value:
                raise self._fail(f"expected data[{key!r}] == {value!r}, got {result.data.get(key)!r}")
        return self

    def expect_status(self, status: AgentStatus | str) -> Transcript:
        """The turn left the agent in `status`."""
        if str(self._result().status) != str(status):
            raise self._fail(f"expected status {status}")
        return self

    def expect_no_match(self) -> Transcript:
        """No agent matched (the reply came from `handle_no_match`)."""
        if not self._result().no_match:
            raise self._fail("expected no agent to match")
        return self

    def expect_routed(
        self, agent: str, *, strategy: str | None = None, min_confidence: float | None = None
    ) -> Transcript:
        """The router chose `agent` (by `strategy`, at least `min_confidence`)."""
        routing = self.routing
        if routing is None or routing.agent != agent:
            raise self._fail(f"expected routing to {agent}")
        if strategy is not None and routing.strategy != strategy:
            raise self._fail(f"expected the {strategy} strategy, got {routing.strategy}")
        if min_confidence is not None and routing.confidence < min_confidence:
            raise self._fail(f"expected confidence >= {min_confidence}, got {routing.confidence}")
        return self

    def expect_rejected(self, contains: str | None = None) -> Transcript:
        """A guard (`should_process`) refused the message; nothing ran (and nothing failed)."""
        result = self._result()
        if result.status is AgentStatus.FAILED or self.errors:
            codes = ", ".join(e.code for e in self.errors) or result.error or "failed"
            raise self._fail(f"expected the message to be refused by a guard, but the turn failed ({codes})")
        if result.processed or result.duplicate:
            raise self._fail("expected the message to be refused by a guard")
        if contains is not None and contains not in self.text:
            raise self._fail(f"expected the refusal to contain {contains!r}")
        return self

    def expect_error(self, code: str | None = None) -> Transcript:
        """An error event (with this `code`, when given)."""
        if not self.errors or (code is not None and all(e.code != code for e in self.errors)):
            raise self._fail(f"expected an error{f' {code!r}' if code else ''}")
        return self

    def expect_duplicate(self) -> Transcript:
        """The delivery was already processed; nothing ran again."""
        if not any(isinstance(e, DuplicateEvent) for e in self.events):
            raise self._fail("expected a duplicate delivery")
        return self

    def expect_events(self, *types: str) -> Transcript:
        """These event types occur in this order (other events may come between)."""
        remaining = iter(self.event_types)
        for wanted in types:
            if not any(seen == wanted for seen in remaining):
                raise self._fail(f"expected the events {list(types)} in order")
        return self


class Conversation(Protocol):
    """Anything you can `say` to and get a `Transcript` back: the driver or a platform conversation."""

    async def say(self, text: str) -> Transcript: ...


class ConversationDriver:
    """Talks to an orchestrator as one tenant and user, turn by turn."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        tenant_id: str = "test-tenant",
        user_id: str = "test-user",
        conversation_id: str | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.history: list[Transcript] = []

    @classmethod
    @asynccontextmanager
    async def for_agents(
        cls,
        agents: Sequence[type[StandardAgent]] | None = None,
        *,
        tenant_id: str = "test-tenant",
        user_id: str = "test-user",
        orchestrator_class: type[Orchestrator] = Orchestrator,
        **orchestrator_kwargs: Any,
    ) -> AsyncIterator[ConversationDriver]:
        """A driver on a fresh in-memory orchestrator for `agents`, closed afterwards."""
        orchestrator_kwargs.setdefault("store", MemoryStore())
        orchestrator_kwargs.setdefault("isolation", MemoryIsolation())
        orchestrator = orchestrator_class(agents=agents, **orchestrator_kwargs)
        await orchestrator.initialize()
        try:
            yield cls(orchestrator, tenant_id=tenant_id, user_id=user_id)
        finally:
            await orchestrator.close()

    def as_user(
        self, user_id: str, *, tenant_id: str | None = None, conversation_id: str | None = None
    ) -> ConversationDriver:
        """Another participant on the same orchestrator (same tenant unless given)."""
        return ConversationDriver(
            self.orchestrator,
            tenant_id=tenant_id or self.tenant_id,
            user_id=user_id,
            conversation_id=conversation_id,
        )

    async def say(
        self, text: str, *, metadata: Mapping[str, Any] | None = None, delivery_id: str | None = None
    ) -> Transcript:
        """Send one message and collect the whole turn."""
        transcript = Transcript(message=text)
        async for event in self.orchestrator.process_stream(
            text,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            conversation_id=self.conversation_id,
            metadata=metadata,
            delivery_id=delivery_id,
        ):
            transcript.events.append(event)
        self.history.append(transcript)
        return transcript

    async def stream(self, text: str, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        """The turn's events as they arrive (for asserting on streaming itself)."""
        async for event in self.orchestrator.process_stream(
            text,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            conversation_id=self.conversation_id,
            **kwargs,
        ):
            yield event

    @property
    def active_agent(self) -> ActiveAgent | None:
        """The agent holding this conversation, if any."""
        conversation = self.conversation_id or self.user_id
        for active in self.orchestrator.get_active_agents(self.tenant_id):
            if active.conversation_id == conversation and active.user_id == self.user_id:
                return active
        return None


class RecordingOrchestrator:
    """Wraps an orchestrator for a platform harness and records each turn's events.

    Give it to the channel instead of the orchestrator; everything else passes through.
    """

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._inner = orchestrator
        self.turns: list[Transcript] = []
        self._consumers: list[asyncio.Task[Any] | None] = []  # the task that read each turn's stream
        self._changed = asyncio.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def process_stream(self, message: str, *args: Any, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        """The inner stream, recorded as a `Transcript` in `turns`."""
        transcript = Transcript(message=message)
        consumer = asyncio.current_task()
        try:
            async for event in self._inner.process_stream(message, *args, **kwargs):
                transcript.events.append(event)
                yield event
        finally:
            async with self._changed:
                self.turns.append(transcript)
                self._consumers.append(consumer)
                self._changed.notify_all()

    async def wait_turns(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until `count` turns have been recorded in total."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.turns) >= count)

    async def wait_delivered(self, transcript: Transcript, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until the task that read `transcript`'s stream has finished: the platform delivered that answer.

        For channels that handle each message in a task of its own (the Discord channel does).
        """
        index = next(i for i, turn in enumerate(self.turns) if turn is transcript)
        consumer = self._consumers[index]
        if consumer is None or consumer is asyncio.current_task():
            return
        await asyncio.wait({consumer}, timeout=timeout)
        if not consumer.done():
            raise TimeoutError(
                f"the platform was still delivering the answer to {transcript.message!r} after {timeout:g} s"
                f"\nturn:\n{transcript}"
            )


class PlatformConversation:
    """A conversation over a platform fake, behind the same `say` as `ConversationDriver`.

    Give the channel a `RecordingOrchestrator` instead of the orchestrator. `send(text)` delivers a
    message over the platform; `settle(transcript)` waits until the platform has finished answering that
    turn; `shown()` returns the text the platform shows last for it (kept as `Transcript.platform_text`).
    The `over_slack` and `over_discord` constructors set these up for the loopback fakes: there
    `platform_text` is the last message the bot posted after `send`, "" when it posted none (a guard that
    refused without a reply).
    """

    def __init__(
        self,
        recorder: RecordingOrchestrator,
        send: Callable[[str], Awaitable[Any]],
        *,
        shown: Callable[[], str | None] | None = None,
        settle: Callable[[Transcript], Awaitable[Any]] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.recorder = recorder
        self._send = send
        self._shown = shown
        self._settle = settle
        self.timeout = timeout
        """How long `say` waits for the platform to start the turn."""

    @classmethod
    def over_slack(
        cls, bot: SlackTestBot, *, team_id: str, user: str, channel: str | None = None
    ) -> PlatformConversation:
        """Direct messages from `user` to a `SlackTestBot` whose orchestrator is a `RecordingOrchestrator`."""
        recorder = bot.orchestrator
        if not isinstance(recorder, RecordingOrchestrator):
            raise TypeError("start the SlackTestBot with a RecordingOrchestrator(orchestrator)")
        dm = channel or f"D{user}"
        target = {"handled": 0}
        earlier: set[str] = set()  # the bot's messages before this turn

        async def send(text: str) -> None:
            assert bot.channel is not None
            target["handled"] = bot.channel.events_handled + 1
            earlier.clear()
            earlier.update(m.ts for m in bot.fake.bot_messages(channel=dm))
            await bot.dm(team_id, user=user, text=text, channel=dm)

        async def settle(transcript: Transcript) -> None:
            try:
                await bot.settle(target["handled"])
            except AssertionError as exc:
                raise TimeoutError(
                    f"Slack was still handling the message {transcript.message!r} ({exc})"
                    f"\nturn:\n{transcript}"
                ) from None

        def shown() -> str:
            messages = [m for m in bot.fake.bot_messages(channel=dm) if m.ts not in earlier]
            return messages[-1].text if messages else ""

        return cls(recorder, send, shown=shown, settle=settle)

    @classmethod
    def over_discord(
        cls, fake: FakeDiscord, recorder: RecordingOrchestrator, *, user_id: int, timeout: float = 10.0
    ) -> PlatformConversation:
        """Direct messages from `user_id` to a Discord channel on `fake` that was given `recorder`;
        `timeout` bounds the wait for each turn to start and for its answer to be delivered."""
        dm = fake.dm_channel_id(user_id)
        earlier: set[int] = set()  # the bot's messages before this turn

        async def send(text: str) -> None:
            earlier.clear()
            earlier.update(m.id for m in fake.bot_messages(dm))
            await fake.user_message(text, user_id=user_id)

        def shown() -> str:
            messages = [m for m in fake.bot_messages(dm) if m.id not in earlier]
            return messages[-1].content if messages else ""

        async def settle(transcript: Transcript) -> None:
            # The channel answers each message in a task of its own: once it ends, the answer is shown
            # ("Done." for a turn without text, nothing for a guard that refused silently).
            await recorder.wait_delivered(transcript, timeout)

        return cls(recorder, send, shown=shown, settle=settle, timeout=timeout)

    async def say(self, text: str) -> Transcript:
        """Deliver `text` over the platform; the recorded turn once the platform has answered it."""
        before = len(self.recorder.turns)
        await self._send(text)
        try:
            await self.recorder.wait_turns(before + 1, self.timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no turn for {text!r} reached the orchestrator in {self.timeout:g} s: the platform ignored "
                "the message or is still running the turn"
            ) from None
        transcript = self.recorder.turns[before]
        if self._settle is not None:
            await self._settle(transcript)
        if self._shown is not None:
            transcript.platform_text = self._shown()
        return transcript


# ---------------------------------------------------------------------------------- pytest fixtures


@pytest.fixture
def flowagents_agents() -> Sequence[type[StandardAgent]] | None:
    """The agents the `flowagents_orchestrator` fixture runs; override it (default: all registered)."""
    return None


@pytest_asyncio.fixture
async def flowagents_orchestrator(
    flowagents_agents: Sequence[type[StandardAgent]] | None,
) -> AsyncIterator[Orchestrator]:
    """A fresh, initialised in-memory orchestrator for the test; closed afterwards."""
    orchestrator = Orchestrator(agents=flowagents_agents, store=MemoryStore(), isolation=MemoryIsolation())
    await orchestrator.initialize()
    yield orchestrator
    await orchestrator.close()


@pytest.fixture
def conversation(flowagents_orchestrator: Orchestrator) -> ConversationDriver:
    """A `ConversationDriver` on `flowagents_orchestrator` as tenant `test-tenant`, user `test-user`."""
    return ConversationDriver(flowagents_orchestrator)
