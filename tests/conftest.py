"""Shared fixtures: small agents and a fresh orchestrator per test."""

from __future__ import annotations

import os
import socket

import pytest


def service_available(host: str, port: int) -> bool:
    """True when something listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip locally, fail in CI, when a real service the test needs is missing."""
    if service_available(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI must provide it)")
    pytest.skip(message)
