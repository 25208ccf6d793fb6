"""`OpenAIEmbedder`: embeddings from the OpenAI API (or any server speaking `POST /v1/embeddings`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flowagents.embeddings.base import EmbeddingError, Vectors, l2_normalise


class OpenAIEmbedder:
    """Embeds with `AsyncOpenAI().embeddings.create`, in batches of `batch_size` texts.

    Pass a configured `openai.AsyncOpenAI` as `client`, or `api_key`/`base_url` to make one (the
    key falls back to `OPENAI_API_KEY`). `dimensions` shortens text-embedding-3 vectors. Vectors are
    re-normalised to unit length, so any compatible server works.
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
    ) -> None:
        if client is None:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.batch_size = max(1, min(batch_size, 2048))  # the API takes at most 2048 inputs per call
        self.model_id = f"openai/{model}" + (f"/{dimensions}" if dimensions else "")

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` (one request per `batch_size` texts); raises `EmbeddingError` on failure."""
        import openai

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            extra: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
            try:
                response = await self.client.embeddings.create(
                    model=self.model, input=batch, encoding_format="float", **extra
                )
            except openai.APIStatusError as exc:
                raise EmbeddingError(
                    f"the embeddings API answered HTTP {exc.status_code} for model {self.model!r}; "
                    "check the API key, the model name and your rate limits"
                ) from exc
            except openai.APIError as exc:
                raise EmbeddingError(
                    f"the embeddings API could not be reached ({type(exc).__name__}); check base_url and "
                    "the network, or use the offline LocalEmbedder"
                ) from exc
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
