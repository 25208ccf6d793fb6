"""Trigger routing: whole-word phrase matching compiled once into a token trie.

A trigger matches when its words appear in the message in the same order, case-insensitively and as
whole words, tolerating simple inflections (book/booking, table/tables), punctuation, and up to two small
filler words between trigger words ("book table" matches "I need to book a table"). Filler words of the
trigger itself may be left out by the user. Matching walks the trie from each message position, so its
cost depends on the message length, not on the number of agents or triggers. Words are runs of letters
and digits of any script (accents count: "réserver" is not "reserver"); scripts written without spaces
between words (Chinese, Japanese, Thai) need the semantic or LLM strategy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from flowagents._trusted import trusted
from flowagents.routing.base import AgentProfile, RoutingDecision

_TOKEN = re.compile(r"[\w']+")  # letters and digits of any script (and apostrophes)
_ASCII_WORDS = bytes(
    ord(c.lower()) if c.isascii() and (c.isalnum() or c in "_'") else ord(" ") for c in map(chr, range(256))
)
"""The same on ASCII text as a byte table: lower-cases letters, keeps digits, _ and ', blanks the rest."""

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
    """Lower-cased word tokens, punctuation dropped (a typographic apostrophe is an apostrophe)."""
    if text.isascii():  # the common case, in one pass of C without Unicode lookups
        return text.encode().translate(_ASCII_WORDS).decode().split()
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))  # what’s (as phones type it) is what's


@dataclass(frozen=True, slots=True, eq=False)
class _Trigger:
    agent: str
    text: str
    words: int
    order: int
    decisions: dict[int, RoutingDecision] = field(default_factory=dict)
    """Penalty -> decision, built on first use (decisions are immutable values)."""

    def decision(self, penalty: int) -> RoutingDecision:
        """The decision routing to this trigger's agent, with the confidence its penalty gives."""
        made = self.decisions.get(penalty)
        if made is None:
            made = self.decisions[penalty] = trusted(  # our own values: a name, 0.6..1, text
                RoutingDecision,
                {
                    "agent_type": self.agent,
                    "confidence": _confidence(penalty),
                    "strategy": "trigger",
                    "reason": f"trigger {self.text!r}",
                },
            )
        return made


_MAX_PENALTY = 6
"""A path of the walk goes on only while its penalty is at most this."""

# Where a message word leads from a node: (next node, penalty of getting there).
_Target = tuple["_Node", int]


class _Node:
    __slots__ = ("children", "ends", "exact", "fillers", "inflected", "limit", "members", "raw", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.fillers: list[_Node] = []  # children reached by a filler word the user may leave out
        self.raw: set[str] = set()  # the unstemmed spellings of the word that leads here
        self.terminal: list[_Trigger] = []
        # Compiled by TriggerIndex.compile(): where the next message word leads, with the penalty of
        # the trigger filler words left out on the way; `exact` is keyed by a spelling a trigger uses,
        # `inflected` by the stem of any other spelling (one penalty point more).
        self.exact: dict[str, _Target] = {}
        self.inflected: dict[str, _Target] = {}
        self.ends: tuple[tuple[_Trigger, int], ...] = ()
        # A word that leads to several nodes at once leads to one merged node instead: its `members`
        # are those nodes with their extra penalty, and the walk goes on from it while the penalty is
        # at most `limit` (where every member still goes on).
        self.members: tuple[_Target, ...] = ()
        self.limit = _MAX_PENALTY


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


_FIRST_MEMO_SIZE = 50_000
_FIRST_MEMO_WORD = 40


class TriggerIndex:
    """All triggers of all agents, compiled into one trie of stemmed tokens."""

    def __init__(self, agents: Sequence[AgentProfile] = ()) -> None:
        self._root = _Node()
        self._first: dict[str, _Target | tuple[()]] = {}  # message word -> where it leads from the root
        self._count = 0
        self._compiled = False
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
        """Precompute, for every node, where each message word leads and the ends reachable by leaving out
        trigger fillers.

        A word may lead to several nodes at once: "massage" to "massage" of "massage booking" and, "any"
        left out, to "massage" of "any massage nearby". Those become one merged node, so the walk reads
        the next words once for all of them; merged nodes are compiled from their members' tables.
        """
        merged: dict[frozenset[_Target], _Node] = {}
        pending: list[_Node] = []

        def one(options: Iterable[_Target]) -> _Target:
            """The single (node, penalty) standing for all options: one node, or a merged node.

            Members are plain nodes (a merged option contributes its members); a node offered twice keeps
            its lower penalty, which finds everything the higher one would, at a lower penalty.
            """
            cheapest: dict[_Node, int] = {}
            for option, cost in options:
                for node, extra in option.members or ((option, 0),):
                    if cheapest.get(node, cost + extra + 1) > cost + extra:
                        cheapest[node] = cost + extra
            low = min(cheapest.values())
            if len(cheapest) == 1:
                return next(iter(cheapest)), low
            members = tuple((node, cost - low) for node, cost in cheapest.items())
            merged_node = merged.get(frozenset(members))
            if merged_node is None:
                merged_node = merged[frozenset(members)] = _Node()
                merged_node.members = members
                merged_node.limit = _MAX_PENALTY - max(extra for _, extra in members)
                pending.append(merged_node)
            return merged_node, low

        stack = [self._root]
        while stack:
            node = stack.pop()
            step: dict[str, list[_Target]] = {w: [(c, 0)] for w, c in node.children.items()}
            ends = [(t, 0) for t in node.terminal]
            frontier = [(child, 1) for child in node.fillers]
            while frontier:
                skipped, cost = frontier.pop()
                for word, child in skipped.children.items():
                    step.setdefault(word, []).append((child, cost))
                ends.extend((t, cost) for t in skipped.terminal)
                frontier.extend((child, cost + 1) for child in skipped.fillers)
            node.exact = {
                spelling: one((child, cost + (spelling not in child.raw)) for child, cost in targets)
                for targets in step.values()
                for spelling in set().union(*(child.raw for child, _ in targets))
            }
            node.inflected = {
                key: one((child, cost + 1) for child, cost in targets) for key, targets in step.items()
            }
            node.ends = tuple(ends)
            stack.extend(node.children.values())
        while pending:
            node = pending.pop()
            members = node.members
            node.exact = {
                spelling: one(
                    (target[0], target[1] + extra)
                    for member, extra in members
                    if (target := member.exact.get(spelling) or member.inflected.get(stem(spelling)))
                )
                for spelling in set().union(*(member.exact for member, _ in members))
            }
            node.inflected = {
                key: one(
                    (target[0], target[1] + extra)
                    for member, extra in members
                    if (target := member.inflected.get(key))
                )
                for key in set().union(*(member.inflected for member, _ in members))
            }
            merged_ends: dict[_Trigger, int] = {}
            for member, extra in members:
                for trig, cost in member.ends:
                    merged_ends[trig] = min(merged_ends.get(trig, cost + extra), cost + extra)
            node.ends = tuple(merged_ends.items())
        self._first.clear()
        self._compiled = True

    def _first_target(self, word: str) -> _Target | tuple[()]:
        """Where a message word leads from the root, memoised per spelling (most words lead nowhere)."""
        root = self._root
        target = root.exact.get(word) or root.inflected.get(stem(word)) or ()
        if len(word) <= _FIRST_MEMO_WORD:  # bounded: a flood of long junk words cannot grow the memo
            if len(self._first) >= _FIRST_MEMO_SIZE:
                self._first.clear()
            self._first[word] = target
        return target

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
        raw = tokenize(message)
        n = len(raw)
        first = self._first
        fillers = FILLER_WORDS
        best: dict[int, tuple[int, _Trigger]] = {}
        # Where the walk goes on: ((node, its cost), message position after its word, penalty before it);
        # penalties count inflected words, filler words the user put between trigger words and trigger
        # filler words the user left out. Walks do not depend on each other: one list holds them all and
        # grows while it is read.
        todo: list[tuple[_Target, int, int]] = []
        for start, word in enumerate(raw):
            target = first.get(word)
            if target is None:
                target = self._first_target(word)
            if target:
                todo.append((target, start + 1, 0))
        for (node, cost), pos, penalty in todo:
            penalty += cost
            if node.ends:
                for trig, extra in node.ends:
                    seen = best.get(trig.order)
                    if seen is None or seen[0] > penalty + extra:
                        best[trig.order] = (penalty + extra, trig)
            exact = node.exact
            if not exact or penalty > node.limit:
                if exact and penalty <= _MAX_PENALTY:  # a merged node, some of whose members go on
                    for member in node.members:  # (a loop, not a generator: pos and penalty stay fast locals)
                        todo.append((member, pos, penalty))
                continue
            # The next trigger word, possibly after up to MAX_GAP filler words of the message.
            j = pos
            while j < n:
                word = raw[j]
                found = exact.get(word) or node.inflected.get(stem(word))
                if found is not None:
                    todo.append((found, j + 1, penalty + j - pos))
                if word not in fillers or j - pos == MAX_GAP:
                    break
                j += 1
        return best

    def decide(self, message: str, candidates: frozenset[str] | None = None) -> RoutingDecision | None:
        """The routing decision for a message: `pick(find(message))` without the intermediate objects."""
        found = self.scan(message)
        if len(found) == 1:  # the common case, without _choose's ranking
            ((penalty, trig),) = found.values()
            if candidates is None or trig.agent in candidates:
                return trig.decision(penalty)
            return None
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
    penalty, trig = min(allowed, key=_rank) if len(allowed) > 1 else allowed[0]
    for other_penalty, other in allowed:
        if other.agent != trig.agent and other.words == trig.words and other_penalty == penalty:
            ambiguous = min(_confidence(penalty), 0.5)  # two agents match equally well
            return trig.decision(penalty).model_copy(update={"confidence": ambiguous})
    return trig.decision(penalty)


def _confidence(penalty: int) -> float:
    """1.0 for the exact phrase, 0.05 less per inflected, skipped or left-out word, never below 0.6."""
    return max(0.6, 1.0 - 0.05 * penalty)


def _rank(entry: tuple[int, _Trigger]) -> tuple[int, int, int]:
    return (-entry[1].words, entry[0], entry[1].order)


def pick(matches: Sequence[TriggerMatch], candidates: frozenset[str] | None = None) -> RoutingDecision | None:
    """The decision for matches from `TriggerIndex.find`, by the same rule as `TriggerIndex.decide`."""
    return _choose(((m.penalty, _Trigger(m.agent, m.trigger, m.words, m.order)) for m in matches), candidates)


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
