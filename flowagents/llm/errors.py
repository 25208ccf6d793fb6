"""LLM error types: what went wrong with a model call, in words that say what to do.

Every client maps its provider's exceptions onto these (see `OpenAIClient`), so the orchestrator,
routers and agents handle one family of errors whatever the provider. All are `flowagents.errors.LLMError`.
"""

from __future__ import annotations

from flowagents.errors import LLMError

__all__ = [
    "LLMAuthError",
    "LLMError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMTimeoutError",
    "LLMUnavailableError",
]


class LLMAuthError(LLMError):
    """The server rejected the API key (401/403): fix OPENAI_API_KEY (or the key given to the client)."""


class LLMTimeoutError(LLMError):
    """The model did not answer in time, after the client's retries."""


class LLMRateLimitError(LLMError):
    """The server kept answering 429 after the client's retries; `retry_after` is its hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMResponseError(LLMError):
    """The model answered, but not in a usable form (malformed JSON, wrong shape, refusal, cut off)."""


class LLMUnavailableError(LLMError):
    """The LLM server could not be reached or failed (connection refused, 5xx), or calls are paused
    after repeated failures (circuit open)."""
