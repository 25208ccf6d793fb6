"""Disk cache of embeddings keyed by model id + text hash, and an embedder that uses it.

One file per model (`<dir>/<model-slug>.npz`, keys = sha256 of the text), loaded whole on first use
and rewritten atomically when new vectors are added. Meant for agents' example utterances (a few
thousand texts); chat messages are embedded fresh and not stored unless `store_queries=True`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowagents.embeddings.base import Embedder, Vectors


def text_key(model_id: str, text: str) -> bytes:
    """32-byte cache key of `text` under `model_id`."""
    return hashlib.sha256(f"{model_id}\x00{text}".encode()).digest()


class EmbeddingCache:
    """Vectors of one or more models stored under `directory` (created on first write)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._tables: dict[str, dict[bytes, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _file(self, model_id: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_") or "model"
        return self.directory / f"{slug}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}.npz"

    def _table(self, model_id: str) -> dict[bytes, np.ndarray]:
        table = self._tables.get(model_id)
        if table is None:
            table = {}
            path = self._file(model_id)
            if path.is_file():
                try:
                    with np.load(path, allow_pickle=False) as data:
                        keys, vectors = data["keys"], data["vectors"]
                    table = {k.tobytes(): v for k, v in zip(keys, vectors, strict=True)}
                except (OSError, ValueError, KeyError):
                    table = {}  # a corrupt cache is rebuilt, never trusted
            self._tables[model_id] = table
        return table

    def get(self, model_id: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Cached vector of each text, or None where it is not cached."""
        with self._lock:
            table = self._table(model_id)
            return [table.get(text_key(model_id, t)) for t in texts]

    def put(self, model_id: str, texts: Sequence[str], vectors: Vectors) -> None:
        """Store `vectors` (rows matching `texts`) and rewrite the model's file atomically."""
        with self._lock:
            table = self._table(model_id)
            for text, vec in zip(texts, vectors, strict=True):
                table[text_key(model_id, text)] = np.asarray(vec, dtype=np.float32)
            self._write(model_id, table)

    def _write(self, model_id: str, table: dict[bytes, np.ndarray]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._file(model_id)
        # uint8 rows, not numpy "S32": fixed-width bytes would drop trailing NUL bytes of a digest.
        keys = np.frombuffer(b"".join(table.keys()), dtype=np.uint8).reshape(len(table), 32)
        vectors = np.stack(list(table.values())).astype(np.float32) if table else np.zeros((0, 0), np.float32)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vectors)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class CachedEmbedder:
    """Wraps an `Embedder`; texts already in `cache` are not embedded again.

    Only the texts missing from the cache reach the wrapped embedder, in one call.
    """

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.model_id = inner.model_id

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`, reading and filling the cache."""
        texts = list(texts)
        found = self.cache.get(self.model_id, texts)
        missing = sorted({t for t, v in zip(texts, found, strict=True) if v is None})
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = await self.inner.embed(missing)
            self.cache.put(self.model_id, missing, vectors)
            fresh = dict(zip(missing, vectors, strict=True))
        return self._assemble(texts, found, fresh)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Blocking variant; the wrapped embedder must have `embed_sync`."""
        embed_sync = getattr(self.inner, "embed_sync", None)
        if embed_sync is None:
            raise TypeError(f"{type(self.inner).__name__} has no embed_sync; use `await embed(...)`")
        texts = list(texts)
        found = self.cache.get(self.model_id, texts)
        missing = sorted({t for t, v in zip(texts, found, strict=True) if v is None})
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = embed_sync(missing)
            self.cache.put(self.model_id, missing, vectors)
            fresh = dict(zip(missing, vectors, strict=True))
        return self._assemble(texts, found, fresh)

    @staticmethod
    def _assemble(texts: list[str], found: list[np.ndarray | None], fresh: dict[str, np.ndarray]) -> Vectors:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        rows = [v if v is not None else fresh[t] for t, v in zip(texts, found, strict=True)]
        return np.stack(rows).astype(np.float32, copy=False)
