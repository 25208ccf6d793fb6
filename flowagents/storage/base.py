"""The two small interfaces behind conversation state: a store and an event isolation (lock).

A store keeps one `ConversationRecord` per conversation key and remembers which platform deliveries it
has already processed. An isolation makes the turns of one conversation run one at a time. A
`KeyBuilder` alone decides how keys are shaped for stores that need string keys.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import TypeAdapter

from flowagents.errors import ConfigurationError
from flowagents.results import AgentStatus

SCHEMA_VERSION = 1
"""Version of `ConversationRecord`'s serialised form; bump it when the shape changes."""


class ConversationKey(NamedTuple):
    """Identifies one conversation: (tenant, conversation, user)."""

    tenant_id: str
    conversation_id: str
    user_id: str


@dataclass(slots=True)
class ConversationRecord:
    """Everything the orchestrator keeps between turns of one conversation.

    A plain slotted dataclass on the hot path (about 300 bytes per open conversation); it is
    validated and serialised through pydantic (`model_dump_json` / `model_validate_json`) at the
    storage boundary, with `version` as the schema version.
    """

    agent: str
    """Name of the agent that owns the conversation."""
    status: AgentStatus
    """The agent's status."""
    created_at: float
    """Unix time the agent started."""
    updated_at: float
    """Unix time of the last change."""
    values: dict[str, Any] = field(default_factory=dict)
    """Filled field values, already validated (JSON-compatible after `model_dump(mode="json")`)."""
    asking: str | None = None
    """The field whose answer the agent waits for."""
    attempts: int = 0
    """Invalid answers given so far to the field being asked."""
    version: int = SCHEMA_VERSION
    """Schema version of this record."""

    def model_dump_json(self) -> str:
        """The record as JSON (values in pydantic's JSON mode: dates as ISO strings)."""
        return _record_adapter.dump_json(self).decode()

    def model_dump(self, *, mode: Literal["json", "python"] = "python") -> dict[str, Any]:
        """The record as a dict (`mode="json"` for JSON-compatible values)."""
        return _record_adapter.dump_python(self, mode=mode)  # type: ignore[no-any-return]

    @classmethod
    def model_validate_json(cls, data: str | bytes) -> ConversationRecord:
        """Parse and validate a stored record; raises pydantic's ValidationError when it does not fit."""
        return _record_adapter.validate_json(data)

    @classmethod
    def model_validate(cls, data: Any) -> ConversationRecord:
        """Validate a dict (or record) into a record."""
        return _record_adapter.validate_python(data)


_record_adapter: TypeAdapter[ConversationRecord] = TypeAdapter(ConversationRecord)


class KeyBuilder:
    """Shapes string keys for stores that need them (Redis, SQL). Parts are escaped so no two keys collide."""

    def __init__(self, prefix: str = "flowagents", separator: str = ":") -> None:
        self.prefix = prefix
        self.separator = separator

    def _escape(self, part: str) -> str:
        return part.replace("%", "%25").replace(self.separator, "%3A")

    def conversation(self, key: ConversationKey) -> str:
        """The key of a conversation's record."""
        parts = (self.prefix, "conv", *(self._escape(p) for p in key))
        return self.separator.join(parts)

    def lock(self, key: ConversationKey) -> str:
        """The key of a conversation's lock."""
        return self.conversation(key) + self.separator + "lock"

    def delivery(self, delivery_id: str) -> str:
        """The key remembering a platform delivery id."""
        return self.separator.join((self.prefix, "delivery", self._escape(delivery_id)))

    def parse_conversation(self, raw: str) -> ConversationKey:
        """Inverse of `conversation`."""
        parts = raw.split(self.separator)
        tenant, conversation, user = (
            p.replace("%3A", self.separator).replace("%25", "%") for p in parts[-3:]
        )
        return ConversationKey(tenant, conversation, user)


MAX_TTL_SECONDS = 100 * 365 * 24 * 3600.0
"""The longest expiry a store accepts (100 years; Redis keeps expiries as 64-bit milliseconds)."""


def checked_ttl(name: str, seconds: float) -> float:
    """``seconds`` when it is a finite expiry up to `MAX_TTL_SECONDS`; else `ConfigurationError`."""
    if not math.isfinite(seconds) or seconds > MAX_TTL_SECONDS:
        raise ConfigurationError(f"{name} must be a finite number of seconds up to {MAX_TTL_SECONDS:.0f}.")
    return seconds


class ConversationStore(ABC):
    """Keeps conversation records and processed delivery ids.

    Async methods are on the hot path. `snapshot` and `purge_finished` are synchronous admin calls that
    back `Orchestrator.get_active_agents` / `cleanup_completed_agents`; they may block briefly.
    """

    idle_ttl_seconds: float
    """A conversation waiting for input longer than this expires on its own."""
    finished_ttl_seconds: float
    """A finished agent's record is kept this long for the agent pool, then expires."""
    shared: ClassVar[bool] = False
    """True for a store several processes use at once (Redis, PostgreSQL): it needs a matching
    cross-process `EventIsolation`."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; called by `Orchestrator.initialize`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def load(self, key: ConversationKey) -> ConversationRecord | None:
        """The conversation's record, or None when there is none (or it expired)."""

    @abstractmethod
    async def save(self, key: ConversationKey, record: ConversationRecord) -> None:
        """Store the record (replacing any previous one)."""

    @abstractmethod
    async def delete(self, key: ConversationKey) -> None:
        """Forget the conversation."""

    @abstractmethod
    async def claim_delivery(self, delivery_id: str, lease_seconds: float) -> bool:
        """Mark a delivery as in progress. False when it is already done or in progress elsewhere.

        A claim whose worker died expires after `lease_seconds`, so a redelivery is processed then.
        """

    @abstractmethod
    async def finish_delivery(self, delivery_id: str, keep_seconds: float) -> None:
        """Mark a claimed delivery as done and remember it for `keep_seconds`.

        `keep_seconds=0` forgets the delivery at once: the orchestrator releases the claim of a turn that
        did not happen this way, so the platform's retry is processed.
        """

    @abstractmethod
    def snapshot(self, tenant_id: str | None = None) -> list[tuple[ConversationKey, ConversationRecord]]:
        """All live records (of one tenant, or every tenant)."""

    @abstractmethod
    def purge_finished(self, max_age_seconds: float) -> int:
        """Delete records of finished agents last changed more than `max_age_seconds` ago; return how many."""


class EventIsolation(ABC):
    """Makes the turns of one conversation run one at a time, in arrival order."""

    @abstractmethod
    def lock(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        """Hold the conversation for one turn."""

    def hold_if_free(self, key: ConversationKey) -> Callable[[], None] | None:
        """Hold a conversation nobody holds at once, without waiting: the function that releases it, or
        None when that cannot be decided without waiting (then `lock` is used). The default: always None."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
