"""Sentence embeddings for semantic routing.

`Embedder` is the protocol (`async embed(texts) -> (n, d) float32, unit rows`); `LocalEmbedder` runs
all-MiniLM-L6-v2 offline (extra `semantic`); `OpenAIEmbedder` calls the embeddings API;
`CachedEmbedder` + `EmbeddingCache` keep vectors on disk keyed by model id and text hash.
The package needs numpy (the `semantic` extra); `LocalEmbedder` is imported lazily, so the model runtime
(onnxruntime) loads only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowagents.embeddings.base import (
    Embedder,
    EmbeddingError,
    ModelIntegrityError,
    SyncEmbedder,
    Vectors,
    l2_normalise,
)
from flowagents.embeddings.cache import CachedEmbedder, EmbeddingCache
from flowagents.embeddings.openai import OpenAIEmbedder

if TYPE_CHECKING:
    from flowagents.embeddings.local import LocalEmbedder

__all__ = [
    "CachedEmbedder",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingError",
    "LocalEmbedder",
    "ModelIntegrityError",
    "OpenAIEmbedder",
    "SyncEmbedder",
    "Vectors",
    "l2_normalise",
]


def __getattr__(name: str) -> Any:
    if name == "LocalEmbedder":
        from flowagents.embeddings.local import LocalEmbedder

        return LocalEmbedder
    raise AttributeError(name)
