"""The bot's orchestrator: the built-in guards, one structured log line and metrics per turn, and a drain
for graceful shutdown. Everything goes through the orchestrator's public surface (hooks, process_stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from bot.settings import BotSettings
from flowagents import AgentResult, AgentStatus
from flowagents.events import ResultEvent, StreamEvent
from flowagents.guards import Guard, GuardedOrchestrator, MaxMessageLength, RateLimit
from flowagents.observability import TurnSummary, observe_stream, span
from flowagents.routing.base import RoutingDecision

turn_log = logging.getLogger("flowagents.turn")


def guards_from_settings(settings: BotSettings) -> list[Guard]:
    """The built-in guards the settings ask for: message length first, then the rate limit."""
    guards: list[Guard] = []
    if settings.flowagents_max_message_chars:
        guards.append(MaxMessageLength(settings.flowagents_max_message_chars))
    user, tenant = settings.user_rate, settings.tenant_rate
    if user is not None or tenant is not None:
        guards.append(
            RateLimit(
                per_user=(user.count, user.per_seconds) if user else None,
                per_tenant=(tenant.count, tenant.per_seconds) if tenant else None,
            )
        )
    return guards


def log_turn(summary: TurnSummary) -> None:
    """One INFO line per turn with tenant, conversation, agent, strategy, confidence and durations."""
    level = logging.WARNING if summary.error or summary.status in ("failed", "timed_out") else logging.INFO
    turn_log.log(level, "turn %s", summary.status or "unknown", extra=summary.log_fields())


class BotOrchestrator(GuardedOrchestrator):
    """`GuardedOrchestrator` that logs and measures every turn and can wait for running turns on shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running_turns(self) -> int:
        """Turns in progress right now."""
        return self._running

    def _enter(self) -> None:
        self._running += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.set()

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to `timeout` seconds for running turns to finish; True when none is left."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def route_message(self, message: str, context: dict[str, Any]) -> RoutingDecision | None:
        """`Orchestrator.route_message` in a `flowagents.route` span (a child of the turn span)."""
        with span("flowagents.route", tenant_id=str(context.get("tenant_id"))) as current:
            decision = await super().route_message(message, context)
            if current is not None and decision is not None:
                current.set_attribute("flowagents.agent", decision.agent_type)
                current.set_attribute("flowagents.confidence", decision.confidence)
            return decision

    async def process_stream(
        self,
        message: str,
        tenant_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        delivery_id: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """`Orchestrator.process_stream`, observed (log line, metrics, trace span)."""
        user = user_id or "anonymous"
        self._enter()
        try:
            stream = super().process_stream(
                message, tenant_id, user_id, conversation_id, metadata, delivery_id
            )
            async for event in observe_stream(
                stream,
                tenant_id=tenant_id or self.default_tenant,
                conversation_id=conversation_id or user,
                user_id=user,
                platform=str((metadata or {}).get("platform", "unknown")),
                on_finish=log_turn,
            ):
                yield event
        finally:
            self._leave()

    async def process(
        self,
        message: str,
        tenant_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        delivery_id: str | None = None,
    ) -> AgentResult:
        """`Orchestrator.process`, run through the observed stream so it is logged and measured the same."""
        result: AgentResult | None = None
        async for event in self.process_stream(
            message, tenant_id, user_id, conversation_id, metadata, delivery_id
        ):
            if isinstance(event, ResultEvent):
                result = event.result
        if result is None:  # a redelivered turn yields only a DuplicateEvent
            user = user_id or "anonymous"
            result = AgentResult(
                status=AgentStatus.COMPLETED,
                processed=False,
                duplicate=True,
                tenant_id=tenant_id or self.default_tenant,
                conversation_id=conversation_id or user,
                user_id=user,
            )
        return result
