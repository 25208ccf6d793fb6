"""Helpers shared by the persistent stores: record (de)serialisation, expiry and error wrapping."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from pydantic import ValidationError

from flowagents.errors import StoreError
from flowagents.storage.base import ConversationRecord

log = logging.getLogger("flowagents.storage")


def encode(record: ConversationRecord) -> str:
    """The record as JSON (values in pydantic's JSON mode: dates as ISO strings and so on)."""
    return record.model_dump_json()


def decode(raw: str | bytes, tenant_id: str) -> ConversationRecord | None:
    """Parse a stored record; a corrupt one is logged and treated as absent (None).

    Returning None (not raising) keeps one bad row from blocking its conversation forever: the next
    message starts afresh and the next save overwrites the row. Other conversations are never touched.
    """
    try:
        return ConversationRecord.model_validate_json(raw)
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        log.error(
            "ignoring a corrupt conversation record (tenant %s): %s; the conversation starts afresh",
            tenant_id,
            type(exc).__name__,
        )
        return None


def ttl_of(record: ConversationRecord, idle_ttl: float, finished_ttl: float) -> float:
    """How long the record lives after its `updated_at`."""
    return finished_ttl if record.status.is_terminal else idle_ttl


def expires_at(record: ConversationRecord, idle_ttl: float, finished_ttl: float) -> float:
    """Unix time at which the record expires."""
    return record.updated_at + ttl_of(record, idle_ttl, finished_ttl)


def seconds_left(record: ConversationRecord, idle_ttl: float, finished_ttl: float) -> float:
    """Seconds until the record expires (<= 0: already expired)."""
    return expires_at(record, idle_ttl, finished_ttl) - time.time()


def store_error(what: str, exc: BaseException, hint: str) -> StoreError:
    """A `StoreError` that says what failed and what to do; also logged once, without secrets."""
    message = f"{what}: {type(exc).__name__}: {exc}. {hint}"
    log.warning("%s", message)
    return StoreError(message)


def redact(url: str) -> str:
    """The URL without credentials, for messages and logs (only the scheme of a malformed one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number, an unclosed IPv6 bracket
        return f"{url.partition('://')[0]}://<malformed URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"
