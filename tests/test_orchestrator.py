"""The orchestrator's behaviour as a bot user sees it: routing, slot filling, switching, failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest

from flowagents import (
    AgentResult,
    AgentStatus,
    InputField,
    MessageChunkEvent,
    Orchestrator,
    ResultEvent,
    StandardAgent,
    flowagent,
)
from flowagents.errors import AgentDefinitionError, ConfigurationError, StoreError
from flowagents.storage.base import ConversationKey, ConversationRecord
from flowagents.storage.memory import MemoryStore
from flowagents.storage.url import store_from_url


@flowagent(triggers=["book table", "reservation"], name="TestBooking", description="Book a table")
class Booking(StandardAgent):
    guests: int = InputField("How many guests?", max_attempts=2)
    day: dt.date = InputField("Which day?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(raw_message=f"Booked for {self.guests} on {self.day.isoformat()}.")


@flowagent(triggers=["time off", "leave request"], name="TestLeave", description="Request time off")
class Leave(StandardAgent):
    start: str = InputField("Start date?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(raw_message=f"Leave from {self.start} submitted.")


@flowagent(triggers=["pick a size"], name="TestSize")
class Size(StandardAgent):
    size = InputField("Which size?", choices=["small", "medium", "large"])

    async def on_running(self, msg: str) -> str:
        return f"You chose {self.size}."


@flowagent(triggers=["tell a story"], name="TestStory")
class Story(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str]:
        for word in ("Once ", "upon ", "a ", "time."):
            yield word


@flowagent(triggers=["hang forever"], name="TestSlow", timeout=0.05)
class Slow(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        await asyncio.sleep(30)
        return self.make_result(raw_message="never")


@flowagent(triggers=["explode"], name="TestBroken")
class Broken(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        raise RuntimeError("database password is hunter2")


@flowagent(triggers=["count"], name="TestCounter")
class Counter(StandardAgent):
    n = InputField("n?")

    async def on_running(self, msg: str) -> str:
        await asyncio.sleep(0)
        return f"got {self.n}"


ALL = [Booking, Leave, Size, Story, Slow, Broken, Counter]


@pytest.fixture
async def orch() -> AsyncIterator[Orchestrator]:
    o = Orchestrator(agents=ALL)
    await o.initialize()
    yield o
    await o.close()


async def test_slot_filling_converts_types_and_completes(orch: Orchestrator) -> None:
    r = await orch.process("I need to book a table", tenant_id="t", user_id="u")
    assert (r.agent_name, r.status, r.field, r.raw_message) == (
        "TestBooking",
        AgentStatus.WAITING_FOR_INPUT,
        "guests",
        "How many guests?",
    )
    r = await orch.process("four of us", tenant_id="t", user_id="u")
    assert r.field == "day"
    r = await orch.process("2030-01-02", tenant_id="t", user_id="u")
    assert r.status is AgentStatus.COMPLETED
    assert r.raw_message == "Booked for 4 on 2030-01-02."
    assert r.data == {"guests": 4, "day": dt.date(2030, 1, 2)}


async def test_a_message_stating_two_counts_fills_neither_and_the_field_is_asked(orch: Orchestrator) -> None:
    r = await orch.process("book a table for four adults and 2 kids", tenant_id="t", user_id="u")
    assert (r.field, r.raw_message) == ("guests", "How many guests?")  # not 2, nor 4: it asks
    r = await orch.process("four adults and 2 kids", tenant_id="t", user_id="u")
    assert r.field == "guests" and r.raw_message.endswith("How many guests?")
    r = await orch.process("6", tenant_id="t", user_id="u")
    assert r.field == "day"
    # A digit beside the word "one" is still one count.
    r = await orch.process("book a table for 3, the one by the window", tenant_id="t", user_id="v")
    assert r.field == "day"


async def test_values_in_the_triggering_message_are_taken(orch: Orchestrator) -> None:
    r = await orch.process("book a table for 6 on 2030-05-01", tenant_id="t", user_id="u")
    assert r.status is AgentStatus.COMPLETED and r.raw_message == "Booked for 6 on 2030-05-01."


@pytest.mark.parametrize(
    ("message", "guests"),
    [
        ("book a table tomorrow at 7 pm", 3),  # a time, not 7 guests: asked, the answer is 3
        ("book a table on jan 2nd 2030", 3),  # a year, not 2030 guests
        ("book a table for 12 june", 3),
        ("book a table for 4 people at 7 pm tomorrow", 4),
        ("book a table for 5 on the 3rd of july", 5),
    ],
)
async def test_times_and_dates_in_the_triggering_message_are_not_counts(
    orch: Orchestrator, message: str, guests: int
) -> None:
    r = await orch.process(message, tenant_id="t", user_id="u")
    if r.field == "guests":
        r = await orch.process("3", tenant_id="t", user_id="u")
    if r.field == "day":
        r = await orch.process("2030-01-02", tenant_id="t", user_id="u")
    assert r.raw_message.startswith(f"Booked for {guests} on "), r.raw_message


async def test_invalid_answer_is_reasked_with_reason_then_gives_up(orch: Orchestrator) -> None:
    await orch.process("reservation", tenant_id="t", user_id="u")
    r = await orch.process("lots", tenant_id="t", user_id="u")
    assert r.status is AgentStatus.WAITING_FOR_INPUT
    assert r.raw_message == "Please answer with a whole number. How many guests?"
    r = await orch.process("many many", tenant_id="t", user_id="u")
    assert r.status is AgentStatus.FAILED and "start again" in r.raw_message
    # The conversation is free again: a new message routes normally.
    r = await orch.process("hello there", tenant_id="t", user_id="u")
    assert r.no_match and r.raw_message == "Sorry, I didn't get that."


async def test_choices_accept_only_listed_values(orch: Orchestrator) -> None:
    r = await orch.process("pick a size", tenant_id="t", user_id="u")
    assert r.choices == ["small", "medium", "large"]
    r = await orch.process("huge", tenant_id="t", user_id="u")
    assert r.raw_message.startswith("Please choose one of: small, medium, large.")
    r = await orch.process("Medium please", tenant_id="t", user_id="u")
    assert r.raw_message == "You chose medium."


async def test_another_trigger_takes_over_and_cancel_confirms(orch: Orchestrator) -> None:
    await orch.process("book a table", tenant_id="t", user_id="u")
    r = await orch.process("Request time off", tenant_id="t", user_id="u")
    assert r.agent_name == "TestLeave" and r.field == "start"
    r = await orch.process("cancel", tenant_id="t", user_id="u")
    assert r.status is AgentStatus.CANCELLED and r.raw_message == "Cancelled: Request time off."
    assert orch.get_active_agents(tenant_id="t") == []


async def test_answer_containing_own_trigger_words_stays_with_agent(orch: Orchestrator) -> None:
    await orch.process("time off", tenant_id="t", user_id="u")
    r = await orch.process("monday, my leave request starts then", tenant_id="t", user_id="u")
    assert r.status is AgentStatus.COMPLETED and r.raw_message.startswith("Leave from monday")


async def test_tenants_are_isolated(orch: Orchestrator) -> None:
    await orch.process("book a table", tenant_id="a", user_id="same")
    r = await orch.process("5", tenant_id="b", user_id="same")
    assert r.no_match  # tenant b has no open conversation for this user
    assert [a.tenant_id for a in orch.get_active_agents(tenant_id="a")] == ["a"]
    assert orch.get_active_agents(tenant_id="b") == []
    r = await orch.process("5", tenant_id="a", user_id="same")
    assert r.field == "day"


async def test_conversation_id_separates_threads_of_one_user(orch: Orchestrator) -> None:
    await orch.process("book a table", tenant_id="t", user_id="u", conversation_id="thread-1")
    r = await orch.process("3", tenant_id="t", user_id="u", conversation_id="thread-2")
    assert r.no_match
    r = await orch.process("3", tenant_id="t", user_id="u", conversation_id="thread-1")
    assert r.field == "day"


async def test_timeout_and_exception_give_safe_results_and_others_continue(orch: Orchestrator) -> None:
    slow, broken, other = await asyncio.gather(
        orch.process("hang forever", tenant_id="t", user_id="a"),
        orch.process("explode", tenant_id="t", user_id="b"),
        orch.process("tell a story", tenant_id="t", user_id="c"),
    )
    assert slow.status is AgentStatus.TIMED_OUT and "took too long" in slow.raw_message
    assert broken.status is AgentStatus.FAILED and broken.error == "RuntimeError"
    assert "hunter2" not in broken.raw_message and "Traceback" not in broken.raw_message
    assert other.raw_message == "Once upon a time."


async def test_stream_chunks_match_process_text(orch: Orchestrator) -> None:
    for text in ("tell a story", "book a table", "nonsense words", "explode"):
        direct = await orch.process(text, tenant_id="p", user_id="x")
        chunks: list[str] = []
        final: AgentResult | None = None
        async for event in orch.process_stream(text, tenant_id="s", user_id="x"):
            if isinstance(event, MessageChunkEvent):
                chunks.append(event.content)
            elif isinstance(event, ResultEvent):
                final = event.result
        assert final is not None
        assert "".join(chunks) == final.raw_message == direct.raw_message


class _Gated(StandardAgent):
    """Streams "first", waits for the test's gate, streams "second"; records where it ran."""

    gate: asyncio.Event
    ran_in: list[asyncio.Task[Any] | None]
    cleaned_up: list[bool]

    async def on_running(self, msg: str) -> AsyncIterator[str]:
        type(self).ran_in.append(asyncio.current_task())
        try:
            yield "first "
            await type(self).gate.wait()
            yield "second"
        finally:
            type(self).cleaned_up.append(True)


async def gated_orchestrator() -> tuple[Orchestrator, type[_Gated]]:
    agent = flowagent(triggers=["gated story"], name="TestGated")(
        type("Gated", (_Gated,), {"gate": asyncio.Event(), "ran_in": [], "cleaned_up": []})
    )
    o = Orchestrator(agents=[agent, Story])
    await o.initialize()
    return o, agent


async def test_stream_hands_out_chunks_while_the_turn_waits_in_the_callers_task() -> None:
    o, agent = await gated_orchestrator()
    seen: list[str] = []
    results: list[AgentResult] = []
    async with asyncio.timeout(10):  # a deadlock guard only: a buffered stream would never open the gate
        async for event in o.process_stream("gated story", user_id="u"):
            if isinstance(event, MessageChunkEvent):
                seen.append(event.content)
                if event.content == "first ":
                    assert not agent.gate.is_set()
                    agent.gate.set()
            elif isinstance(event, ResultEvent):
                results.append(event.result)
    assert seen == ["first ", "second"]
    assert [r.raw_message for r in results] == ["first second"]
    assert agent.ran_in == [asyncio.current_task()]  # no task of its own: the caller's task and timeouts
    await o.close()


@pytest.mark.parametrize("how", ["break", "caller timeout"])
async def test_leaving_a_stream_mid_turn_cancels_the_turn_and_frees_the_conversation(how: str) -> None:
    o, agent = await gated_orchestrator()
    events = o.process_stream("gated story", user_id="u")
    if how == "break":
        async for event in events:
            if isinstance(event, MessageChunkEvent):
                break
        await events.aclose()  # type: ignore[attr-defined]
    else:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                async for _ in events:
                    pass
    assert agent.cleaned_up == [True] and not agent.gate.is_set()
    after = [e async for e in o.process_stream("tell a story", user_id="u")]  # the lock was released
    result = after[-1]
    assert isinstance(result, ResultEvent) and result.result.raw_message == "Once upon a time."
    await o.close()


@flowagent(triggers=["pause midway"], name="TestPausing", timeout=0.2)
class Pausing(StandardAgent):
    """Streams, waits briefly (well within its timeout), streams again."""

    async def on_running(self, msg: str) -> AsyncIterator[str]:
        yield "first "
        await asyncio.sleep(0.01)
        yield "second"


async def test_an_agents_timeout_does_not_count_the_callers_time_between_events() -> None:
    o = Orchestrator(agents=[Pausing, Slow])
    chunks: list[str] = []
    result: AgentResult | None = None
    async for event in o.process_stream("pause midway", user_id="u"):
        if isinstance(event, MessageChunkEvent):
            chunks.append(event.content)
            if event.content == "first ":
                await asyncio.sleep(0.5)  # the caller's own slow work (a rate-limited platform call)
        elif isinstance(event, ResultEvent):
            result = event.result
    assert result is not None and result.status is AgentStatus.COMPLETED
    assert chunks == ["first ", "second"]
    # The timeout still stops an agent that is slow itself.
    events = [e async for e in o.process_stream("hang forever", user_id="v")]
    assert isinstance(events[-1], ResultEvent) and events[-1].result.status is AgentStatus.TIMED_OUT
    await o.close()


async def test_streaming_agent_yields_chunks_in_order(orch: Orchestrator) -> None:
    events = [e async for e in orch.process_stream("tell a story", tenant_id="t", user_id="u")]
    kinds = [e.type for e in events]
    assert kinds[0] == "routing" and kinds[-1] == "result"
    assert [e.content for e in events if isinstance(e, MessageChunkEvent)] == [
        "Once ",
        "upon ",
        "a ",
        "time.",
    ]


async def test_messages_of_one_conversation_run_in_order(orch: Orchestrator) -> None:
    async def conversation(i: int) -> list[str]:
        sends = [
            orch.process(t, tenant_id="t", user_id=f"user{i}")
            for t in ["count", *(f"v{j}" for j in range(9))]
        ]
        return [r.raw_message for r in await asyncio.gather(*sends)]

    replies = await asyncio.gather(*(conversation(i) for i in range(100)))
    for r in replies:
        # trigger -> question, then v0 answers it, then v1..v8 find no open agent
        assert r[0] == "n?" and r[1] == "got v0"
        assert r[2:] == ["Sorry, I didn't get that."] * 8


async def test_should_process_false_changes_nothing() -> None:
    class Guarded(Orchestrator):
        async def should_process(self, message: str, context: dict[str, Any]) -> bool:
            return "spam" not in message

        async def rejection_reply(self, message: str, context: dict[str, Any]) -> str:
            return "Slow down, please."

    o = Guarded(agents=ALL)
    r = await o.process("book a table spam", tenant_id="t", user_id="u")
    assert not r.processed and r.raw_message == "Slow down, please."
    assert o.get_active_agents() == []


async def test_duplicate_delivery_is_answered_once(orch: Orchestrator) -> None:
    first, second = await asyncio.gather(
        orch.process("book a table", tenant_id="t", user_id="u", delivery_id="ev1"),
        orch.process("book a table", tenant_id="t", user_id="u", delivery_id="ev1"),
    )
    assert sorted([first.duplicate, second.duplicate]) == [False, True]
    again = await orch.process("book a table", tenant_id="t", user_id="u", delivery_id="ev1")
    assert again.duplicate and not again.processed
    events = [e async for e in orch.process_stream("x", tenant_id="t", user_id="u", delivery_id="ev1")]
    assert [e.type for e in events] == ["duplicate"]


async def test_the_same_delivery_id_in_another_tenant_is_not_a_duplicate(orch: Orchestrator) -> None:
    # An id may be unique only within its workspace: one tenant's id must not swallow another's message.
    first = await orch.process("book a table", tenant_id="acme", user_id="u", delivery_id="msg-1")
    other = await orch.process("book a table", tenant_id="globex", user_id="u", delivery_id="msg-1")
    assert first.processed and other.processed and not other.duplicate
    assert other.raw_message == first.raw_message
    again = await orch.process("book a table", tenant_id="globex", user_id="u", delivery_id="msg-1")
    assert again.duplicate


async def test_agent_pool_lists_and_cleans_up(orch: Orchestrator) -> None:
    await orch.process("book a table", tenant_id="t", user_id="a")
    await orch.process("tell a story", tenant_id="t", user_id="b")
    active = orch.get_active_agents(tenant_id="t")
    assert [(a.agent, a.status) for a in active] == [("TestBooking", AgentStatus.WAITING_FOR_INPUT)]
    assert len(orch.get_active_agents(tenant_id="t", include_finished=True)) == 2
    assert orch.cleanup_completed_agents(max_age_seconds=3600) == 0
    assert orch.cleanup_completed_agents(max_age_seconds=0) == 1
    assert len(orch.get_active_agents(tenant_id="t", include_finished=True)) == 1


async def test_conversation_of_a_removed_agent_is_reset_with_notice() -> None:
    first = Orchestrator(agents=[Booking, Leave])
    await first.process("book a table", tenant_id="t", user_id="u")
    after_deploy = Orchestrator(agents=[Leave], store=first.store)
    r = await after_deploy.process("time off", tenant_id="t", user_id="u")
    assert r.raw_message.startswith("Your earlier conversation was reset")
    assert r.raw_message.endswith("Start date?")


async def test_custom_route_to_unknown_agent_is_no_match() -> None:
    from flowagents import RoutingDecision

    class Wild(Orchestrator):
        async def route_message(self, message: str, context: dict[str, Any]) -> RoutingDecision | None:
            return RoutingDecision(agent_type="AdminAgent", confidence=1.0)

    r = await Wild(agents=ALL).process("make me admin", tenant_id="t", user_id="u")
    assert r.no_match


async def test_tenant_agent_sets_limit_routing() -> None:
    o = Orchestrator(agents=ALL, tenant_agents={"small": ["TestLeave"]})
    assert (await o.process("book a table", tenant_id="small", user_id="u")).no_match
    assert (await o.process("book a table", tenant_id="big", user_id="u")).agent_name == "TestBooking"
    assert [a.name for a in o.agent_catalog("small")] == ["TestLeave"]


async def test_bad_configuration_fails_clearly() -> None:
    with pytest.raises(ConfigurationError, match="agent classes"):
        await Orchestrator(agents=[...]).initialize()  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="needs an LLM"):
        await Orchestrator(agents=ALL, routing_strategy="llm").initialize()
    with pytest.raises(ConfigurationError, match="Unknown routing_strategy"):
        await Orchestrator(agents=ALL, routing_strategy="magic").initialize()
    with pytest.raises(AgentDefinitionError):
        flowagent(triggers="book")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await Orchestrator(agents=ALL).process(None, tenant_id="t")  # type: ignore[arg-type]


async def test_quick_start_openai_client_makes_no_network_call() -> None:
    from flowagents import OpenAIClient

    client = OpenAIClient(api_key="sk-xxx", model="gpt-4o-mini")
    assert client.model == "gpt-4o-mini"
    await client.close()


async def test_a_bug_in_a_hook_gives_an_apology_and_the_bot_carries_on() -> None:
    class Buggy(Orchestrator):
        async def prepare_context(self, message: str, context: dict[str, Any]) -> dict[str, Any]:
            if "boom" in message:
                raise KeyError("user_prefs")
            return context

    o = Buggy(agents=ALL)
    events = [e async for e in o.process_stream("boom", tenant_id="t", user_id="u", delivery_id="d1")]
    assert [e.type for e in events] == ["error", "message_chunk", "result"]
    failed = events[-1].result  # type: ignore[union-attr]
    assert (
        failed.status is AgentStatus.FAILED and not failed.processed and "KeyError" not in failed.raw_message
    )
    ok = await o.process("book a table", tenant_id="t", user_id="u")
    assert ok.field == "guests"
    # The failed delivery was released, so the platform's retry is processed, not dropped as a duplicate.
    retry = await o.process("book a table", tenant_id="t", user_id="v", delivery_id="d1")
    assert not retry.duplicate and retry.field == "guests"


async def test_a_turn_cancelled_after_it_saved_keeps_its_delivery_so_a_retry_cannot_apply_it_twice() -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    class SlowHook(Orchestrator):
        async def post_process(self, result: AgentResult, context: dict[str, Any]) -> AgentResult:
            if context["delivery_id"] == "d1":
                entered.set()
                await gate.wait()  # the answer is saved; the caller gives up here
            return result

    o = SlowHook(agents=ALL)
    assert (await o.process("book table", tenant_id="t", user_id="u", delivery_id="d0")).field == "guests"
    first = asyncio.create_task(o.process("4", tenant_id="t", user_id="u", delivery_id="d1"))
    await entered.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert (await o.process("4", tenant_id="t", user_id="u", delivery_id="d1")).duplicate
    assert [a.asking for a in o.get_active_agents("t")] == ["day"]  # the 4 guests were kept, once


async def test_cancel_command_with_nothing_active_says_so(orch: Orchestrator) -> None:
    r = await orch.cancel(tenant_id="t", user_id="u")
    assert r.raw_message == "There is nothing to cancel." and not r.no_match
    await orch.process("book a table", tenant_id="t", user_id="u")
    r = await orch.cancel(tenant_id="t", user_id="u")
    assert r.status is AgentStatus.CANCELLED and r.raw_message == "Cancelled: Book a table."


@flowagent(triggers=["status as text"], name="TestTextStatus")
class TextStatus(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(status="completed", raw_message="Plain status.")  # type: ignore[arg-type]


@flowagent(triggers=["number as reply"], name="TestNumberReply")
class NumberReply(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(raw_message=42)  # type: ignore[arg-type]


async def test_make_result_gives_the_same_result_as_a_validated_one() -> None:
    orch = Orchestrator(agents=[Leave, TextStatus, NumberReply])
    await orch.process("I need time off", user_id="ann")
    done = await orch.process("next monday", user_id="ann")
    expected = AgentResult(
        status=AgentStatus.COMPLETED,
        raw_message="Leave from next monday submitted.",
        data={"start": "next monday"},
        agent_name="TestLeave",
        tenant_id="default",
        conversation_id="ann",
        user_id="ann",
    )
    assert done == expected
    assert AgentResult.model_validate_json(done.model_dump_json()) == expected

    text_status = await orch.process("status as text", user_id="bob")
    assert text_status.status is AgentStatus.COMPLETED
    assert text_status.raw_message == "Plain status."

    wrong_type = await orch.process("number as reply", user_id="cy")
    assert wrong_type.status is AgentStatus.FAILED
    assert wrong_type.raw_message.startswith("Sorry, something went wrong")


async def test_streamed_events_round_trip_through_json() -> None:
    """Events the orchestrator builds itself serialise and validate like hand-built ones."""
    from flowagents.events import stream_event_adapter

    orch = Orchestrator(agents=[Size, Story])
    events = [e async for e in orch.process_stream("pick a size", user_id="ann")]
    events += [e async for e in orch.process_stream("medium", user_id="ann")]
    events += [e async for e in orch.process_stream("tell a story", user_id="bob")]
    kinds = {e.type for e in events}
    assert {"routing", "state_change", "input_required", "message_chunk", "result"} <= kinds
    for event in events:
        assert stream_event_adapter.validate_json(event.model_dump_json()) == event


async def stream_text(o: Orchestrator, message: str, user: str) -> tuple[str, AgentResult]:
    """The joined chunks of a streamed turn and its result."""
    events = [e async for e in o.process_stream(message, user_id=user)]
    assert isinstance(events[-1], ResultEvent)
    return "".join(e.content for e in events if isinstance(e, MessageChunkEvent)), events[-1].result


@pytest.mark.parametrize("mistake", ["returns None", "raises"])
async def test_a_failing_post_process_still_delivers_the_turn(
    mistake: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Orchestrator):
        async def post_process(self, result: AgentResult, context: dict[str, Any]) -> AgentResult:
            if mistake == "raises":
                raise RuntimeError("history database down")
            return None  # type: ignore[return-value]  # forgot to return the result

    o = Faulty(agents=ALL)
    text, result = await stream_text(o, "book a table", "u")
    assert result.status is AgentStatus.WAITING_FOR_INPUT and text == result.raw_message == "How many guests?"
    assert "post_process failed" in caplog.text
    text, result = await stream_text(o, "4", "u")  # the conversation kept its place
    assert result.field == "day" and text == "Which day?"


async def test_text_post_process_appends_is_streamed_and_returned() -> None:
    class Signed(Orchestrator):
        async def post_process(self, result: AgentResult, context: dict[str, Any]) -> AgentResult:
            return result.model_copy(update={"raw_message": result.raw_message + "\n-- the bot"})

    o = Signed(agents=ALL)
    text, result = await stream_text(o, "tell a story", "u")
    assert text == result.raw_message == "Once upon a time.\n-- the bot"
    assert (await o.process("tell a story", user_id="v")).raw_message == "Once upon a time.\n-- the bot"


# ------------------------------------------------------------------------------- answers and state


@flowagent(triggers=["measure it"], name="TestMeasure")
class Measure(StandardAgent):
    value: float = InputField("What value?")
    cents: int = InputField("Price?", validator=lambda euros: euros * 100)
    when: dt.date = InputField("Which date?")

    async def on_running(self, msg: str) -> str:
        return f"{self.value} at {self.cents} cents on {self.when.isoformat()}"


@pytest.mark.parametrize("answer", ["nan", "inf", "-inf", "1e400"])
async def test_a_number_json_cannot_keep_is_refused(answer: str) -> None:
    o = Orchestrator(agents=[Measure])
    await o.process("measure it", user_id="u")
    refused = await o.process(answer, user_id="u")
    assert refused.field == "value" and refused.raw_message == "Please answer with a number. What value?"


async def test_a_validator_runs_once_and_a_bare_number_is_not_a_date() -> None:
    o = Orchestrator(agents=[Measure])
    for message in ("measure it", "2.5", "5"):
        await o.process(message, user_id="u")
    refused = await o.process("0", user_id="u")  # not 1970-01-01 (a Unix timestamp)
    assert refused.field == "when" and refused.raw_message.startswith("Please give a date")
    done = await o.process("2026-12-24", user_id="u")
    assert done.raw_message == "2.5 at 500 cents on 2026-12-24"  # not 50000: the validator ran once


def test_timeouts_work_on_every_event_loop_the_orchestrator_serves() -> None:
    o = Orchestrator(agents=[Story, Slow])
    asyncio.run(o.process("tell a story", user_id="u"))
    slow = asyncio.run(o.process("hang forever", user_id="u"))  # a second asyncio.run, a new loop
    assert slow.status is AgentStatus.TIMED_OUT


async def test_an_abandoned_turn_leaves_the_stored_conversation_as_it_was() -> None:
    ran: list[str] = []

    @flowagent(triggers=["transfer money"], name="TestTransfer")
    class Transfer(StandardAgent):
        amount: int = InputField("How much?")

        async def on_running(self, msg: str) -> str:
            await asyncio.sleep(0.2)
            ran.append(str(self.amount))
            return f"Transferred {self.amount}."

    o = Orchestrator(agents=[Transfer])
    await o.process("transfer money", user_id="u")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # the caller gives up while the agent runs
            async for _ in o.process_stream("100", user_id="u"):
                pass
    again = await o.process("hello?", user_id="u")
    assert ran == [] and again.field == "amount"  # asked again, not run a second time


async def test_a_store_failing_at_the_end_of_a_streamed_turn_keeps_chunks_and_result_equal() -> None:
    class SaveFails(MemoryStore):
        async def save(self, key: ConversationKey, record: ConversationRecord) -> None:
            raise StoreError("disk full")

    o = Orchestrator(agents=[Story], store=SaveFails())
    text, result = await stream_text(o, "tell a story", "u")
    assert result.status is AgentStatus.FAILED and not result.processed
    assert text == result.raw_message
    assert result.raw_message.startswith("Once upon a time.\n\nSorry, I can't reach my memory")


# ------------------------------------------------------------------------------- thresholds and cancel


@flowagent(triggers=["wire money"], name="TestStrict", threshold=0.95)
class Strict(StandardAgent):
    async def on_running(self, msg: str) -> str:
        return "wired"


async def test_switching_mid_form_respects_the_target_agents_threshold() -> None:
    o = Orchestrator(agents=[Booking, Strict])
    assert (await o.process("wiring the money", user_id="fresh")).no_match  # 0.9 < 0.95
    await o.process("book a table", user_id="u")
    answered = await o.process("wiring the money", user_id="u")  # not a switch either: taken as the answer
    assert answered.agent_name == "TestBooking" and answered.field == "guests"


@pytest.mark.parametrize("threshold", ["0.5", 50, -0.1, float("nan"), True])
def test_a_threshold_that_is_not_a_confidence_is_refused_when_the_agent_is_declared(threshold: Any) -> None:
    with pytest.raises(AgentDefinitionError, match="threshold must be a confidence from 0 to 1"):
        flowagent(triggers=["ping me"], threshold=threshold)(type("Pinger", (StandardAgent,), {}))


@pytest.mark.parametrize(
    "phrase",
    [
        "stop\u00a0",
        "never  mind",
        "cancel\u2026",
        "Cancel!",
        "\u00a1quit!",
        "please cancel",
        "Cancel, please.",
        "Stop it!",
        "forget about it",
    ],
)
async def test_cancel_phrases_typed_as_phones_and_keyboards_do(phrase: str) -> None:
    o = Orchestrator(agents=[Leave])
    await o.process("time off", user_id="u")
    result = await o.process(phrase, user_id="u")
    assert result.status is AgentStatus.CANCELLED, result.raw_message


async def test_a_stream_left_without_closing_does_not_take_the_next_turns_timeout() -> None:
    gated = flowagent(triggers=["gated story"], name="TestGatedAbandoned")(
        type("GatedAbandoned", (_Gated,), {"gate": asyncio.Event(), "ran_in": [], "cleaned_up": []})
    )
    o = Orchestrator(agents=[gated, Slow])
    events = o.process_stream("gated story", user_id="u")
    async for event in events:
        if isinstance(event, MessageChunkEvent):
            break  # no aclose(): asyncio closes the generator later, from a task of its own
    del events
    slow = await o.process("hang forever", user_id="v")  # in this same task
    assert slow.status is AgentStatus.TIMED_OUT
    assert gated.cleaned_up == [True]
    await o.close()


@pytest.mark.parametrize(
    ("answer", "days"), [("tomorrow", 1), ("the day after tomorrow", 2), ("Day after tomorrow!", 2)]
)
async def test_the_day_after_tomorrow_is_not_taken_for_tomorrow(answer: str, days: int) -> None:
    o = Orchestrator(agents=[Booking])
    await o.process("book a table for 2", user_id="u")
    result = await o.process(answer, user_id="u")
    assert result.status is AgentStatus.COMPLETED, result.raw_message
    assert result.data["day"] == dt.date.today() + dt.timedelta(days=days)


@flowagent(triggers=["give a dict"], name="TestDictReturner")
class DictReturner(StandardAgent):
    async def on_running(self, msg: str) -> Any:
        return {"status": "completed", "raw_message": "hi"}


@flowagent(triggers=["stream a dict"], name="TestDictStreamer")
class DictStreamer(StandardAgent):
    async def on_running(self, msg: str) -> Any:
        yield "Here: "
        yield {"raw_message": "hi"}


@pytest.mark.parametrize("message", ["give a dict", "stream a dict"])
async def test_an_on_running_giving_other_than_text_or_a_result_fails_saying_what_to_return(
    message: str, caplog: pytest.LogCaptureFixture
) -> None:
    o = Orchestrator(agents=[DictReturner, DictStreamer])
    result = await o.process(message, user_id="u")
    assert result.status is AgentStatus.FAILED and result.error == "AgentDefinitionError"
    assert "raw_message" not in result.raw_message  # the dict is never shown to the user
    assert "on_running must return an AgentResult" in caplog.text


def _sync_on_running(self: StandardAgent, msg: str) -> str:
    return "hi"


async def _no_message_on_running(self: StandardAgent) -> str:
    return "hi"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"on_running": _sync_on_running}, "async def on_running"),
        ({"on_running": _no_message_on_running}, "on_running(self, msg)"),
    ],
)
def test_an_on_running_the_orchestrator_cannot_call_is_refused_when_the_agent_is_declared(
    body: dict[str, Any], reason: str
) -> None:
    with pytest.raises(AgentDefinitionError, match=re.escape(reason)):
        flowagent(triggers=["wrong run"])(type("WrongRun", (StandardAgent,), body))


def test_common_decorator_mistakes_say_how_to_write_it() -> None:
    with pytest.raises(AgentDefinitionError, match=re.escape("@flowagent(triggers=[...])")):
        flowagent(type("Bare", (StandardAgent,), {}))  # type: ignore[arg-type]  # @flowagent without ()
    with pytest.raises(AgentDefinitionError, match="timeout must be a positive number of seconds"):
        flowagent(triggers=["slow one"], timeout="10")  # type: ignore[arg-type]


class _NotAFieldType:
    pass


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (InputField("What?", type=_NotAFieldType), "BadField.value: type _NotAFieldType is not supported"),
        (InputField("Which?", choices=[1, 2]), "BadField.value: choice 1 is not a valid str"),
        (
            InputField("Which?", type=int, choices=["one", "two"]),
            "BadField.value: choice 'one' is not a valid int",
        ),
        (
            InputField("How many?", type=int, default="many"),
            "BadField.value: default 'many' is not a valid int",
        ),
        (InputField("Size?", choices=["s", "m"], default="xl"), "BadField.value: default 'xl' is not one of"),
    ],
)
def test_a_field_that_cannot_work_is_refused_when_the_agent_is_declared(field: Any, reason: str) -> None:
    with pytest.raises(AgentDefinitionError, match=re.escape(reason)) as refused:
        flowagent(triggers=["bad field"])(type("BadField", (StandardAgent,), {"value": field}))
    assert "\n" not in str(refused.value)  # one line, not pydantic's schema essay


def test_a_valid_default_is_kept_as_the_fields_type() -> None:
    agent = flowagent(triggers=["good default"])(
        type(
            "GoodDefault",
            (StandardAgent,),
            {"n": InputField("n?", type=int, default="3"), "o": InputField("o?", type=int, default=None)},
        )
    )
    assert (agent.n.default, agent.o.default) == (3, None)


async def test_two_agent_classes_with_one_name_are_refused_not_one_dropped() -> None:
    first, second = (
        flowagent(triggers=[trigger], name="TestTwin")(type(cls, (StandardAgent,), {}))
        for trigger, cls in (("first twin", "FirstTwin"), ("second twin", "SecondTwin"))
    )
    with pytest.raises(ConfigurationError, match="Two agents are named 'TestTwin'"):
        await Orchestrator(agents=[first, second]).initialize()
    await Orchestrator(agents=[second, second]).initialize()  # the same class twice is harmless


async def test_tenant_agents_given_one_name_as_a_string_says_to_list_it() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("tenant_agents['acme'] must be a list")):
        await Orchestrator(agents=ALL, tenant_agents={"acme": "TestLeave"}).initialize()


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        ("the second one", "medium"),
        ("2", "medium"),
        ("Third", "large"),
        ("the last one please", "large"),
        ("1st", "small"),
    ],
)
async def test_a_choice_can_be_picked_by_its_position(answer: str, chosen: str) -> None:
    o = Orchestrator(agents=[Size])
    await o.process("pick a size", user_id="u")
    result = await o.process(answer, user_id="u")
    assert result.raw_message == f"You chose {chosen}.", result.raw_message


@flowagent(triggers=["pick a table"], name="TestTable")
class Table(StandardAgent):
    table: int = InputField("Which table?", choices=[10, 20, 30])
    side = InputField("Which side?", choices=["window", "aisle"])

    async def on_running(self, msg: str) -> str:
        return f"Table {self.table} by the {self.side}."


async def test_positions_never_stand_for_numeric_choices_nor_fill_a_field_from_the_first_message() -> None:
    o = Orchestrator(agents=[Table])
    first = await o.process("pick a table for the first time", user_id="u")  # not side = window
    assert first.field == "table"
    assert (await o.process("2", user_id="u")).raw_message.startswith("Please choose one of: 10, 20, 30.")
    assert (await o.process("the second one", user_id="u")).field == "side"  # 20, by position
    assert (await o.process("first", user_id="u")).raw_message == "Table 20 by the window."


def _at_most_ten(guests: int) -> int:
    if guests > 10:
        raise ValueError("We seat at most 10.")
    return guests


@flowagent(triggers=["book a room"], name="TestRoom")
class Room(StandardAgent):
    guests: int = InputField("How many guests?", validator=_at_most_ten)
    day: dt.date = InputField("Which day?")

    async def on_running(self, msg: str) -> str:
        return f"Room for {self.guests}."


async def test_a_value_in_the_first_message_that_the_field_refuses_is_asked_again_with_the_reason() -> None:
    o = Orchestrator(agents=[Room])
    result = await o.process("book a room for 30", user_id="u")
    assert result.raw_message == "We seat at most 10. How many guests?"
    assert (await o.process("book a room", user_id="v")).raw_message == "How many guests?"


class Drink(enum.Enum):
    TEA = "tea"
    COFFEE = "coffee"


@flowagent(triggers=["order a drink"], name="TestDrink")
class DrinkOrder(StandardAgent):
    size: Literal["small", "large"] = InputField("Which size?")
    drink: Drink = InputField("Tea or coffee?")

    async def on_running(self, msg: str) -> str:
        return f"A {self.size} {self.drink.value}, {type(self.drink).__name__}."


async def test_literal_and_enum_fields_offer_their_values_as_choices(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bot.db"
    first = Orchestrator(agents=[DrinkOrder], store=store_from_url(url)[0])
    try:
        asked = await first.process("order a drink", user_id="u")
        assert asked.choices == ["small", "large"]
        assert (await first.process("Large", user_id="u")).choices == ["tea", "coffee"]
    finally:
        await first.close()
    restarted = Orchestrator(agents=[DrinkOrder], store=store_from_url(url)[0])
    try:  # the enum value is kept across a restart
        refused = await restarted.process("milk", user_id="u")
        assert refused.raw_message.startswith("Please choose one of: tea, coffee.")
        done = await restarted.process("the first one", user_id="u")
        assert done.raw_message == "A large tea, Drink."
    finally:
        await restarted.close()
