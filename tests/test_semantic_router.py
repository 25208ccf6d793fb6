# ruff: noqa: E402
"""Semantic routing with the real offline MiniLM encoder on a few CLINC150 intents.

The utterances below are quoted verbatim from CLINC150 (Larson et al., EMNLP 2019, CC BY 3.0):
the examples from `train` and `oos_train`, the held-out messages from `val` and `oos_val`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from _requirements import require_semantic_extra

require_semantic_extra()

from _clinc_samples import CLINC_EXAMPLES

from flowagents import Orchestrator, StandardAgent, flowagent
from flowagents.embeddings.local import LocalEmbedder
from flowagents.errors import ConfigurationError
from flowagents.routing.base import AgentProfile
from flowagents.routing.semantic import (
    NO_MATCH_THRESHOLD,
    SemanticClassifier,
    SemanticConfig,
    SemanticRouter,
    choose_pivot,
)

EXAMPLES = CLINC_EXAMPLES

HELD_OUT = [  # from `val`
    ("how much money do i have in my pnc account", "balance"),
    ("what's the weather like", "weather"),
    ("how do you say hello in japanese", "translate"),
    ("i want you to set alarms for 2pm and 3pm", "alarm"),
]

OUT_OF_SCOPE = [  # from `oos_val`
    "how do i find the area of a circle",
    "what is the name of the 13th president",
    "who has the best record in the nfl",
]

OOS_EXAMPLES = [  # from `oos_train`: what the bot should not handle
    "what is the formula for the circumference of a circle",
    "how many sides are in a hexagon",
    "what is the largest state in the us",
    "how much is 1 share of aapl",
    "what size wipers does this car take",
]

ALL_AGENTS = frozenset(EXAMPLES)


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture(scope="module")
def router(embedder: LocalEmbedder) -> SemanticRouter:
    return SemanticRouter(embedder).fit(EXAMPLES)


@pytest.mark.parametrize(("message", "agent"), HELD_OUT)
def test_held_out_message_routes_to_its_agent(router: SemanticRouter, message: str, agent: str) -> None:
    match = router.predict(message)
    assert match.agent == agent
    assert NO_MATCH_THRESHOLD <= match.confidence <= 1.0


@pytest.mark.parametrize("message", OUT_OF_SCOPE)
def test_out_of_scope_message_gets_no_match(router: SemanticRouter, message: str) -> None:
    match = router.predict(message)
    assert match.agent is None
    assert 0.0 <= match.confidence < NO_MATCH_THRESHOLD
    assert match.best in ALL_AGENTS  # the closest agent is still reported, e.g. for an LLM stage


async def test_route_protocol_returns_a_semantic_decision(embedder: LocalEmbedder) -> None:
    router = SemanticRouter(embedder)
    await router.setup([AgentProfile(name, f"{name} agent", (), tuple(ex)) for name, ex in EXAMPLES.items()])
    decision = await router.route("how much money do i have in my pnc account", {}, ALL_AGENTS)
    assert decision is not None
    assert (decision.agent_type, decision.strategy) == ("balance", "semantic")
    assert await router.route("how do i find the area of a circle", {}, ALL_AGENTS) is None


async def test_route_only_chooses_among_candidates(embedder: LocalEmbedder) -> None:
    router = SemanticRouter(embedder)
    await router.afit(EXAMPLES)
    only_weather = frozenset({"weather"})
    assert await router.route("how much money do i have in my pnc account", {}, only_weather) is None
    decision = await router.route("what's the weather like", {}, only_weather)
    assert decision is not None and decision.agent_type == "weather"


async def test_per_agent_threshold_overrides_the_default(embedder: LocalEmbedder) -> None:
    router = SemanticRouter(embedder)
    profiles = [
        AgentProfile(name, name, (), tuple(ex), threshold=0.999 if name == "weather" else None)
        for name, ex in EXAMPLES.items()
    ]
    await router.setup(profiles)
    assert await router.route("what's the weather like", {}, ALL_AGENTS) is None
    assert await router.route("how do you say hello in japanese", {}, ALL_AGENTS) is not None


async def test_async_batch_matches_blocking_predictions(router: SemanticRouter) -> None:
    texts = [m for m, _ in HELD_OUT] + OUT_OF_SCOPE
    batch = await router.apredict_batch(texts)
    assert [m.agent for m in batch] == [a for _, a in HELD_OUT] + [None] * len(OUT_OF_SCOPE)
    ranked = await router.ranked("what's the weather like", k=2)
    assert ranked[0][0] == "weather" and len(ranked) == 2 and ranked[0][1] >= ranked[1][1]
    match, both = await router.apredict_ranked("what's the weather like", allowed=["weather", "alarm"])
    assert match.agent == "weather" and [a for a, _ in both] == ["weather", "alarm"]
    assert both[0][1] == pytest.approx(match.confidence)


@pytest.mark.parametrize("head", ["centroid", "nearest"])
def test_cosine_heads_are_a_setting(embedder: LocalEmbedder, head: Literal["centroid", "nearest"]) -> None:
    router = SemanticRouter(embedder, config=SemanticConfig(head=head)).fit(EXAMPLES)
    assert [router.predict(m).best for m, _ in HELD_OUT] == [a for _, a in HELD_OUT]
    assert [router.predict(m).agent for m in OUT_OF_SCOPE] == [None] * len(OUT_OF_SCOPE)


def test_calibration_pivot_meets_the_requested_recall() -> None:
    in_raw = [0.9, 0.8, 0.7, 0.3]
    correct = [True, True, True, True]
    oos_raw = [0.1, 0.2, 0.6, 0.75]
    pivot = choose_pivot(in_raw, correct, oos_raw, min_oos_recall=0.75)
    assert 0.6 < pivot <= 0.7  # rejects three of four out-of-scope, keeps three in-scope
    assert choose_pivot(in_raw, correct, oos_raw, min_oos_recall=None) <= 0.75


async def test_orchestrator_routes_by_examples(embedder: LocalEmbedder, tmp_path: Path) -> None:
    """Through the public entry point: one agent per intent, declared with `@flowagent(examples=...)`."""
    classes: list[type[StandardAgent]] = []
    for intent, utterances in EXAMPLES.items():

        async def on_running(self: StandardAgent, message: str) -> str:
            return f"handled by {type(self).__name__}"

        cls = type(f"{intent.title()}Agent", (StandardAgent,), {"on_running": on_running})
        classes.append(flowagent(name=f"sem_{intent}", examples=utterances)(cls))
    router = SemanticRouter(embedder, cache_dir=tmp_path)
    orchestrator = Orchestrator(agents=classes, routing_strategy=router)
    await orchestrator.initialize()
    try:
        result = await orchestrator.handle_message("u1", "how much money do i have in my pnc account")
        assert result.agent_name == "sem_balance" and not result.no_match
        assert result.raw_message == "handled by BalanceAgent"
        result = await orchestrator.handle_message("u2", "how do i find the area of a circle")
        assert result.no_match and result.agent_name is None
    finally:
        await orchestrator.close()
    assert cached_files(tmp_path)  # the examples' vectors were cached for the next start


async def test_the_bot_keeps_example_embeddings_where_its_dotenv_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLOWAGENTS_EMBEDDING_CACHE set in `.env` (not exported) reaches the bot's semantic router."""
    from bot.app import build_orchestrator
    from bot.settings import BotSettings

    cache = tmp_path / "embeddings"
    (tmp_path / ".env").write_text(
        f"FLOWAGENTS_ROUTING=semantic\nFLOWAGENTS_STORE=memory\nFLOWAGENTS_EMBEDDING_CACHE={cache}\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("FLOWAGENTS_ROUTING", "FLOWAGENTS_STORE", "FLOWAGENTS_EMBEDDING_CACHE", "FLOWAGENTS_AGENTS"):
        monkeypatch.delenv(name, raising=False)
    orchestrator = build_orchestrator(BotSettings())
    await orchestrator.initialize()
    try:
        result = await orchestrator.handle_message("u1", "can I get a table for two tonight")
        assert result.agent_name == "BookingAgent"
    finally:
        await orchestrator.close()
    assert cached_files(cache)


def cached_files(directory: Path) -> list[Path]:
    return list(directory.glob("*.npz"))


async def test_out_of_scope_examples_lower_confidence_on_look_alikes(embedder: LocalEmbedder) -> None:
    """`SemanticRouter(oos_examples=...)` trains a hidden "none" class, also when the orchestrator fits it."""
    profiles = [AgentProfile(name, name, (), tuple(ex)) for name, ex in EXAMPLES.items()]
    plain, guarded = SemanticRouter(embedder), SemanticRouter(embedder, oos_examples=OOS_EXAMPLES)
    await plain.setup(profiles)
    await guarded.setup(profiles)
    message = "how do i find the area of a circle"  # oos_val, close to an oos_train example
    assert (await guarded.apredict(message)).confidence < (await plain.apredict(message)).confidence
    for text, agent in HELD_OUT:  # in-scope messages still route
        assert (await guarded.apredict(text)).agent == agent
    assert guarded.classifier.agents == plain.classifier.agents  # "none" is never an agent


def test_lexical_part_separates_agents_the_embeddings_cannot() -> None:
    """Words of the examples decide when the vectors are alike (the naive Bayes of `lexical_weight`)."""
    same = np.tile(np.eye(4, dtype=np.float32)[:1], (6, 1))  # every example has the same vector
    billing = ["pay my bill", "pay the bill now", "bill payment"]
    travel = ["book a flight", "flight to paris", "book flight"]
    texts = billing + travel
    labels = ["billing"] * 3 + ["travel"] * 3
    query = same[:1]
    clf = SemanticClassifier().fit(same, labels, texts=texts)
    assert clf.predict(query, texts=["book a flight tomorrow"])[0].best == "travel"
    assert clf.predict(query, texts=["i want to pay my bill"])[0].best == "billing"
    p_with = clf.predict(query, texts=["book a flight tomorrow"])[0].confidence
    p_without = clf.predict(query)[0].confidence  # vectors only (no text): the lexical part is left out
    assert p_with > p_without
    off = SemanticClassifier(SemanticConfig(lexical_weight=0)).fit(same, labels, texts=texts)
    assert off.predict(query, texts=["book a flight tomorrow"])[0].confidence == pytest.approx(p_without)
    with pytest.raises(ConfigurationError):
        clf.predict(np.vstack([query, query]), texts=["one text for two vectors"])


async def test_the_semantic_strategy_takes_the_orchestrators_threshold(embedder: LocalEmbedder) -> None:
    weather = ["what's the weather", "will it rain tomorrow", "forecast for paris", "is it sunny today"]
    balance = ["what's my checking balance", "how much money do i have", "show my account balance"]
    agents = [
        flowagent(name=name, examples=examples)(type(name, (StandardAgent,), {}))
        for name, examples in (("thr_weather", weather), ("thr_balance", balance))
    ]
    replies = []
    for threshold in (0.5, 0.3):  # "umbrella" is a weak (about 0.4) match for the weather agent
        orchestrator = Orchestrator(
            agents=agents, routing_strategy="semantic", embedder=embedder, no_match_threshold=threshold
        )
        replies.append((await orchestrator.process("umbrella", user_id="u")).agent_name)
        await orchestrator.close()
    assert replies == [None, "thr_weather"]
