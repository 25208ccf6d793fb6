"""Semantic routing: embed each agent's `examples` and classify messages against them.

The head is a scikit-learn logistic regression over sentence embeddings, combined with a word-level
naive Bayes over the examples' TF-IDF (both fit in a few seconds for 15,000 examples). Each message
gets one **confidence on a 0..1 scale**:

    p   = softmax(logistic-regression logits + lexical_weight * naive-Bayes log-likelihoods)
    raw = p(agent | message) ** prob_power * max(0, cosine(message, agent's nearest example))

`p` is the probability of the best agent (out of the tenant's candidates) and the cosine keeps
far-away messages from scoring high just because one class wins. Out-of-scope examples, when given,
form a hidden "none" class of both models (weighted `none_weight` times an agent). `raw` is then mapped
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
examples per intent (see `calibrate`). With few examples per agent the logreg pivot is lower."""

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
    none_weight: float = Field(default=20.0, gt=0)
    """Weight of the out-of-scope examples' "none" class relative to one agent (used only when
    out-of-scope examples are given; with `class_weight=None`, relative to one example)."""
    lexical_weight: float = Field(default=0.5, ge=0)
    """Weight of the word-level naive Bayes (TF-IDF of 1-2 word phrases of the examples) added to the
    logistic regression's logits; 0 = embeddings only. Needs the message text (`SemanticRouter` passes it)."""
    lexical_alpha: float = Field(default=0.1, gt=0)
    """Additive smoothing of the naive Bayes."""
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
    lexical: _Lexical | None = None


@dataclass(slots=True)
class _Lexical:
    """Multinomial naive Bayes over TF-IDF features, same classes (columns) as the logistic regression."""

    vectorizer: Any  # sklearn TfidfVectorizer
    log_prob: NDArray[np.float32]  # (n_features, n_classes) log p(feature | class)

    def log_likelihood(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """(n, n_classes) joint log-likelihoods (uniform class prior)."""
        return np.asarray(self.vectorizer.transform(texts) @ self.log_prob, dtype=np.float64)


def _fit_lexical(
    texts: Sequence[str], labels: Sequence[str], classes: Sequence[str], alpha: float
) -> _Lexical:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    x = vectorizer.fit_transform(texts)
    index = {c: i for i, c in enumerate(classes)}
    rows = np.array([index[y] for y in labels], dtype=np.intp)
    onehot = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, np.arange(len(rows)))), shape=(len(classes), len(rows))
    )
    counts = np.asarray((onehot @ x).todense(), dtype=np.float64) + alpha  # (n_classes, n_features)
    log_prob = np.log(counts) - np.log(counts.sum(axis=1, keepdims=True))
    return _Lexical(vectorizer, np.ascontiguousarray(log_prob.T, dtype=np.float32))


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
        texts: Sequence[str] | None = None,
        oos_texts: Sequence[str] | None = None,
    ) -> SemanticClassifier:
        """Fit on unit-length example vectors and their agent names.

        `oos_vectors` (messages that belong to no agent) train a hidden "none" class, which lowers the
        probability of every agent for look-alike messages. `texts` (and `oos_texts`), the utterances
        behind the vectors, train the word-level naive Bayes (`config.lexical_weight`); without them
        the classifier uses the embeddings only.
        """
        labels_arr = np.asarray(list(labels), dtype=object)
        if len(labels_arr) != len(vectors) or (texts is not None and len(texts) != len(vectors)):
            raise ConfigurationError("semantic routing: one label (and text) per example vector is needed")
        agents = sorted(set(labels_arr.tolist()))
        if not agents:
            raise ConfigurationError("semantic routing needs at least one agent with examples=[...]")
        examples = [np.ascontiguousarray(vectors[labels_arr == a], dtype=np.float32) for a in agents]
        centroids = np.stack([e.mean(axis=0) for e in examples])
        centroids /= np.clip(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12, None)
        model = None
        lexical: _Lexical | None = None
        columns = np.arange(len(agents))
        oos = oos_vectors if oos_vectors is not None and len(oos_vectors) > 0 else None
        if self.config.head == "logreg" and (len(agents) > 1 or oos is not None):
            from sklearn.linear_model import LogisticRegression
            from threadpoolctl import threadpool_limits

            x, y = vectors, labels_arr
            if oos is not None:
                x = np.vstack([vectors, oos])
                y = np.concatenate([labels_arr, np.full(len(oos), NONE_CLASS, dtype=object)])
            y_str = y.astype(str)
            model = LogisticRegression(
                C=self.config.C, class_weight=self._class_weight(y_str), max_iter=self.config.max_iter
            )
            with threadpool_limits(limits=1):
                model.fit(x, y_str)
            classes = [str(c) for c in model.classes_]
            index = {c: i for i, c in enumerate(classes)}
            columns = np.array([index[a] for a in agents], dtype=np.intp)
            if texts is not None and self.config.lexical_weight > 0:
                all_texts = list(texts)
                if oos is not None:
                    if oos_texts is None or len(oos_texts) != len(oos):
                        raise ConfigurationError(
                            "semantic routing: one text per out-of-scope vector is needed"
                        )
                    all_texts += list(oos_texts)
                lexical = _fit_lexical(all_texts, y_str.tolist(), classes, self.config.lexical_alpha)
        self._fitted = _Fitted(agents, examples, centroids.astype(np.float32), model, columns)
        if model is not None:
            self._fitted.weights = np.ascontiguousarray(model.coef_.T, dtype=np.float32)
            self._fitted.bias = np.asarray(model.intercept_, dtype=np.float32)
            self._fitted.lexical = lexical
        return self

    def _class_weight(self, y: NDArray[Any]) -> dict[str, float] | None:
        """scikit-learn's "balanced" weights (or none), with the "none" class weighted `none_weight`."""
        classes, counts = np.unique(y, return_counts=True)
        if self.config.class_weight == "balanced":
            weights = {str(c): len(y) / (len(classes) * n) for c, n in zip(classes, counts, strict=True)}
        elif NONE_CLASS in classes:
            weights = {str(c): 1.0 for c in classes}
        else:
            return None
        if NONE_CLASS in weights:
            weights[NONE_CLASS] *= self.config.none_weight
        return weights

    def predict(
        self, vectors: Vectors, allowed: Iterable[str] | None = None, texts: Sequence[str] | None = None
    ) -> list[SemanticMatch]:
        """One match per row of `vectors`; `allowed` restricts the agents that may be returned.

        `texts` (the messages behind the vectors) enable the lexical part of the score; pass them
        whenever you have them, since the pivot was chosen with them.
        """
        fitted = self._require()
        n_agents = len(fitted.agents)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        mask = np.ones(n_agents, dtype=bool)
        if allowed is not None:
            allowed_set = set(allowed)
            mask = np.array([a in allowed_set for a in fitted.agents], dtype=bool)
        if not mask.any():
            return [SemanticMatch(None, 0.0, None) for _ in range(len(vectors))]
        raw, best = self._raw_scores(fitted, vectors, mask, texts)
        out = []
        for r, b in zip(raw, best, strict=True):
            agent = fitted.agents[b]
            conf = self.confidence(float(r))
            ok = conf >= self.thresholds.get(agent, self.config.threshold)
            out.append(SemanticMatch(agent if ok else None, conf, agent))
        return out

    def ranked(
        self, vector: Vectors, allowed: Iterable[str] | None = None, k: int = 5, text: str | None = None
    ) -> list[tuple[str, float]]:
        """The `k` best agents for one vector (and its message `text`) with their confidences, best
        first (for an LLM stage)."""
        fitted = self._require()
        allowed_set = set(allowed) if allowed is not None else None
        q = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        probs = self._probabilities(fitted, q, None if text is None else [text])[0]
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

    def raw_scores(
        self, vectors: Vectors, texts: Sequence[str] | None = None
    ) -> tuple[NDArray[np.float64], list[str]]:
        """Raw scores and best agents for `vectors`, all agents allowed (used by `calibrate`)."""
        fitted = self._require()
        everyone = np.ones(len(fitted.agents), dtype=bool)
        raw, best = self._raw_scores(fitted, np.atleast_2d(vectors), everyone, texts)
        return raw, [fitted.agents[b] for b in best]

    def _combine(self, prob: float, cos: float) -> float:
        p = max(0.0, prob) ** self.config.prob_power if self.config.prob_power else 1.0
        return p * max(0.0, cos)

    def _probabilities(
        self, fitted: _Fitted, vectors: Vectors, texts: Sequence[str] | None = None
    ) -> NDArray[np.float64]:
        """(n, n_agents) agent scores: logistic-regression probabilities, or cosine for the other heads."""
        head = self.config.head
        if head == "logreg" and fitted.weights is not None and fitted.bias is not None:
            # Same numbers as model.predict_proba, without scikit-learn's per-call input checks
            # (they cost more than the maths for one message).
            logits = (vectors @ fitted.weights + fitted.bias).astype(np.float64)
            if logits.shape[1] == 1:  # two classes: scikit-learn fits one sigmoid
                logits = np.hstack([np.zeros_like(logits), logits])
            if fitted.lexical is not None and texts is not None:
                if len(texts) != len(vectors):
                    raise ConfigurationError("semantic routing: one text per message vector is needed")
                logits += self.config.lexical_weight * fitted.lexical.log_likelihood(texts)
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
        self, fitted: _Fitted, vectors: Vectors, mask: NDArray[np.bool_], texts: Sequence[str] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
        scores = self._probabilities(fitted, vectors, texts)
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
    again; messages are never cached. `oos_examples` are messages that belong to no agent (e.g. what
    users of the bot ask that it should not handle): they train a hidden "none" class, also when the
    orchestrator fits the router through `setup()`. Use `await setup(profiles)` / `await afit(...)` then
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
        oos_examples: Sequence[str] = (),
    ) -> None:
        if isinstance(oos_examples, str):
            raise ConfigurationError("oos_examples must be a list of utterances, not one string")
        self.config = config or SemanticConfig()
        self.oos_examples = [t for t in oos_examples if t.strip()]
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
            await self.afit(examples, oos_examples=self.oos_examples, thresholds=thresholds)

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
        self._fit_vectors(vectors, texts + list(oos_examples), labels, thresholds)
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
        self._fit_vectors(vectors, texts + list(oos_examples), labels, thresholds)
        return self

    def _fit_vectors(
        self, vectors: Vectors, texts: list[str], labels: list[str], thresholds: Mapping[str, float] | None
    ) -> None:
        n = len(labels)
        oos = vectors[n:] if len(vectors) > n else None
        self.classifier.fit(vectors[:n], labels, oos_vectors=oos, texts=texts[:n], oos_texts=texts[n:])
        self.classifier.thresholds = dict(thresholds or {})

    # -- predicting ------------------------------------------------------------------------------
    def predict(self, text: str, allowed: Iterable[str] | None = None) -> SemanticMatch:
        """`(agent or None, confidence, best)` for one message (blocking)."""
        return self.classifier.predict(self._embed_sync([text]), allowed, [text])[0]

    def predict_batch(
        self, texts: Sequence[str], allowed: Iterable[str] | None = None
    ) -> list[SemanticMatch]:
        """`predict` for many messages at once (blocking)."""
        return self.classifier.predict(self._embed_sync(list(texts)), allowed, texts)

    async def apredict(self, text: str, allowed: Iterable[str] | None = None) -> SemanticMatch:
        """`predict` without blocking the event loop."""
        return self.classifier.predict(await self.embedder.embed([text]), allowed, [text])[0]

    async def apredict_batch(
        self, texts: Sequence[str], allowed: Iterable[str] | None = None
    ) -> list[SemanticMatch]:
        """`predict_batch` without blocking the event loop."""
        return self.classifier.predict(await self.embedder.embed(list(texts)), allowed, texts)

    async def ranked(
        self, text: str, allowed: Iterable[str] | None = None, k: int = 5
    ) -> list[tuple[str, float]]:
        """The `k` most likely agents with confidences, best first (candidates for an LLM stage)."""
        return self.classifier.ranked((await self.embedder.embed([text]))[0], allowed, k, text)

    async def apredict_ranked(
        self, text: str, allowed: Iterable[str] | None = None, k: int = 5
    ) -> tuple[SemanticMatch, list[tuple[str, float]]]:
        """`apredict` and `ranked` from one embedding (what a hybrid router needs)."""
        vector = await self.embedder.embed([text])
        match = self.classifier.predict(vector, allowed, [text])[0]
        return match, self.classifier.ranked(vector[0], allowed, k, text)

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
        texts = [t for t, _ in in_scope] + list(out_of_scope)
        vectors = await self.examples_embedder.embed(texts)
        return self._calibrate_vectors(vectors, texts, [a for _, a in in_scope], min_oos_recall)

    def calibrate(
        self,
        in_scope: Sequence[tuple[str, str]],
        out_of_scope: Sequence[str],
        *,
        min_oos_recall: float | None = 0.9,
    ) -> float:
        """Blocking `acalibrate`."""
        texts = [t for t, _ in in_scope] + list(out_of_scope)
        vectors = self._embed_sync(texts, self.examples_embedder)
        return self._calibrate_vectors(vectors, texts, [a for _, a in in_scope], min_oos_recall)

    def _calibrate_vectors(
        self, vectors: Vectors, texts: list[str], agents: list[str], min_oos_recall: float | None
    ) -> float:
        n = len(agents)
        raw, best = self.classifier.raw_scores(vectors, texts)
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
