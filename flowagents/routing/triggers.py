"""Trigger routing: whole-word phrase matching compiled once into a token trie.

A trigger matches when its words appear in the message in the same order, case-insensitively and as
whole words, tolerating simple inflections (book/booking, table/tables), punctuation, and up to two small
filler words between trigger words ("book table" matches "I need to book a table"). Filler words of the
trigger itself may be left out by the user. Matching walks the trie from each message position, so its
cost depends on the message length, not on the number of agents or triggers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flowagents.routing.base import AgentProfile, RoutingDecision

_TOKEN = re.compile(r"[a-z0-9']+")

FILLER_WORDS = frozenset(
    "a an the my me our your their this that some any to for of i we us please just in on at with".split()
)
"""Small words that may stand between trigger words, or be left out of a trigger."""

MAX_GAP = 2
"""How many filler words may stand between two trigger words."""


@lru_cache(maxsize=65536)
def stem(token: str) -> str:
    """A light, deterministic English stemmer: enough for book/booking/booked, table/tables, reply/replies."""
    t = token.strip("'")
    if t.endswith("'s"):
        t = t[:-2]
    if len(t) > 5 and t.endswith("ing"):
        t = t[:-3]
        if len(t) > 2 and t[-1] == t[-2] and t[-1] not in "aeiouls":
            t = t[:-1]
    elif len(t) > 4 and t.endswith("ies"):
        t = t[:-3] + "y"
    elif len(t) > 4 and t.endswith(("ches", "shes", "sses", "xes", "zes")):
        t = t[:-2]
    elif len(t) > 3 and t.endswith("s") and not t.endswith(("ss", "us", "is")):
        t = t[:-1]
    elif len(t) > 4 and t.endswith("ed"):
        t = t[:-2]
        if len(t) > 2 and t[-1] == t[-2] and t[-1] not in "aeiouls":
            t = t[:-1]
    if len(t) > 3 and t.endswith("e"):
        t = t[:-1]
    return t


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens, punctuation dropped."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True, slots=True)
class _Trigger:
    agent: str
    text: str
    words: int
    order: int


class _Node:
    __slots__ = ("children", "ends", "fillers", "onward", "raw", "skip", "skip_terminal", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.fillers: list[_Node] = []  # children reached by a filler word the user may leave out
        self.raw: set[str] = set()  # the unstemmed spellings of the word that leads here
        self.terminal: list[_Trigger] = []
        # Compiled by TriggerIndex.compile(): what is reachable by leaving out trigger filler words.
        self.skip: dict[str, list[tuple[_Node, int]]] = {}
        self.skip_terminal: list[tuple[_Trigger, int]] = []
        self.onward = False  # True when any trigger continues past this node
        self.ends: list[tuple[_Trigger, int]] = []  # triggers ending here, with the cost of left-out fillers


@dataclass(slots=True)
class TriggerMatch:
    """One trigger found in a message."""

    agent: str
    trigger: str
    words: int
    """Number of words in the trigger: more words, more specific."""
    penalty: int
    """Inflected words, skipped filler words and left-out trigger fillers; 0 for an exact phrase."""
    order: int
    """Registration order, for a deterministic tie-break."""

    @property
    def confidence(self) -> float:
        return _confidence(self.penalty)


_MAX_PENALTY = 6


class TriggerIndex:
    """All triggers of all agents, compiled into one trie of stemmed tokens."""

    def __init__(self, agents: Sequence[AgentProfile] = ()) -> None:
        self._root = _Node()
        self._count = 0
        self._compiled = False
        self._starters: frozenset[str] = frozenset()
        for agent in agents:
            for trigger in agent.triggers:
                self.add(agent.name, trigger)

    def add(self, agent: str, trigger: str) -> None:
        """Compile one more trigger."""
        words = tokenize(trigger)
        if not words:
            return
        node = self._root
        for word in words:
            key = stem(word)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node()
                if word in FILLER_WORDS:
                    node.fillers.append(child)
            child.raw.add(word)
            node = child
        node.terminal.append(_Trigger(agent, trigger, len(words), self._count))
        self._count += 1
        self._compiled = False

    def compile(self) -> None:
        """Precompute, for every node, the words and ends reachable by leaving out trigger fillers."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            node.skip = {}
            node.skip_terminal = []
            frontier = [(child, 1) for child in node.fillers]
            while frontier:
                skipped, cost = frontier.pop()
                for word, child in skipped.children.items():
                    node.skip.setdefault(word, []).append((child, cost))
                node.skip_terminal.extend((t, cost) for t in skipped.terminal)
                frontier.extend((child, cost + 1) for child in skipped.fillers)
            node.onward = bool(node.children or node.skip)
            node.ends = [(t, 0) for t in node.terminal] + node.skip_terminal
            stack.extend(node.children.values())
        self._starters = frozenset(self._root.children) | frozenset(self._root.skip)
        self._compiled = True

    def find(self, message: str) -> list[TriggerMatch]:
        """Every trigger occurring in the message (its best occurrence)."""
        return [
            TriggerMatch(trig.agent, trig.text, trig.words, penalty, trig.order)
            for penalty, trig in self.scan(message).values()
        ]

    def scan(self, message: str) -> dict[int, tuple[int, _Trigger]]:
        """Trigger order -> (penalty, trigger) of its best occurrence; the allocation-light core of `find`."""
        if not self._compiled:
            self.compile()
        raw = _TOKEN.findall(message.lower())
        stems = list(map(stem, raw))
        starters = self._starters
        best: dict[int, tuple[int, _Trigger]] = {}
        starts = [i for i, word in enumerate(stems) if word in starters]
        if not starts:
            return best
        n = len(raw)
        root = self._root
        first_words = root.children
        first_skips = root.skip
        stack: list[tuple[_Node, int, int]] = []
        push = stack.append
        for start in starts:
            word = stems[start]
            first = first_words.get(word)
            if first is not None:
                push((first, start + 1, 0 if raw[start] in first.raw else 1))
            via = first_skips.get(word)
            if via is not None:  # the user left out the trigger's leading filler word(s)
                for node, cost in via:
                    push((node, start + 1, cost + (raw[start] not in node.raw)))
            while stack:
                node, pos, penalty = stack.pop()
                for trig, extra in node.ends:
                    seen = best.get(trig.order)
                    if seen is None or seen[0] > penalty + extra:
                        best[trig.order] = (penalty + extra, trig)
                if penalty > _MAX_PENALTY or not node.onward:
                    continue
                children = node.children
                skip = node.skip
                # The next trigger word, possibly after up to MAX_GAP filler words of the message.
                for j in range(pos, min(pos + MAX_GAP + 1, n)):
                    word = stems[j]
                    child = children.get(word)
                    if child is not None:
                        push((child, j + 1, penalty + j - pos + (raw[j] not in child.raw)))
                    if skip:
                        via = skip.get(word)
                        if via is not None:  # a filler word of the trigger left out by the user
                            for skipped, cost in via:
                                push((skipped, j + 1, penalty + j - pos + cost + (raw[j] not in skipped.raw)))
                    if raw[j] not in FILLER_WORDS:
                        break
        return best

    def decide(self, message: str, candidates: frozenset[str] | None = None) -> RoutingDecision | None:
        """The routing decision for a message: `pick(find(message))` without the intermediate objects."""
        found = self.scan(message)
        return _choose(found.values(), candidates) if found else None


def _choose(
    entries: Iterable[tuple[int, _Trigger]], candidates: frozenset[str] | None
) -> RoutingDecision | None:
    """The most specific allowed (penalty, trigger): most words, then exactness, then registration order.

    Two different agents tied on words and exactness lower the confidence (an ambiguous match).
    """
    allowed = [e for e in entries if candidates is None or e[1].agent in candidates]
    if not allowed:
        return None
    top = min(allowed, key=_rank) if len(allowed) > 1 else allowed[0]
    penalty, trig = top
    confidence = _confidence(penalty)
    for other_penalty, other in allowed:
        if other.agent != trig.agent and other.words == trig.words and other_penalty == penalty:
            confidence = min(confidence, 0.5)  # two agents match equally well: ambiguous
            break
    return _decision(trig.agent, trig.text, confidence)


def _confidence(penalty: int) -> float:
    """1.0 for the exact phrase, 0.05 less per inflected, skipped or left-out word, never below 0.6."""
    return max(0.6, 1.0 - 0.05 * penalty)


def _rank(entry: tuple[int, _Trigger]) -> tuple[int, int, int]:
    return (-entry[1].words, entry[0], entry[1].order)


def pick(matches: Sequence[TriggerMatch], candidates: frozenset[str] | None = None) -> RoutingDecision | None:
    """The decision for matches from `TriggerIndex.find`, by the same rule as `TriggerIndex.decide`."""
    return _choose(((m.penalty, _Trigger(m.agent, m.trigger, m.words, m.order)) for m in matches), candidates)


@lru_cache(maxsize=16384)
def _decision(agent: str, trigger: str, confidence: float) -> RoutingDecision:
    """Decisions are immutable values, so equal ones are built once."""
    return RoutingDecision(
        agent_type=agent, confidence=confidence, strategy="trigger", reason=f"trigger {trigger!r}"
    )


class TriggerRouter:
    """The default strategy: routes by `@flowagent(triggers=...)`."""

    name = "trigger"

    def __init__(self) -> None:
        self.index = TriggerIndex()

    async def setup(self, agents: Sequence[AgentProfile]) -> None:
        self.index = TriggerIndex(agents)

    async def route(
        self, message: str, context: dict[str, Any], candidates: frozenset[str]
    ) -> RoutingDecision | None:
        return self.index.decide(message, candidates)
