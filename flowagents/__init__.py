"""flowagents: Slack and Discord bots built around a multi-agent orchestrator."""

from typing import TYPE_CHECKING, Any

from flowagents.agent import AgentSpec, StandardAgent, flowagent, registered_agents
from flowagents.errors import (
    AgentDefinitionError,
    ConfigurationError,
    FlowAgentsError,
    LLMError,
    NotInitializedError,
    RoutingError,
    StoreError,
)
from flowagents.events import (
    DuplicateEvent,
    ErrorEvent,
    InputRequiredEvent,
    MessageChunkEvent,
    ResultEvent,
    RoutingEvent,
    StateChangeEvent,
    StreamEvent,
)
from flowagents.fields import InputField, InvalidAnswer, Slot
from flowagents.llm import LLMClient
from flowagents.orchestrator import ActiveAgent, AgentInfo, Orchestrator
from flowagents.results import AgentResult, AgentStatus
from flowagents.routing import Router, RoutingDecision

if TYPE_CHECKING:
    from flowagents.llm.openai import OpenAIClient

__version__ = "0.1.0"

__all__ = [
    "ActiveAgent",
    "AgentDefinitionError",
    "AgentInfo",
    "AgentResult",
    "AgentSpec",
    "AgentStatus",
    "ConfigurationError",
    "DuplicateEvent",
    "ErrorEvent",
    "FlowAgentsError",
    "InputField",
    "InputRequiredEvent",
    "InvalidAnswer",
    "LLMClient",
    "LLMError",
    "MessageChunkEvent",
    "NotInitializedError",
    "OpenAIClient",
    "Orchestrator",
    "ResultEvent",
    "Router",
    "RoutingDecision",
    "RoutingError",
    "RoutingEvent",
    "Slot",
    "StandardAgent",
    "StateChangeEvent",
    "StoreError",
    "StreamEvent",
    "flowagent",
    "registered_agents",
]


def __getattr__(name: str) -> Any:
    if name == "OpenAIClient":  # imported on first use: the openai package is slow to import
        from flowagents.llm.openai import OpenAIClient

        return OpenAIClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
