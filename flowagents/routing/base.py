"""What a router returns and the protocol every routing strategy implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class RoutingDecision(BaseModel):
    """The agent a message should go to, and how sure the router is. Immutable (use `model_copy`)."""

    model_config = ConfigDict(frozen=True)

    agent_type: str
    """The agent's name (its class name unless `@flowagent(name=...)` says otherwise)."""
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    """Confidence on a 0..1 scale; the orchestrator treats values below the no-match threshold as no match."""
    strategy: str = "custom"
    """Which strategy decided: trigger, semantic, llm, hybrid or custom."""
    fallback: str | None = None
    """Set when the configured strategy failed and this one decided instead."""
    reason: str | None = None
    """Short explanation for logs (the matched trigger, the model's reason)."""


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """What routers may know about an agent."""

    name: str
    description: str
    triggers: tuple[str, ...]
    examples: tuple[str, ...] = ()
    threshold: float | None = None
    """Per-agent no-match threshold override (semantic and LLM confidence)."""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Router(Protocol):
    """A routing strategy. `candidates` is the set of agent names the tenant may use."""

    name: str

    async def setup(self, agents: Sequence[AgentProfile]) -> None:
        """Compile or fit once, before the first message."""

    async def route(
        self, message: str, context: dict[str, Any], candidates: frozenset[str]
    ) -> RoutingDecision | None:
        """The decision for `message`, or None for no match."""
