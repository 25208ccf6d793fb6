"""Builds the router named by `Orchestrator(routing_strategy=...)`."""

from __future__ import annotations

from typing import Any

from flowagents.errors import ConfigurationError
from flowagents.routing.base import Router
from flowagents.routing.triggers import TriggerRouter

STRATEGIES = ("trigger", "llm", "hybrid", "semantic")


def make_router(
    strategy: str | Router,
    *,
    llm_client: Any = None,
    embedder: Any = None,
    cache_dir: str | None = None,
    no_match_threshold: float = 0.5,
) -> Router:
    """A router for a strategy name, or the given router object itself.

    `cache_dir` keeps the semantic stage's example embeddings on disk (semantic and hybrid routing);
    `no_match_threshold` is the confidence below which the router answers no match (for agents without
    a threshold of their own).
    """
    if not isinstance(strategy, str):
        return strategy
    if strategy == "trigger":
        return TriggerRouter()
    if strategy in ("llm", "hybrid"):
        if llm_client is None:
            raise ConfigurationError(
                f"routing_strategy={strategy!r} needs an LLM: pass llm_client=OpenAIClient(...) "
                "(or set OPENAI_API_KEY for the bot)."
            )
        from flowagents.routing.llm import HybridRouter, LLMRouter

        if strategy == "llm":
            return LLMRouter(llm_client)
        return HybridRouter(llm_client, embedder=embedder, cache_dir=cache_dir, threshold=no_match_threshold)
    if strategy == "semantic":
        try:
            from flowagents.routing.semantic import SemanticConfig, SemanticRouter
        except ImportError as exc:
            raise ConfigurationError(
                "routing_strategy='semantic' needs the semantic extra: "
                f"pip install 'flowagents[semantic]' ({exc})."
            ) from None
        config = SemanticConfig(threshold=no_match_threshold)
        return SemanticRouter(embedder=embedder, cache_dir=cache_dir, config=config)
    raise ConfigurationError(
        f"Unknown routing_strategy {strategy!r}; use one of {', '.join(STRATEGIES)} or a Router object."
    )
