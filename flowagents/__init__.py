"""flowagents: Slack and Discord bots built around a multi-agent orchestrator."""

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
from flowagents.llm import LLMClient, OpenAIClient
from flowagents.orchestrator import ActiveAgent, AgentInfo, Orchestrator
from flowagents.results import AgentResult, AgentStatus
from flowagents.routing import Router, RoutingDecision

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
