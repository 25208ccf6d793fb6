"""Trigger matching: whole words, order, fillers, inflections, specificity."""

from __future__ import annotations

import pytest

from flowagents import StandardAgent, flowagent
from flowagents.errors import AgentDefinitionError
from flowagents.routing.base import AgentProfile
from flowagents.routing.triggers import TriggerIndex, pick

INDEX = TriggerIndex(
    [
        AgentProfile("Booking", "", ("book table", "reservation")),
        AgentProfile("Leave", "", ("leave request", "time off")),
        AgentProfile("Cancel", "", ("cancel my reservation",)),
        AgentProfile("Resa", "", ("забронировать столик", "réserver une table")),
        AgentProfile("Weather", "", ("what's the weather",)),
    ]
)


@pytest.mark.parametrize(
    ("message", "agent"),
    [
        ("I need to book a table", "Booking"),
        ("BOOK   TABLE!!", "Booking"),
        ("booking tables for tonight", "Booking"),
        ("Request time off", "Leave"),
        ("time-off please", "Leave"),
        ("please cancel my reservation", "Cancel"),  # the longer trigger is more specific
        ("showtime offers", None),
        ("table book", None),
        ("book the very big table", None),  # at most two filler words between trigger words
        ("bookstable", None),
        ("Я хочу забронировать столик", "Resa"),  # words of any script
        ("Je veux RÉSERVER une table", "Resa"),
        ("what\u2019s the weather like?", "Weather"),  # a phone's typographic apostrophe
    ],
)
def test_matching(message: str, agent: str | None) -> None:
    decision = pick(INDEX.find(message))
    assert (decision.agent_type if decision else None) == agent


def test_exact_match_is_more_confident_than_tolerant_match() -> None:
    exact = pick(INDEX.find("book table"))
    loose = pick(INDEX.find("booking a table"))
    assert exact is not None and loose is not None
    assert exact.confidence == 1.0 > loose.confidence >= 0.6


def test_candidates_filter_and_ambiguity() -> None:
    index = TriggerIndex([AgentProfile("A", "", ("help me",)), AgentProfile("B", "", ("help me",))])
    both = pick(index.find("help me"))
    assert both is not None and both.agent_type == "A" and both.confidence == 0.5
    only_b = pick(index.find("help me"), frozenset({"B"}))
    assert only_b is not None and only_b.agent_type == "B" and only_b.confidence == 1.0


def test_word_memo_stays_bounded_and_matches_after_it_is_flushed() -> None:
    from flowagents.routing import triggers

    index = TriggerIndex([AgentProfile(name="Book", description="", triggers=["book a table"])])
    for i in range(triggers._FIRST_MEMO_SIZE + 10):
        index.decide(f"word{i} " + "x" * 100)
    assert len(index._first) <= triggers._FIRST_MEMO_SIZE
    decision = index.decide("please book a table")
    assert decision is not None and decision.agent_type == "Book" and decision.confidence == 1.0
    assert index.decide("booking tables") is not None


def test_a_trigger_without_words_is_refused_when_the_agent_is_declared() -> None:
    with pytest.raises(AgentDefinitionError, match="no words"):
        flowagent(triggers=["book table", "!!!"])(type("Noisy", (StandardAgent,), {}))
