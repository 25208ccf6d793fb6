"""Hooks for metrics, logs and traces. No hard dependency: OpenTelemetry is used only when installed.

Observers receive one `TurnSummary` per turn plus platform events (429s, retries) reported by the
channels. Register one with `add_observer`; an observer that raises is logged and never breaks a turn.

`observe_stream` wraps `Orchestrator.process_stream` to build the summary from the stream's events (the
bot does this for every channel); `span` opens an OpenTelemetry span when the `otel` extra is installed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flowagents.events import (
    DuplicateEvent,
    ErrorEvent,
    MessageChunkEvent,
    ResultEvent,
    RoutingEvent,
    StateChangeEvent,
    StreamEvent,
)

log = logging.getLogger("flowagents.observability")

try:  # optional: the `otel` extra
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - depends on the environment
    _otel_trace = None  # type: ignore[assignment]
    _otel_context = None  # type: ignore[assignment]


@dataclass
class TurnSummary:
    """What one turn did, for logs and metrics."""

    tenant_id: str
    conversation_id: str
    user_id: str
    platform: str = "unknown"
    agent: str | None = None
    strategy: str | None = None
    confidence: float | None = None
    fallback: str | None = None
    status: str | None = None
    processed: bool = True
    no_match: bool = False
    duplicate: bool = False
    error: str | None = None
    error_code: str | None = None
    states: list[tuple[str, str | None, str]] = field(default_factory=list)
    duration_seconds: float = 0.0
    first_chunk_seconds: float | None = None

    def log_fields(self) -> dict[str, Any]:
        """The fields a structured log line carries (no message text, no secrets)."""
        return {
            "tenant_id": self.tenant_id,
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "platform": self.platform,
            "agent": self.agent,
            "strategy": self.strategy,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "fallback": self.fallback,
            "status": self.status,
            "processed": self.processed,
            "no_match": self.no_match,
            "duplicate": self.duplicate,
            "error": self.error,
            "error_code": self.error_code,
            "duration_ms": round(self.duration_seconds * 1000, 1),
            "first_chunk_ms": None
            if self.first_chunk_seconds is None
            else round(self.first_chunk_seconds * 1000, 1),
        }


class Observer:
    """Receives what the bot does. Override the methods you need; the defaults do nothing."""

    def turn_finished(self, summary: TurnSummary) -> None:
        """A turn ended (processed, refused by a guard, duplicate or failed)."""

    def guard_rejected(self, guard: str, tenant_id: str, user_id: str) -> None:
        """A guard (rate limit, message length) refused a message."""

    def platform_rate_limited(self, platform: str, retry_after: float | None) -> None:
        """A platform answered 429."""

    def platform_retry(self, platform: str) -> None:
        """A platform call was retried."""


_observers: list[Observer] = []


def add_observer(observer: Observer) -> Callable[[], None]:
    """Register an observer; returns a function that removes it again."""
    _observers.append(observer)

    def remove() -> None:
        if observer in _observers:
            _observers.remove(observer)

    return remove


def _notify(method: str, *args: Any) -> None:
    for observer in list(_observers):
        try:
            getattr(observer, method)(*args)
        except Exception:
            log.exception("observer %s.%s failed", type(observer).__name__, method)


def turn_finished(summary: TurnSummary) -> None:
    """Report a finished turn to every observer."""
    _notify("turn_finished", summary)


def guard_rejected(guard: str, tenant_id: str, user_id: str) -> None:
    """Report a guard refusal (called by `flowagents.guards`)."""
    _notify("guard_rejected", guard, tenant_id, user_id)


def platform_rate_limited(platform: str, retry_after: float | None = None) -> None:
    """Channels call this when the platform answers 429."""
    _notify("platform_rate_limited", platform, retry_after)


def platform_retry(platform: str) -> None:
    """Channels call this when they retry a platform call."""
    _notify("platform_retry", platform)


# ------------------------------------------------------------------------------------ traces


def tracer() -> Any:
    """The flowagents OpenTelemetry tracer, or None when OpenTelemetry is not installed or not set up."""
    if _otel_trace is None:
        return None
    # `get_tracer_provider()` consults the environment on every call until a provider is set; the
    # module global answers "is one set?" for the price of an attribute read on the per-turn path.
    if getattr(_otel_trace, "_TRACER_PROVIDER", True) is None:
        return None
    provider = _otel_trace.get_tracer_provider()
    # Until an application installs a real provider, spans would be no-ops: skip them (hot path).
    if isinstance(provider, _otel_trace.ProxyTracerProvider | _otel_trace.NoOpTracerProvider):
        return None
    return provider.get_tracer("flowagents")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """An OpenTelemetry span made current for the block (a no-op without OpenTelemetry).

    Channels wrap platform delivery in `with span("slack.deliver", channel=...)`; it becomes a child of
    the turn span when called inside the turn.
    """
    otel = tracer()
    if otel is None:
        yield None
        return
    with otel.start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"flowagents.{k}": v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}


# ------------------------------------------------------------------------------------ streams


async def observe_stream(
    stream: AsyncIterator[StreamEvent],
    *,
    tenant_id: str,
    conversation_id: str,
    user_id: str,
    platform: str = "unknown",
    on_finish: Callable[[TurnSummary], None] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Pass a turn's events through unchanged; at the end report a `TurnSummary` and close its span.

    The turn span is a child of the caller's current span (a channel's `span("slack.turn")`), and it is
    current inside the orchestrator's turn, so routing, agent and LLM spans nest under it. It also
    carries the routing decision and state changes as attributes and events.
    """
    summary = TurnSummary(
        tenant_id=tenant_id, conversation_id=conversation_id, user_id=user_id, platform=platform
    )
    otel = tracer()
    turn_span = (
        otel.start_span(
            "flowagents.turn",
            attributes=_clean(
                {"tenant_id": tenant_id, "conversation_id": conversation_id, "platform": platform}
            ),
        )
        if otel
        else None
    )
    started = time.perf_counter()
    finished = False
    try:
        iterator = aiter(stream)
        # The orchestrator copies the context for its turn on the first step; make the span current just
        # for that step (attach and detach in one step: an async generator must not keep a context
        # across `yield`).
        token = _otel_context.attach(_otel_trace.set_span_in_context(turn_span)) if turn_span else None
        try:
            event: StreamEvent | None = await anext(iterator, None)
        finally:
            if token is not None:
                _otel_context.detach(token)
        while event is not None:
            _record(summary, event, started, turn_span)
            yield event
            event = await anext(iterator, None)
        finished = True
    finally:
        summary.duration_seconds = time.perf_counter() - started
        if not finished and summary.status is None:
            summary.status = "interrupted"
        if turn_span is not None:
            turn_span.set_attributes(_clean({k: v for k, v in summary.log_fields().items() if v is not None}))
            turn_span.end()
        if on_finish is not None:
            try:
                on_finish(summary)
            except Exception:
                log.exception("turn summary callback failed")
        turn_finished(summary)


def _record(summary: TurnSummary, event: StreamEvent, started: float, turn_span: Any) -> None:
    if isinstance(event, RoutingEvent):
        summary.agent = event.agent
        summary.strategy = event.strategy
        summary.confidence = event.confidence
        summary.fallback = event.fallback
        if turn_span is not None:
            turn_span.add_event(
                "routing",
                _clean(
                    {"agent": event.agent or "", "strategy": event.strategy, "confidence": event.confidence}
                ),
            )
    elif isinstance(event, StateChangeEvent):
        old = None if event.old_state is None else str(event.old_state)
        summary.states.append((event.agent, old, str(event.new_state)))
        if turn_span is not None:
            turn_span.add_event(
                "state_change",
                _clean({"agent": event.agent, "old_state": old or "", "new_state": str(event.new_state)}),
            )
    elif isinstance(event, MessageChunkEvent):
        if summary.first_chunk_seconds is None:
            summary.first_chunk_seconds = time.perf_counter() - started
    elif isinstance(event, ErrorEvent):
        summary.error_code = event.code
    elif isinstance(event, DuplicateEvent):
        summary.duplicate = True
        summary.processed = False
        summary.status = "duplicate"
    elif isinstance(event, ResultEvent):
        result = event.result
        summary.status = str(result.status)
        summary.processed = result.processed
        summary.no_match = result.no_match
        summary.error = result.error
        if result.agent_name is not None:
            summary.agent = result.agent_name
