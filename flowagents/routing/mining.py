"""Suggest trigger phrases from example utterances: the words and short phrases that tell agents apart.

    triggers = mine_triggers({"balance": [...], "weather": [...]}, max_per_agent=20)
    @flowagent(name="balance", triggers=triggers["balance"], examples=[...])

A phrase is a run of 1..`max_words` words of an example (compared after the trigger router's own
stemming, so "booking" and "book" count as one). It becomes a trigger of an agent when it occurs in at
least `min_support` of that agent's examples and at least `min_precision` of all the examples
containing it belong to that agent (`negatives`, utterances that belong to no agent, count against every
agent). Phrases that begin or end with a small filler word ("the", "my", "to") are skipped: the trigger
router already tolerates those. Each agent then takes, up to `max_per_agent` times, the phrase that
occurs in most of its examples not covered yet (a greedy set cover; ties: more precise, more frequent),
so a few phrases cover many ways of asking. Pure Python and deterministic; no model needed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flowagents.errors import ConfigurationError
from flowagents.routing.triggers import FILLER_WORDS, stem, tokenize

EDGE_WORDS = FILLER_WORDS | frozenset(
    "is are was be do does did can could would will should what what's whats how when where who why "
    "which and or but if so it it's its you you're i'm i'd i'll im am have has had there here".split()
)
"""Words a mined phrase may not begin or end with (too common to tell agents apart)."""


def _phrases(text: str, max_words: int) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Stemmed phrase -> one raw spelling, for every phrase of `text` that may become a trigger."""
    words = tokenize(text)
    stems = [stem(w) for w in words]
    out: dict[tuple[str, ...], tuple[str, ...]] = {}
    for i in range(len(words)):
        if words[i] in EDGE_WORDS:
            continue
        for j in range(i + 1, min(i + max_words, len(words)) + 1):
            if words[j - 1] in EDGE_WORDS:
                continue
            out.setdefault(tuple(stems[i:j]), tuple(words[i:j]))
    return out


@dataclass
class PhraseCounts:
    """How often each phrase occurs in each agent's examples (and in all examples, negatives included)."""

    per_agent: dict[str, dict[tuple[str, ...], set[int]]]
    """Agent -> phrase -> indexes of the agent's examples that contain it."""
    total: Counter[tuple[str, ...]]
    spellings: dict[tuple[str, ...], Counter[tuple[str, ...]]]
    sizes: dict[str, int]

    @classmethod
    def of(
        cls, examples: Mapping[str, Sequence[str]], negatives: Sequence[str] = (), max_words: int = 3
    ) -> PhraseCounts:
        """Count the phrases of up to `max_words` words."""
        if max_words < 1:
            raise ConfigurationError("mine_triggers needs max_words >= 1.")
        if isinstance(negatives, str):
            raise ConfigurationError("negatives must be a list of utterances, not a string")
        per_agent: dict[str, dict[tuple[str, ...], set[int]]] = {}
        total: Counter[tuple[str, ...]] = Counter()
        spellings: dict[tuple[str, ...], Counter[tuple[str, ...]]] = defaultdict(Counter)
        sizes: dict[str, int] = {}
        for agent, utterances in examples.items():
            if isinstance(utterances, str):
                raise ConfigurationError(f"examples of {agent!r} must be a list of utterances, not a string")
            where: dict[tuple[str, ...], set[int]] = defaultdict(set)
            for i, text in enumerate(utterances):
                for key, raw in _phrases(text, max_words).items():
                    where[key].add(i)
                    spellings[key][raw] += 1
            per_agent[agent] = dict(where)
            sizes[agent] = len(utterances)
            total.update({key: len(ids) for key, ids in where.items()})
        for text in negatives:
            total.update(_phrases(text, max_words).keys())
        return cls(per_agent, total, dict(spellings), sizes)

    def select(
        self, *, max_per_agent: int = 20, min_precision: float = 0.8, min_support: int = 2
    ) -> dict[str, list[str]]:
        """Per agent, greedily the phrase that covers most of its not yet covered examples."""
        if max_per_agent < 0 or min_support < 1 or not 0.0 <= min_precision <= 1.0:
            raise ConfigurationError(
                "mine_triggers needs max_per_agent >= 0, min_support >= 1 and 0 <= min_precision <= 1."
            )
        mined: dict[str, list[str]] = {}
        for agent, where in self.per_agent.items():
            pool = {
                key: ids
                for key, ids in where.items()
                if len(ids) >= min_support and len(ids) / self.total[key] >= min_precision
            }
            covered: set[int] = set()
            chosen: list[str] = []
            while pool and len(chosen) < max_per_agent:
                key = min(
                    pool,
                    key=lambda k: (-len(pool[k] - covered), -len(pool[k]) / self.total[k], -len(pool[k]), k),
                )
                if not pool[key] - covered:
                    break  # everything this agent's phrases cover is covered
                covered |= pool.pop(key)
                raw = min(self.spellings[key].items(), key=lambda item: (-item[1], item[0]))[0]
                chosen.append(" ".join(raw))
            mined[agent] = chosen
        return mined


def mine_triggers(
    examples: Mapping[str, Sequence[str]],
    *,
    negatives: Sequence[str] = (),
    max_per_agent: int = 20,
    min_precision: float = 0.8,
    min_support: int = 2,
    max_words: int = 3,
) -> dict[str, list[str]]:
    """Trigger phrases for each agent, in the order chosen, mined from its examples (see the module docs)."""
    counts = PhraseCounts.of(examples, negatives, max_words)
    return counts.select(max_per_agent=max_per_agent, min_precision=min_precision, min_support=min_support)
