"""Streaming LLM answers through Orchestrator.process_stream, cancellation, LLM errors, usage per tenant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.assistant import NO_ANSWER, AssistantAgent
from flowagents import (
    AgentStatus,
    ErrorEvent,
    MessageChunkEvent,
    Orchestrator,
    ResultEvent,
    StandardAgent,
    StreamEvent,
    flowagent,
)
from flowagents.testing.openai import Fail, FakeOpenAI, Raw, Reply

POLITE_FAILURE = "Sorry, something went wrong while handling that. Please try again."


@flowagent(triggers=["slow story"], name="StreamSlowStory", timeout=0.5)
class SlowStory(StandardAgent):
    """Streams a story with no tenant passed: the orchestrator's turn tenant is billed."""

    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        assert self.llm is not None
        async for chunk in self.llm.stream([{"role": "user", "content": msg}]):
            yield chunk


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def orchestrator(fake: FakeOpenAI, **client: Any) -> Orchestrator:
    return Orchestrator(llm_client=fake.client(**client), agents=[AssistantAgent, SlowStory])


async def test_chunks_reach_the_caller_before_the_model_finishes(fake: FakeOpenAI) -> None:
    orch = orchestrator(fake)
    last_chunk_gate = asyncio.Event()
    fake.script(Reply(chunks=["Canberra ", "is the ", last_chunk_gate, "capital."]))
    events: list[StreamEvent] = []
    seen_before_gate: list[str] = []
    async with asyncio.timeout(20):  # a deadlock guard only: buffering would never open the gate
        async for event in orch.process_stream(
            "what is the capital of Australia", tenant_id="T1", user_id="u"
        ):
            events.append(event)
            if isinstance(event, MessageChunkEvent) and not last_chunk_gate.is_set():
                seen_before_gate.append(event.content)
                if len(seen_before_gate) == 2:
                    assert fake.streams_completed == 0  # the model has not sent its last chunk yet
                    last_chunk_gate.set()
    assert seen_before_gate == ["Canberra ", "is the "]
    result = events[-1]
    assert isinstance(result, ResultEvent) and result.result.status is AgentStatus.COMPLETED
    assert result.result.raw_message == "Canberra is the capital."
    assert "".join(e.content for e in events if isinstance(e, MessageChunkEvent)) == result.result.raw_message
    request = fake.chat_requests[0]
    assert request.stream and request.user_text == "what is the capital of Australia"
    await orch.close()


async def test_closing_the_event_stream_closes_the_model_stream(fake: FakeOpenAI) -> None:
    orch = orchestrator(fake)
    never = asyncio.Event()
    fake.script(Reply(chunks=["Once ", never, "upon a time"]))
    events: Any = orch.process_stream("explain something long", tenant_id="T1", user_id="u")
    async for event in events:
        if isinstance(event, MessageChunkEvent):
            break
    await events.aclose()  # the user cancelled: the orchestrator cancels the turn
    await asyncio.wait_for(fake.stream_closed.wait(), 10)
    assert fake.streams_closed_by_client == 1 and fake.streams_completed == 0
    await orch.close()


async def test_cancelling_a_turn_closes_the_model_stream(fake: FakeOpenAI) -> None:
    orch = orchestrator(fake)
    never = asyncio.Event()
    first_chunk_sent = asyncio.Event()

    def slow(request: Any) -> Reply:
        first_chunk_sent.set()
        return Reply(chunks=["Once ", never, "upon a time"])

    fake.script(slow)
    turn = asyncio.create_task(orch.process("explain something long", tenant_id="T1", user_id="u"))
    await asyncio.wait_for(first_chunk_sent.wait(), 10)
    turn.cancel()
    await asyncio.wait_for(fake.stream_closed.wait(), 10)
    with pytest.raises(asyncio.CancelledError):
        await turn
    await orch.close()


async def test_agent_timeout_stops_the_model_stream(fake: FakeOpenAI) -> None:
    orch = orchestrator(fake)
    never = asyncio.Event()
    fake.script(Reply(chunks=["It was ", never, "a dark night"]))
    events = [e async for e in orch.process_stream("slow story please", tenant_id="T1", user_id="u")]
    result = events[-1]
    assert isinstance(result, ResultEvent) and result.result.status is AgentStatus.TIMED_OUT
    assert any(isinstance(e, ErrorEvent) and e.code == "timeout" for e in events)
    await asyncio.wait_for(fake.stream_closed.wait(), 10)
    assert fake.streams_completed == 0
    await orch.close()


@pytest.mark.parametrize(
    ("failure", "client"),
    [
        (Fail(401), {"max_retries": 0}),
        (Fail(429, retry_after=0.01), {"max_retries": 1}),
        (Fail(500, retry_after=0.01), {"max_retries": 1}),
        (Reply("late", delay=2), {"timeout": 0.2}),
    ],
    ids=["wrong-key", "rate-limited", "server-error", "timeout"],
)
async def test_llm_errors_become_a_polite_failed_reply(fake: FakeOpenAI, failure: Any, client: Any) -> None:
    orch = orchestrator(fake, **client)
    fake.default = failure
    events = [e async for e in orch.process_stream("what is love?", tenant_id="T1", user_id="u")]
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.code for e in errors] == ["llm_error"]
    result = events[-1]
    assert isinstance(result, ResultEvent)
    assert result.result.status is AgentStatus.FAILED and result.result.error is not None
    assert result.result.error.startswith("LLM")
    assert result.result.raw_message == POLITE_FAILURE
    follow_up = await orch.process("hello there", tenant_id="T1", user_id="u")  # the conversation goes on
    assert follow_up.processed
    await orch.close()


@pytest.mark.parametrize(
    ("answer", "reply", "status"),
    [
        (Reply(chunks=[]), NO_ANSWER, AgentStatus.COMPLETED),
        (Reply(chunks=[" ", "\n"]), NO_ANSWER, AgentStatus.COMPLETED),
        (Reply(chunks=[], finish_reason="content_filter"), POLITE_FAILURE, AgentStatus.FAILED),
        (Reply(chunks=[], refusal="I can't help with that"), POLITE_FAILURE, AgentStatus.FAILED),
    ],
    ids=["empty", "blank", "content-filter", "refusal"],
)
async def test_the_assistant_never_answers_with_an_empty_reply(
    fake: FakeOpenAI, answer: Reply, reply: str, status: AgentStatus
) -> None:
    orch = orchestrator(fake)
    fake.script(answer)
    result = await orch.process("what is love?", tenant_id="T1", user_id="u")
    assert result.status is status and result.raw_message.strip().endswith(reply)
    await orch.close()


async def test_an_answer_cut_short_is_not_delivered_as_complete(fake: FakeOpenAI) -> None:
    orch = orchestrator(fake)
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "Do"}}],
    }
    fake.script(Raw(f"data: {json.dumps(chunk)}\n\n", content_type="text/event-stream"))  # no finish_reason
    events = [e async for e in orch.process_stream("how do i reset it", tenant_id="T1", user_id="u")]
    result = events[-1]
    assert isinstance(result, ResultEvent) and result.result.status is AgentStatus.FAILED
    assert [e.code for e in events if isinstance(e, ErrorEvent)] == ["llm_error"]
    assert result.result.raw_message == "Do\n\n" + POLITE_FAILURE  # what came, then the apology
    await orch.close()


async def test_streamed_usage_is_billed_to_each_tenant(fake: FakeOpenAI) -> None:
    llm = fake.client()
    orch = Orchestrator(llm_client=llm, agents=[AssistantAgent, SlowStory])
    fake.script(
        Reply(chunks=["a", "b"], prompt_tokens=11, completion_tokens=2),
        Reply(chunks=["c"], prompt_tokens=5, completion_tokens=1),
        Reply(chunks=["d"], prompt_tokens=3, completion_tokens=1),
    )
    await orch.process("what is a?", tenant_id="acme", user_id="u")
    await orch.process("slow story", tenant_id="globex", user_id="u")  # the agent passes no tenant_id
    await orch.process("what is b?", tenant_id="acme", user_id="v")
    acme, globex = llm.usage.for_tenant("acme"), llm.usage.for_tenant("globex")
    assert (acme.calls, acme.prompt_tokens, acme.completion_tokens) == (2, 14, 3)
    assert (globex.calls, globex.total_tokens) == (1, 6)
    assert set(llm.usage.by_tenant()) == {"acme", "globex"}
    await orch.close()


async def test_assistant_is_left_out_without_an_llm() -> None:
    from agents.booking import BookingAgent

    orch = Orchestrator(agents=[AssistantAgent, BookingAgent])
    result = await orch.process("what is the meaning of life", user_id="u")
    assert result.no_match  # not routed to an assistant that could only apologise
    assert [a.name for a in orch.agent_catalog()] == ["BookingAgent"]
