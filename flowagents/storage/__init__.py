"""Conversation state storage and per-conversation event isolation."""

from flowagents.storage.base import (
    SCHEMA_VERSION,
    ConversationKey,
    ConversationRecord,
    ConversationStore,
    EventIsolation,
    KeyBuilder,
)
from flowagents.storage.memory import MemoryIsolation, MemoryStore

__all__ = [
    "SCHEMA_VERSION",
    "ConversationKey",
    "ConversationRecord",
    "ConversationStore",
    "EventIsolation",
    "KeyBuilder",
    "MemoryIsolation",
    "MemoryStore",
]
