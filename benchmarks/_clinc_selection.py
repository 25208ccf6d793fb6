"""Which CLINC150 training utterances the routing benchmarks give each intent (shared by both scripts).

At N examples per intent, the N are drawn at random with one seed per run (the usual few-shot protocol
on CLINC150, e.g. DNNC and CPFT), or taken first-N in file order with `seed=None`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SEEDS = [0, 1, 2, 3, 4]


def per_intent(pairs: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """The utterances of each intent, in file order."""
    by_intent: dict[str, list[str]] = {}
    for text, intent in pairs:
        by_intent.setdefault(intent, []).append(text)
    return by_intent


def sample_n(pairs: Sequence[Sequence[str]], n: int, seed: int | None = None) -> dict[str, list[str]]:
    """`n` utterances of each intent drawn at random with `seed` (`random.Random(seed).sample`, intents in
    sorted order); with `seed=None`, the first `n` in file order."""
    by_intent = per_intent(pairs)
    if seed is None:
        return {intent: texts[:n] for intent, texts in by_intent.items()}
    rng = random.Random(seed)
    return {intent: rng.sample(texts, min(n, len(texts))) for intent, texts in sorted(by_intent.items())}


def seeds_for(
    pairs: Sequence[Sequence[str]], n: int, selection: str, seeds: Sequence[int]
) -> list[int | None]:
    """The seeds to run: none for "first", one run when `n` covers every intent's utterances (all of them)."""
    if selection == "first" or all(len(t) <= n for t in per_intent(pairs).values()):
        return [None]
    return list(seeds)
