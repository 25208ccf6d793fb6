"""Mining trigger phrases from example utterances, and routing with them."""

from __future__ import annotations

import pytest

from flowagents import ConfigurationError, Orchestrator, StandardAgent, flowagent
from flowagents.routing.mining import mine_triggers

EXAMPLES = {
    "balance": [
        "what is my account balance",
        "show me my checking balance",
        "how much money is in my account",
        "tell me my savings balance please",
    ],
    "weather": [
        "what is the weather like today",
        "will it rain tomorrow",
        "what's the weather forecast for the weekend",
        "is it going to rain in paris",
    ],
    "alarm": [
        "set an alarm for 7 am",
        "wake me up at six",
        "please set an alarm for noon",
        "cancel my alarm for tomorrow",
    ],
}


def test_discriminative_phrases_become_triggers() -> None:
    mined = mine_triggers(EXAMPLES, min_support=2, min_precision=0.8)
    assert mined["balance"][0] == "balance"  # in 3 of 4 balance examples, in no other agent's
    assert "weather" in mined["weather"] and "rain" in mined["weather"]
    assert "alarm" in mined["alarm"] or "set an alarm" in mined["alarm"]
    every = [t for triggers in mined.values() for t in triggers]
    assert "what is" not in every and "my" not in every and "tomorrow" not in every  # shared or filler


def test_greedy_cover_stops_when_examples_are_covered() -> None:
    mined = mine_triggers(EXAMPLES, min_support=2, min_precision=0.8, max_per_agent=10)
    assert sorted(mined["weather"]) == ["rain", "weather"]  # together they cover all four examples


def test_negatives_count_against_every_agent() -> None:
    assert "weather" in mine_triggers(EXAMPLES)["weather"]
    chatter = ["i love talking about the weather", "nice weather we're having", "the weather is boring"]
    mined = mine_triggers(EXAMPLES, negatives=chatter)
    assert "weather" not in mined["weather"] and "rain" in mined["weather"]


def test_spellings_are_compared_after_stemming() -> None:
    mined = mine_triggers({"tables": ["a table please", "two tables", "tables for four"], "other": ["hi"]})
    assert mined == {"tables": ["tables"], "other": []}  # table/tables are one phrase; commonest spelling


def test_bad_settings_say_what_is_wrong() -> None:
    with pytest.raises(ConfigurationError, match="min_precision"):
        mine_triggers(EXAMPLES, min_precision=1.5)
    with pytest.raises(ConfigurationError, match="list of utterances"):
        mine_triggers({"balance": "what is my balance"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="negatives must be a list"):
        mine_triggers(EXAMPLES, negatives="nice weather we're having")


async def test_mined_triggers_route_through_the_orchestrator() -> None:
    mined = mine_triggers(EXAMPLES)
    agents = []
    for intent, triggers in mined.items():

        async def on_running(self: StandardAgent, message: str) -> str:
            return f"{type(self).__name__} here"

        cls = type(f"Mined{intent.title()}", (StandardAgent,), {"on_running": on_running})
        agents.append(flowagent(name=f"mined_{intent}", triggers=triggers)(cls))
    orch = Orchestrator(agents=agents)
    try:
        assert (await orch.handle_message("u1", "what's my balance?")).agent_name == "mined_balance"
        assert (await orch.handle_message("u2", "any rain on monday")).agent_name == "mined_weather"
        assert (await orch.handle_message("u3", "set an alarm at 5")).agent_name == "mined_alarm"
        assert (await orch.handle_message("u4", "tell me a joke")).no_match
    finally:
        await orch.close()
