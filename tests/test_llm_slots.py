"""Slot filling with the LLM: several fields from one message, corrections, validation, and restraint."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flowagents import AgentResult, AgentStatus, InputField, Orchestrator, StandardAgent, flowagent
from flowagents.testing.openai import ChatRequest, Fail, FakeOpenAI

TOMORROW = dt.date.today() + dt.timedelta(days=1)


def positive(n: int) -> int:
    if n < 1:
        raise ValueError("At least one guest, please.")
    return n


@flowagent(triggers=["book table"], name="SlotBooking", description="Book a table")
class SlotBooking(StandardAgent):
    guests: int = InputField("How many guests?", validator=positive)
    day: dt.date = InputField("Which day?")
    at: dt.time = InputField("What time?")
    name: str = InputField("Under which name?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(
            AgentStatus.COMPLETED, f"Booked {self.guests} on {self.day} at {self.at:%H:%M} for {self.name}."
        )


@flowagent(triggers=["leave request"], name="SlotLeave", description="Request leave")
class SlotLeave(StandardAgent):
    start_date = InputField("Start date?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED, "Submitted!")


AGENTS = [SlotBooking, SlotLeave]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        server.default = {"guests": None, "day": None, "at": None, "name": None}
        yield server


def slots(**values: Any) -> dict[str, Any]:
    return {"guests": None, "day": None, "at": None, "name": None, **values}


async def say(orch: Orchestrator, text: str) -> AgentResult:
    return await orch.process(text, tenant_id="acme", user_id="u1")


async def test_one_message_fills_several_fields(fake: FakeOpenAI) -> None:
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    fake.script(slots(guests=4, day=TOMORROW.isoformat(), at="19:00"))
    result = await say(orch, "book table for four people tomorrow evening at seven")
    assert result.status is AgentStatus.WAITING_FOR_INPUT and result.field == "name"
    assert result.raw_message == "Under which name?"

    request = fake.chat_requests[0]
    schema = request.json_schema
    assert schema is not None and set(schema["properties"]) == {"guests", "day", "at", "name"}
    assert {"type": "integer"} in schema["properties"]["guests"]["anyOf"]  # typed from the field
    assert dt.date.today().isoformat() in request.system_text  # relative dates resolve against today
    assert "book table for four people tomorrow evening at seven" in request.user_text

    done = await say(orch, "Smith")  # a bare answer: no LLM call needed
    assert done.raw_message == f"Booked 4 on {TOMORROW} at 19:00 for Smith."
    assert done.data == {"guests": 4, "day": TOMORROW, "at": dt.time(19, 0), "name": "Smith"}
    assert len(fake.chat_requests) == 1
    await orch.close()


async def test_a_later_message_corrects_an_earlier_answer(fake: FakeOpenAI) -> None:
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    fake.script(slots(guests=4, day=TOMORROW.isoformat(), at="19:00"), slots(guests=6))
    await say(orch, "book table for four people tomorrow evening at seven")
    result = await say(orch, "actually make it 6")
    assert result.status is AgentStatus.WAITING_FOR_INPUT and result.field == "name"  # still needs the name
    assert (
        "values_so_far" in fake.chat_requests[1].user_text
        and '"guests": 4' in fake.chat_requests[1].user_text
    )
    done = await say(orch, "Smith")
    assert done.data["guests"] == 6 and done.data["name"] == "Smith"
    await orch.close()


async def test_llm_values_still_pass_each_fields_validation(fake: FakeOpenAI) -> None:
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    fake.script({"guests": 0, "day": "not a date", "at": "25:99", "name": "Ann", "admin": True})
    result = await say(orch, "book table for zero people, someday, at 25:99, name Ann")
    assert result.field == "guests"  # 0 fails the validator; the bad date and time are dropped too
    result = await say(orch, "3")  # a bare answer: parsed without the LLM
    assert result.field == "day"
    fake.script(slots(day=TOMORROW.isoformat(), at="20:15"))
    done = await say(orch, "tomorrow, quarter past eight in the evening")
    assert (
        done.status is AgentStatus.COMPLETED
        and done.data["name"] == "Ann"
        and done.data["at"] == dt.time(20, 15)
    )
    await orch.close()


async def test_a_value_of_the_wrong_type_drops_only_that_value(fake: FakeOpenAI) -> None:
    # A server that does not enforce the schema: "a few" for an int must not cost the name stated too.
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    fake.script(slots(guests="a few", day=TOMORROW.isoformat(), at="19:00", name="Smith"))
    result = await say(orch, "book table for a few of us tomorrow evening around 7pm, name is Smith")
    assert len(fake.chat_requests) == 1
    assert result.field == "guests"  # asked normally; the other values were kept
    done = await say(orch, "3")
    assert done.status is AgentStatus.COMPLETED
    assert done.data == {"guests": 3, "day": TOMORROW, "at": dt.time(19, 0), "name": "Smith"}
    await orch.close()


@flowagent(triggers=["réserver"], name="Réservation d'une table au restaurant du Quartier Latin, à Paris")
class Reservation(StandardAgent):
    couverts: int = InputField("Combien de couverts ?")
    jour: dt.date = InputField("Quel jour ?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED, f"Réservé : {self.couverts}, {self.jour}.")


async def test_agents_with_any_name_get_a_schema_name_the_api_accepts(fake: FakeOpenAI) -> None:
    # OpenAI refuses (HTTP 400) a json_schema name outside [a-zA-Z0-9_-] or longer than 64 characters:
    # slot filling would fail on every turn for such an agent.
    orch = Orchestrator(llm_client=fake.client(), agents=[Reservation])
    fake.script({"couverts": 4, "jour": TOMORROW.isoformat()})
    done = await say(orch, "réserver pour quatre personnes demain soir")
    assert done.raw_message == f"Réservé : 4, {TOMORROW}."
    name = fake.chat_requests[0].body["response_format"]["json_schema"]["name"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name), name
    await orch.close()


async def test_no_llm_call_where_it_cannot_add_anything(fake: FakeOpenAI) -> None:
    # The quick start: an LLM configured, single-field agents routed by triggers.
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    first = await say(orch, "I need a leave request")
    assert first.raw_message == "Start date?"
    done = await say(orch, "next monday")
    assert done.raw_message == "Submitted!"
    booking = await orch.process("book table for 2 on 2030-01-02 at 19:30", tenant_id="acme", user_id="u2")
    assert booking.field == "name"  # the deterministic path filled guests, day and time: one field left
    assert fake.requests == []
    await orch.close()


async def test_without_an_llm_the_deterministic_path_is_unchanged() -> None:
    orch = Orchestrator(agents=AGENTS)
    assert orch.slot_extractor is None
    result = await say(orch, "book table for 2 on 2030-01-02")
    assert result.field == "at"
    result = await say(orch, "7pm")
    assert result.field == "name"
    done = await say(orch, "Smith")
    assert done.raw_message == "Booked 2 on 2030-01-02 at 19:00 for Smith."


async def test_a_failing_llm_falls_back_and_backs_off(fake: FakeOpenAI) -> None:
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    fake.default = Fail(500)
    result = await say(orch, "book table for four people tomorrow evening at seven")
    assert result.field == "guests"  # the deterministic path took over: the date was read, guests are asked
    result = await say(orch, "four of us, around seven")
    assert result.field == "guests" or result.field == "at"
    for text in ("4", "7pm", "Smith and co"):
        result = await say(orch, text)
    assert len(fake.chat_requests) == 2  # after two failures the extractor stopped calling
    assert result.status is AgentStatus.COMPLETED
    await orch.close()


async def test_usage_of_slot_filling_is_billed_to_the_tenant(fake: FakeOpenAI) -> None:
    llm = fake.client()
    orch = Orchestrator(llm_client=llm, agents=AGENTS)

    def answer(request: ChatRequest) -> dict[str, Any]:
        return slots(guests=4)

    fake.default = answer
    await say(orch, "book table for four people tomorrow evening at seven")
    assert llm.usage.for_tenant("acme").calls == 1 and llm.usage.for_tenant("acme").total_tokens > 0
    await orch.close()


async def test_asking_for_an_agent_without_values_makes_no_llm_call(fake: FakeOpenAI) -> None:
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    result = await say(orch, "Hi, I need to book a table please")
    assert result.field == "guests" and fake.requests == []
    await orch.close()


async def test_malformed_answers_do_not_pause_the_llm(fake: FakeOpenAI) -> None:
    orch = Orchestrator(llm_client=fake.client(), agents=AGENTS)
    fake.script("not json", "still not json", slots(guests=5))
    for user in ("a", "b", "c"):
        result = await orch.process(
            "book table for five people tomorrow evening", tenant_id="acme", user_id=user
        )
    assert len(fake.chat_requests) == 3  # the server is up: no back-off for bad answers
    assert result.field == "at"  # guests and date came from the deterministic path
    await orch.close()
