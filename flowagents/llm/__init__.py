"""Language-model clients: the `LLMClient` protocol, its OpenAI implementation and LLM error types."""

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
