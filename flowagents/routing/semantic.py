"""Semantic routing: embed each agent's `examples` and classify messages against them.

The head is a scikit-learn logistic regression over sentence embeddings (fits in a second or two for
15,000 examples). Each message gets one **confidence on a 0..1 scale**:

    raw = p(agent | message) ** prob_power * max(0, cosine(message, agent's nearest example))

`p` is the logistic regression's probability of the best agent (out of the tenant's candidates) and
the cosine keeps far-away messages from scoring high just because one class wins. `raw` is then mapped
piecewise-linearly so that the *calibration pivot* lands on 0.5:

    confidence = 0.5 * raw / pivot                         if raw <  pivot
    confidence = 0.5 + 0.5 * (raw - pivot) / (1 - pivot)   otherwise

so **the no-match threshold is 0.5**, the same value as `Orchestrator(no_match_threshold=0.5)`.
A message whose confidence is below the agent's threshold (its `@flowagent(threshold=...)`, else
`SemanticConfig.threshold`) gets no match. `calibrate()` moves the pivot from labelled in-scope and
out-of-scope messages; the default pivot was chosen that way on CLINC150's validation split.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, Field

from flowagents.embeddings.base import Embedder, Vectors
from flowagents.errors import ConfigurationError, NotInitializedError
from flowagents.routing.base import AgentProfile, RoutingDecision

NO_MATCH_THRESHOLD = 0.5
"""Default no-match threshold on the confidence scale (also the orchestrator's default)."""

DEFAULT_PIVOTS = {"logreg": 0.333, "centroid": 0.46, "nearest": 0.6}
"""Raw score mapped to confidence 0.5, per head; chosen on CLINC150 Full `val`+`oos_val` with 100
examples per intent (see `calibrate`). With few examples per agent the logreg pivot is lower (0.17 at 10)."""

NONE_CLASS = "\x00none"
"""Internal label of out-of-scope examples (never returned)."""


class SemanticConfig(BaseModel):
    """Settings of the semantic classifier; the defaults are the benchmarked configuration."""

    head: Literal["logreg", "centroid", "nearest"] = "logreg"
    """`logreg`: logistic regression (best on broad sets); `centroid`: cosine to each agent's mean
    example; `nearest`: cosine to the nearest example (fine-grained single-domain sets)."""
    C: float = Field(default=10.0, gt=0)
    """Inverse regularisation strength of the logistic regression."""
    class_weight: Literal["balanced"] | None = "balanced"
    """Weigh agents equally however many examples each has."""
    prob_power: float = Field(default=0.5, ge=0)
    """Exponent of the probability in the raw score (0 = cosine only)."""
    pivot: float | None = Field(default=None, gt=0, lt=1)
    """Raw score that maps to confidence 0.5; None uses the head's entry in `DEFAULT_PIVOTS`."""
    threshold: float = Field(default=NO_MATCH_THRESHOLD, ge=0, le=1)
    """No-match threshold on the confidence scale, for agents without their own."""
    max_iter: int = Field(default=500, gt=0)


class SemanticMatch(NamedTuple):
    """A prediction: `agent` is None for no match; `best` is the top agent even when rejected."""

    agent: str | None
    confidence: float
    best: str | None


@dataclass(slots=True)
class _Fitted:
    agents: list[str]
    examples: list[Vectors]  # per agent, its example vectors
    centroids: Vectors  # (n_agents, d), unit length
    model: Any  # sklearn LogisticRegression or None
    columns: NDArray[np.intp]  # agent index -> column of predict_proba
    weights: NDArray[np.float32] | None = None  # the fitted model's coef_.T, for fast scoring
    bias: NDArray[np.float32] | None = None


class SemanticClassifier:
    """Classifies embedding vectors into agents; the embedding-free core of `SemanticRouter`."""

    def __init__(self, config: SemanticConfig | None = None) -> None:
        self.config = config or SemanticConfig()
        self.thresholds: dict[str, float] = {}
        self._fitted: _Fitted | None = None

    @property
    def agents(self) -> list[str]:
        """Agents the classifier can return, in a fixed order."""
        return list(self._fitted.agents) if self._fitted else []

    def fit(
        self,
        vectors: Vectors,
        labels: Sequence[str],
        *,
        oos_vectors: Vectors | None = None,
    ) -> SemanticClassifier:
        """Fit on unit-length example vectors and their agent names.

        `oos_vectors` (messages that belong to no agent) train a hidden "none" class of the logistic
        regression, which lowers the probability of every agent for look-alike messages.
        """
        labels_arr = np.asarray(list(labels), dtype=object)
        if len(labels_arr) != len(vectors):
            raise ConfigurationError("semantic routing: one label per example vector is needed")
        agents = sorted(set(labels_arr.tolist()))
        if not agents:
            raise ConfigurationError("semantic routing needs at least one agent with examples=[...]")
        examples = [np.ascontiguousarray(vectors[labels_arr == a], dtype=np.float32) for a in agents]
        centroids = np.stack([e.mean(axis=0) for e in examples])
        centroids /= np.clip(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12, None)
        model = None
        columns = np.arange(len(agents))
        oos = oos_vectors if oos_vectors is not None and len(oos_vectors) > 0 else None
        if self.config.head == "logreg" and (len(agents) > 1 or oos is not None):
            from sklearn.linear_model import LogisticRegression
            from threadpoolctl import threadpool_limits

            x, y = vectors, labels_arr
            if oos is not None:
                x = np.vstack([vectors, oos])
                y = np.concatenate([labels_arr, np.full(len(oos), NONE_CLASS, dtype=object)])
            model = LogisticRegression(
                C=self.config.C, class_weight=self.config.class_weight, max_iter=self.config.max_iter
            )
            with threadpool_limits(limits=1):
                model.fit(x, y.astype(str))
            index = {c: i for i, c in enumerate(model.classes_)}
            columns = np.array([index[a] for a in agents], dtype=np.intp)
        self._fitted = _Fitted(agents, examples, centroids.astype(np.float32), model, columns)
        if model is not None:
            self._fitted.weights = np.ascontiguousarray(model.coef_.T, dtype=np.float32)
            self._fitted.bias = np.asarray(model.intercept_, dtype=np.float32)
        return self

    def predict(self, vectors: Vectors, allowed: Iterable[str] | None = None) -> list[SemanticMatch]:
        """One match per row of `vectors`; `allowed` restricts the agents that may be returned."""
        fitted = self._require()
        n_agents = len(fitted.agents)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        mask = np.ones(n_agents, dtype=bool)
        if allowed is not None:
            allowed_set = set(allowed)
            mask = np.array([a in allowed_set for a in fitted.agents], dtype=bool)
        if not mask.any():
            return [SemanticMatch(None, 0.0, None) for _ in range(len(vectors))]
        raw, best = self._raw_scores(fitted, vectors, mask)
        out = []
        for r, b in zip(raw, best, strict=True):
            agent = fitted.agents[b]
            conf = self.confidence(float(r))
            ok = conf >= self.thresholds.get(agent, self.config.threshold)
            out.append(SemanticMatch(agent if ok else None, conf, agent))
        return out

    def ranked(
        self, vector: Vectors, allowed: Iterable[str] | None = None, k: int = 5
    ) -> list[tuple[str, float]]:
        """The `k` best agents for one vector with their confidences, best first (for an LLM stage)."""
        fitted = self._require()
        allowed_set = set(allowed) if allowed is not None else None
        q = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        probs = self._probabilities(fitted, q)[0]
        res = []
        for i, agent in enumerate(fitted.agents):
            if allowed_set is None or agent in allowed_set:
                cos = float((fitted.examples[i] @ q[0]).max())
                raw = self._combine(float(probs[i]), cos) if self.config.head == "logreg" else cos
                res.append((agent, self.confidence(raw)))
        res.sort(key=lambda t: -t[1])
        return res[:k]

    @property
    def pivot(self) -> float:
        """The raw score that maps to confidence 0.5."""
        return self.config.pivot or DEFAULT_PIVOTS[self.config.head]

    def confidence(self, raw: float) -> float:
        """Map a raw score to the 0..1 confidence scale (pivot -> 0.5)."""
        pivot = self.pivot
        raw = min(1.0, max(0.0, raw))
        if raw < pivot:
            return 0.5 * raw / pivot
        return 0.5 + 0.5 * (raw - pivot) / (1.0 - pivot)

    def raw_scores(self, vectors: Vectors) -> tuple[NDArray[np.float64], list[str]]:
        """Raw scores and best agents for `vectors`, all agents allowed (used by `calibrate`)."""
        fitted = self._require()
        raw, best = self._raw_scores(fitted, np.atleast_2d(vectors), np.ones(len(fitted.agents), dtype=bool))
        return raw, [fitted.agents[b] for b in best]

    def _combine(self, prob: float, cos: float) -> float:
        p = max(0.0, prob) ** self.config.prob_power if self.config.prob_power else 1.0
        return p * max(0.0, cos)

    def _probabilities(self, fitted: _Fitted, vectors: Vectors) -> NDArray[np.float64]:
        """(n, n_agents) agent scores: logistic-regression probabilities, or cosine for the other heads."""
        head = self.config.head
        if head == "logreg" and fitted.weights is not None and fitted.bias is not None:
            # Same numbers as model.predict_proba, without scikit-learn's per-call input checks
            # (they cost more than the maths for one message).
            logits = (vectors @ fitted.weights + fitted.bias).astype(np.float64)
            if logits.shape[1] == 1:  # two classes: scikit-learn fits one sigmoid
                logits = np.hstack([np.zeros_like(logits), logits])
            logits -= logits.max(axis=1, keepdims=True)
            proba = np.exp(logits)
            proba /= proba.sum(axis=1, keepdims=True)
            return proba[:, fitted.columns]
        if head == "nearest":
            return np.stack([(vectors @ e.T).max(axis=1) for e in fitted.examples], axis=1).astype(np.float64)
        if head == "logreg":  # a single agent and no out-of-scope examples: nothing to choose between
            return np.ones((len(vectors), len(fitted.agents)))
        return np.asarray(vectors @ fitted.centroids.T, dtype=np.float64)

    def _raw_scores(
        self, fitted: _Fitted, vectors: Vectors, mask: NDArray[np.bool_]
    ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        scores = self._probabilities(fitted, vectors)
        scores = np.where(mask[None, :], scores, -np.inf)
        best = scores.argmax(axis=1)
        top = scores[np.arange(len(vectors)), best]
        raw = np.zeros(len(vectors), dtype=np.float64)
        for i in np.unique(best):
            rows = np.flatnonzero(best == i)
            cos = (vectors[rows] @ fitted.examples[i].T).max(axis=1)
            if self.config.head == "logreg":
                power = self.config.prob_power
                raw[rows] = np.clip(top[rows], 0.0, 1.0) ** power * np.clip(cos, 0.0, 1.0)
            else:  # cosine heads: the score is already a cosine
                raw[rows] = np.clip(top[rows], 0.0, 1.0)
        return raw, best

    def _require(self) -> _Fitted:
        if self._fitted is None:
            raise NotInitializedError(
                "the semantic router is not fitted; call fit()/setup() with the agents' examples"
            )
        return self._fitted


def choose_pivot(
    in_scope_raw: ArrayLike,
    in_scope_correct: ArrayLike,
    oos_raw: ArrayLike,
    *,
    min_oos_recall: float | None = 0.9,
) -> float:
    """The raw-score cut that maximises in-scope accuracy while rejecting at least `min_oos_recall`
    of the out-of-scope messages; with `min_oos_recall=None`, the cut that maximises in-scope accuracy
    plus out-of-scope recall (each weighted equally)."""
    ins = np.asarray(in_scope_raw, dtype=np.float64)
    ok = np.asarray(in_scope_correct, dtype=bool)
    oos = np.asarray(oos_raw, dtype=np.float64)
    if len(ins) == 0 or len(oos) == 0:
        raise ConfigurationError("calibration needs in-scope and out-of-scope messages")
    best_cut, best_score = DEFAULT_PIVOTS["logreg"], -math.inf
    for cut in np.unique(np.concatenate([ins, oos, np.nextafter(oos, np.inf)])):
        if not 0.0 < cut < 1.0:
            continue
        acc = float(np.mean(ok & (ins >= cut)))
        rec = float(np.mean(oos < cut))
        if min_oos_recall is None:
            score = acc + rec
        elif rec + 1e-12 >= min_oos_recall:
            score = acc - 1e-9 * cut  # ties: the lowest cut that meets the recall target
        else:
            continue
        if score > best_score:
            best_cut, best_score = float(cut), score
    return best_cut


class SemanticRouter:
    """Routes a message to the agent whose `examples` it resembles; a `Router` for the orchestrator.

    `embedder` defaults to the offline `LocalEmbedder` (extra `semantic`), created at `setup()`.
    `cache_dir` (default: the `FLOWAGENTS_EMBEDDING_CACHE` environment variable, else no cache) keeps
    the *examples'* embeddings on disk, keyed by model id and text hash, so restarts do not embed them
    again; messages are never cached. Use `await setup(profiles)` / `await afit(...)` then
    `await route(...)`, `await apredict(...)`; `fit`/`predict` are blocking variants for embedders
    with `embed_sync`.
    """

    name = "semantic"

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        config: SemanticConfig | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config or SemanticConfig()
        self.classifier = SemanticClassifier(self.config)
        self._embedder = embedder
        env_dir = os.environ.get("FLOWAGENTS_EMBEDDING_CACHE")
        self._cache_dir = cache_dir if cache_dir is not None else (env_dir or None)
        self._cached: Embedder | None = None

    @property
    def embedder(self) -> Embedder:
        """The embedder messages go through (created on first use when none was given)."""
        if self._embedder is None:
            from flowagents.embeddings.local import LocalEmbedder

            self._embedder = LocalEmbedder()
        return self._embedder

    @property
    def examples_embedder(self) -> Embedder:
        """The embedder for examples and calibration messages: `embedder` behind the disk cache, if any."""
        if self._cache_dir is None:
            return self.embedder
        if self._cached is None:
            from flowagents.embeddings.cache import CachedEmbedder, EmbeddingCache

            self._cached = CachedEmbedder(self.embedder, EmbeddingCache(self._cache_dir))
        return self._cached

    @property
    def thresholds(self) -> dict[str, float]:
        """Per-agent no-match thresholds (confidence scale); others use `config.threshold`."""
        return self.classifier.thresholds

    # -- fitting ---------------------------------------------------------------------------------
    async def setup(self, agents: Sequence[AgentProfile]) -> None:
        """Fit on the agents' `examples` (agents without examples are never chosen here)."""
        if self._embedder is None:
            await asyncio.to_thread(lambda: self.embedder)  # loading the model takes a moment
        examples = {a.name: list(a.examples) for a in agents if a.examples}
        thresholds = {a.name: a.threshold for a in agents if a.threshold is not None}
        if examples:
            await self.afit(examples, thresholds=thresholds)

    async def afit(
        self,
        examples: Mapping[str, Sequence[str]],
        *,
        oos_examples: Sequence[str] = (),
        thresholds: Mapping[str, float] | None = None,
    ) -> SemanticRouter:
        """Embed the examples (agent name -> utterances; optional out-of-scope utterances) and fit."""
        texts, labels = _flatten(examples)
        vectors = await self.examples_embedder.embed(texts + list(oos_examples))
        self._fit_vectors(vectors, labels, len(texts), thresholds)
        return self

    def fit(
        self,
        examples: Mapping[str, Sequence[str]],
        *,
        oos_examples: Sequence[str] = (),
        thresholds: Mapping[str, float] | None = None,
    ) -> SemanticRouter:
        """Blocking `afit`."""
        texts, labels = _flatten(examples)
        vectors = self._embed_sync(texts + list(oos_examples), self.examples_embedder)
        self._fit_vectors(vectors, labels, len(texts), thresholds)
        return self

    def _fit_vectors(
        self, vectors: Vectors, labels: list[str], n: int, thresholds: Mapping[str, float] | None
    ) -> None:
        oos = vectors[n:] if len(vectors) > n else None
        self.classifier.fit(vectors[:n], labels, oos_vectors=oos)
        self.classifier.thresholds = dict(thresholds or {})

    # -- predicting ------------------------------------------------------------------------------
    def predict(self, text: str, allowed: Iterable[str] | None = None) -> SemanticMatch:
        """`(agent or None, confidence, best)` for one message (blocking)."""
        return self.classifier.predict(self._embed_sync([text]), allowed)[0]

    def predict_batch(
        self, texts: Sequence[str], allowed: Iterable[str] | None = None
    ) -> list[SemanticMatch]:
        """`predict` for many messages at once (blocking)."""
        return self.classifier.predict(self._embed_sync(list(texts)), allowed)

    async def apredict(self, text: str, allowed: Iterable[str] | None = None) -> SemanticMatch:
        """`predict` without blocking the event loop."""
        return self.classifier.predict(await self.embedder.embed([text]), allowed)[0]

    async def apredict_batch(
        self, texts: Sequence[str], allowed: Iterable[str] | None = None
    ) -> list[SemanticMatch]:
        """`predict_batch` without blocking the event loop."""
        return self.classifier.predict(await self.embedder.embed(list(texts)), allowed)

    async def ranked(
        self, text: str, allowed: Iterable[str] | None = None, k: int = 5
    ) -> list[tuple[str, float]]:
        """The `k` most likely agents with confidences, best first (candidates for an LLM stage)."""
        return self.classifier.ranked((await self.embedder.embed([text]))[0], allowed, k)

    async def apredict_ranked(
        self, text: str, allowed: Iterable[str] | None = None, k: int = 5
    ) -> tuple[SemanticMatch, list[tuple[str, float]]]:
        """`apredict` and `ranked` from one embedding (what a hybrid router needs)."""
        vector = await self.embedder.embed([text])
        return self.classifier.predict(vector, allowed)[0], self.classifier.ranked(vector[0], allowed, k)

    async def route(
        self, message: str, context: dict[str, Any], candidates: frozenset[str]
    ) -> RoutingDecision | None:
        """The `Router` protocol: the best candidate agent, or None below its no-match threshold."""
        if not self.classifier.agents or not message.strip():
            return None
        match = await self.apredict(message, candidates)
        if match.agent is None:
            return None
        return RoutingDecision(
            agent_type=match.agent,
            confidence=round(match.confidence, 4),
            strategy=self.name,
            reason=f"semantic similarity to the agent's examples ({match.confidence:.2f})",
        )

    # -- calibration -----------------------------------------------------------------------------
    async def acalibrate(
        self,
        in_scope: Sequence[tuple[str, str]],
        out_of_scope: Sequence[str],
        *,
        min_oos_recall: float | None = 0.9,
    ) -> float:
        """Set the pivot from held-out (message, agent) pairs and out-of-scope messages; returns it.

        Never calibrate on the messages you report results on.
        """
        vectors = await self.examples_embedder.embed([t for t, _ in in_scope] + list(out_of_scope))
        return self._calibrate_vectors(vectors, [a for _, a in in_scope], min_oos_recall)

    def calibrate(
        self,
        in_scope: Sequence[tuple[str, str]],
        out_of_scope: Sequence[str],
        *,
        min_oos_recall: float | None = 0.9,
    ) -> float:
        """Blocking `acalibrate`."""
        vectors = self._embed_sync([t for t, _ in in_scope] + list(out_of_scope), self.examples_embedder)
        return self._calibrate_vectors(vectors, [a for _, a in in_scope], min_oos_recall)

    def _calibrate_vectors(self, vectors: Vectors, agents: list[str], min_oos_recall: float | None) -> float:
        n = len(agents)
        raw, best = self.classifier.raw_scores(vectors)
        correct = [b == a for b, a in zip(best[:n], agents, strict=True)]
        pivot = choose_pivot(raw[:n], correct, raw[n:], min_oos_recall=min_oos_recall)
        self.config.pivot = pivot
        return pivot

    def _embed_sync(self, texts: list[str], embedder: Embedder | None = None) -> Vectors:
        embedder = embedder if embedder is not None else self.embedder
        embed_sync = getattr(embedder, "embed_sync", None)
        if embed_sync is None:
            raise ConfigurationError(
                f"{type(embedder).__name__} embeds asynchronously only; use the async methods "
                "(afit, apredict, acalibrate)"
            )
        result: Vectors = embed_sync(texts)
        return result


def _flatten(examples: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    for agent, utterances in examples.items():
        if isinstance(utterances, str):
            raise ConfigurationError(f"examples of {agent!r} must be a list of utterances, not one string")
        for u in utterances:
            if u.strip():
                texts.append(u)
                labels.append(agent)
    if not texts:
        raise ConfigurationError("semantic routing needs at least one agent with examples=[...]")
    return texts, labels
