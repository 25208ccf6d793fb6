"""Prometheus metrics for `GET /metrics` (the optional `metrics` extra: prometheus-client).

`BotMetrics` is a `flowagents.observability.Observer`: it counts what every turn did and what the
channels report (429s, retries). Active conversations and LLM tokens are read at scrape time from the
orchestrator's agent pool and its LLM client's usage ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flowagents import Orchestrator
from flowagents.observability import Observer, TurnSummary

log = logging.getLogger("bot.metrics")

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - depends on the environment
    CollectorRegistry = None  # type: ignore[assignment,misc]
    Collector = object  # type: ignore[assignment,misc]

TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

METRIC_NAMES = (
    "flowagents_messages_total",
    "flowagents_routing_decisions_total",
    "flowagents_no_match_total",
    "flowagents_turn_duration_seconds",
    "flowagents_active_conversations",
    "flowagents_llm_tokens_total",
    "flowagents_guard_rejections_total",
    "flowagents_platform_rate_limited_total",
    "flowagents_platform_retries_total",
)
"""Every metric the bot exports (documented in docs/operations.md)."""


def metrics_available() -> bool:
    """True when prometheus-client is installed."""
    return CollectorRegistry is not None


class _PoolCollector(Collector):
    """Reads active conversations and LLM tokens when Prometheus scrapes."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    def collect(self) -> Iterator[Any]:
        active = GaugeMetricFamily(
            "flowagents_active_conversations", "Conversations whose agent is running or waiting for input."
        )
        try:
            active.add_metric([], float(len(self.orchestrator.get_active_agents())))
        except Exception as exc:  # a store that cannot answer must not break the scrape
            log.warning("could not count active conversations: %s", type(exc).__name__)
        yield active
        tokens = CounterMetricFamily(
            "flowagents_llm_tokens", "LLM tokens spent, by tenant and kind.", labels=["tenant", "kind"]
        )
        ledger = getattr(self.orchestrator.llm_client, "usage", None)
        by_tenant = getattr(ledger, "by_tenant", None)
        if by_tenant is not None:
            for tenant, usage in by_tenant().items():
                tokens.add_metric([tenant, "prompt"], float(usage.prompt_tokens))
                tokens.add_metric([tenant, "completion"], float(usage.completion_tokens))
        yield tokens


class BotMetrics(Observer):
    """The bot's metrics in their own registry (so several bots in one process do not collide)."""

    content_type: str = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, orchestrator: Orchestrator) -> None:
        if CollectorRegistry is None:
            raise RuntimeError("prometheus-client is not installed; pip install 'flowagents[metrics]'")
        self.content_type = CONTENT_TYPE_LATEST
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "flowagents_messages",
            "Messages received, by platform and outcome (processed, rejected, duplicate, failed).",
            ["platform", "outcome"],
            registry=r,
        )
        self.routing = Counter(
            "flowagents_routing_decisions",
            "Routing decisions by agent and strategy.",
            ["agent", "strategy"],
            registry=r,
        )
        self.no_match = Counter("flowagents_no_match", "Messages no agent matched.", registry=r)
        self.latency = Histogram(
            "flowagents_turn_duration_seconds",
            "Time from message to the turn's result.",
            ["status"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        self.guards = Counter(
            "flowagents_guard_rejections", "Messages refused by a guard.", ["guard"], registry=r
        )
        self.rate_limited = Counter(
            "flowagents_platform_rate_limited", "HTTP 429 answers from a platform.", ["platform"], registry=r
        )
        self.retries = Counter(
            "flowagents_platform_retries", "Platform calls retried.", ["platform"], registry=r
        )
        r.register(_PoolCollector(orchestrator))

    def turn_finished(self, summary: TurnSummary) -> None:
        if summary.duplicate:
            outcome = "duplicate"
        elif not summary.processed and summary.error is None:
            outcome = "rejected"
        elif summary.error is not None or summary.status in ("failed", "timed_out", "interrupted"):
            outcome = "failed"
        else:
            outcome = "processed"
        self.messages.labels(summary.platform, outcome).inc()
        if summary.strategy is not None:
            self.routing.labels(summary.agent or "none", summary.strategy).inc()
        if summary.no_match:
            self.no_match.inc()
        if not summary.duplicate:
            self.latency.labels(summary.status or "unknown").observe(summary.duration_seconds)

    def guard_rejected(self, guard: str, tenant_id: str, user_id: str) -> None:
        self.guards.labels(guard).inc()

    def platform_rate_limited(self, platform: str, retry_after: float | None) -> None:
        self.rate_limited.labels(platform).inc()

    def platform_retry(self, platform: str) -> None:
        self.retries.labels(platform).inc()

    def render(self) -> bytes:
        """The exposition text for `GET /metrics`."""
        return bytes(generate_latest(self.registry))
