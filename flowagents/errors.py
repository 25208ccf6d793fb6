"""Exception types raised by flowagents. Each message says what to do about it."""

from __future__ import annotations


class FlowAgentsError(Exception):
    """Base class of every error flowagents raises on purpose."""


class ConfigurationError(FlowAgentsError):
    """The orchestrator, a store or a channel was set up wrongly; fix the settings named in the message."""


class AgentDefinitionError(FlowAgentsError):
    """An agent class is declared wrongly (bad decorator arguments, bad field, duplicate name)."""


class NotInitializedError(FlowAgentsError):
    """A call needs `await orchestrator.initialize()` first."""


class StoreError(FlowAgentsError):
    """The conversation store could not be reached or answered badly; the turn was not applied."""


class LLMError(FlowAgentsError):
    """A call to the language model failed (bad key, timeout, rate limit, malformed answer)."""


class RoutingError(FlowAgentsError):
    """A router could not decide; the orchestrator treats it as no match or falls back."""
