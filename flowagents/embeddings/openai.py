"""`OpenAIEmbedder`: embeddings from the OpenAI API (or any server speaking `POST /v1/embeddings`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from flowagents.embeddings.base import EmbeddingError, Vectors, l2_normalise
from flowagents.errors import LLMError
from flowagents.llm.breaker import CircuitBreaker
from flowagents.llm.errors import (
    LLMAuthError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)

if TYPE_CHECKING:
    import openai


class OpenAIEmbedder:
    """Embeds with `AsyncOpenAI().embeddings.create`, in batches of `batch_size` texts.

    Pass a configured `openai.AsyncOpenAI` as `client`, or `api_key`/`base_url` to make one (the
    key falls back to `OPENAI_API_KEY`). `dimensions` shortens text-embedding-3 vectors. Vectors are
    re-normalised to unit length, so any compatible server works.

    After repeated outages (timeouts, unreachable server, 5xx, 429, a wrong key) calls pause for a while
    (`breaker`, a `CircuitBreaker` of its own by default) and `embed` raises `EmbeddingError` at once, so
    semantic and hybrid routing fall back to triggers without waiting on a dead service every message.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 2,
        batch_size: int = 512,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if client is None:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.batch_size = max(1, min(batch_size, 2048))  # the API takes at most 2048 inputs per call
        self.model_id = f"openai/{model}" + (f"/{dimensions}" if dimensions else "")
        self.breaker = breaker if breaker is not None else CircuitBreaker()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` (one request per `batch_size` texts); raises `EmbeddingError` on failure, at once
        while calls are paused after repeated failures."""
        import openai

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            extra: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
            if not self.breaker.allow():
                raise EmbeddingError(
                    "calls to the embeddings API are paused after repeated failures (timeouts, errors, rate "
                    "limits or a wrong key); routing falls back to triggers until the pause ends"
                )
            try:
                response = await self.client.embeddings.create(
                    model=self.model, input=batch, encoding_format="float", **extra
                )
            except asyncio.CancelledError:
                self.breaker.abandoned()
                raise
            except openai.APIError as exc:
                self.breaker.failure(_as_llm_error(exc))
                raise _embedding_error(exc, self.model) from exc
            except Exception as exc:
                self.breaker.failure(exc)
                raise
            self.breaker.success()
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise EmbeddingError(
                    f"the embeddings API returned {len(data)} vectors for {len(batch)} texts"
                )
            rows.extend(list(d.embedding) for d in data)
        return l2_normalise(np.asarray(rows, dtype=np.float32))

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.close()


def _embedding_error(exc: openai.APIError, model: str) -> EmbeddingError:
    """What to tell the user about a failed request."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return EmbeddingError(
            f"the embeddings API answered HTTP {exc.status_code} for model {model!r}; "
            "check the API key, the model name and your rate limits"
        )
    return EmbeddingError(
        f"the embeddings API could not be reached ({type(exc).__name__}); check base_url and "
        "the network, or use the offline LocalEmbedder"
    )


def _as_llm_error(exc: openai.APIError) -> LLMError:
    """`exc` as the `CircuitBreaker` tells outages apart: the LLM error an `OpenAIClient` would raise."""
    import openai

    from flowagents.llm.openai import _retry_after

    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return LLMAuthError(str(exc))
    if isinstance(exc, openai.RateLimitError):
        return LLMRateLimitError(str(exc), retry_after=_retry_after(exc))
    if isinstance(exc, openai.APIStatusError):
        return LLMUnavailableError(str(exc)) if exc.status_code >= 500 else LLMError(str(exc))
    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeoutError(str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return LLMUnavailableError(str(exc))
    if isinstance(exc, openai.APIResponseValidationError):
        return LLMResponseError(str(exc))  # the server answered: not an outage
    return LLMError(str(exc))
