"""Language-model clients: the `LLMClient` protocol, its OpenAI implementation and LLM error types."""

from typing import TYPE_CHECKING, Any

from flowagents.llm.base import (
    UNATTRIBUTED,
    ChatMessage,
    LLMClient,
    LLMUsage,
    UsageLedger,
    current_tenant,
    llm_tenant,
    resolve_tenant,
)
from flowagents.llm.breaker import CircuitBreaker
from flowagents.llm.errors import (
    LLMAuthError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)

if TYPE_CHECKING:
    from flowagents.llm.openai import OpenAIClient

__all__ = [
    "UNATTRIBUTED",
    "ChatMessage",
    "CircuitBreaker",
    "LLMAuthError",
    "LLMClient",
    "LLMError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMTimeoutError",
    "LLMUnavailableError",
    "LLMUsage",
    "OpenAIClient",
    "UsageLedger",
    "current_tenant",
    "llm_tenant",
    "resolve_tenant",
]


def __getattr__(name: str) -> Any:
    # The openai package takes most of a second to import: load it when OpenAIClient is first used.
    if name == "OpenAIClient":
        from flowagents.llm.openai import OpenAIClient

        return OpenAIClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
