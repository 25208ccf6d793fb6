"""In-process store and lock: the default for tests and single-process bots without persistence."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

from flowagents.results import TERMINAL_STATUSES
from flowagents.storage.base import (
    ConversationKey,
    ConversationRecord,
    ConversationStore,
    EventIsolation,
    checked_ttl,
)

_DELIVERIES_KEPT = 10_000  # delivery ids kept before the first pruning of expired ones


class MemoryStore(ConversationStore):
    """Keeps records in a dict. State is lost when the process stops."""

    def __init__(self, *, idle_ttl_seconds: float = 24 * 3600, finished_ttl_seconds: float = 3600) -> None:
        self.idle_ttl_seconds = checked_ttl("idle_ttl_seconds", idle_ttl_seconds)
        self.finished_ttl_seconds = checked_ttl("finished_ttl_seconds", finished_ttl_seconds)
        self.purge_interval_seconds = 60.0
        """How often a save also drops the conversations that expired (nobody came back to them)."""
        self._records: dict[ConversationKey, ConversationRecord] = {}
        self._last_purge = time.time()
        self._deliveries: dict[str, tuple[bool, float]] = {}  # id -> (done, expires_at)
        self._prune_deliveries_above = _DELIVERIES_KEPT

    def _expired(self, record: ConversationRecord, now: float) -> bool:
        ttl = self.finished_ttl_seconds if record.status.is_terminal else self.idle_ttl_seconds
        return now - record.updated_at > ttl

    async def load(self, key: ConversationKey) -> ConversationRecord | None:
        record = self._records.get(key)
        if record is None:
            return None
        finished = record.status in TERMINAL_STATUSES  # `_expired` written out: every turn loads
        ttl = self.finished_ttl_seconds if finished else self.idle_ttl_seconds
        if time.time() - record.updated_at > ttl:
            del self._records[key]
            return None
        if finished:  # a finished conversation is only read (a new one replaces it)
            return record
        # A copy of a live one, as the other stores give: a turn that changes it and never saves
        # (cancelled, abandoned) leaves the stored conversation as it was.
        return ConversationRecord(
            record.agent,
            record.status,
            record.created_at,
            record.updated_at,
            dict(record.values),
            record.asking,
            record.attempts,
            record.version,
        )

    async def save(self, key: ConversationKey, record: ConversationRecord) -> None:
        self._records[key] = record
        now = time.time()
        if now - self._last_purge >= self.purge_interval_seconds:
            self._last_purge = now
            for expired in [k for k, r in self._records.items() if self._expired(r, now)]:
                del self._records[expired]

    async def delete(self, key: ConversationKey) -> None:
        self._records.pop(key, None)

    async def claim_delivery(self, delivery_id: str, lease_seconds: float) -> bool:
        now = time.monotonic()
        seen = self._deliveries.get(delivery_id)
        if seen is not None and seen[1] > now:
            return False
        if len(self._deliveries) > self._prune_deliveries_above:
            self._deliveries = {k: v for k, v in self._deliveries.items() if v[1] > now}
            # Amortised: with many ids still kept, the next pruning waits until their number doubles.
            self._prune_deliveries_above = max(_DELIVERIES_KEPT, 2 * len(self._deliveries))
        self._deliveries[delivery_id] = (False, now + lease_seconds)
        return True

    async def finish_delivery(self, delivery_id: str, keep_seconds: float) -> None:
        self._deliveries[delivery_id] = (True, time.monotonic() + keep_seconds)

    def snapshot(self, tenant_id: str | None = None) -> list[tuple[ConversationKey, ConversationRecord]]:
        now = time.time()
        return [
            (key, record)
            for key, record in self._records.items()
            if (tenant_id is None or key.tenant_id == tenant_id) and not self._expired(record, now)
        ]

    def purge_finished(self, max_age_seconds: float) -> int:
        now = time.time()
        doomed = [
            key
            for key, record in self._records.items()
            if (record.status.is_terminal and now - record.updated_at > max_age_seconds)
            or self._expired(record, now)
        ]
        for key in doomed:
            del self._records[key]
        return len(doomed)


class _Held:
    """Holds one conversation for one turn; waiters are handed the conversation in arrival order."""

    __slots__ = ("_busy", "_key")

    def __init__(
        self, busy: dict[ConversationKey, list[asyncio.Future[None]] | None], key: ConversationKey
    ) -> None:
        self._busy = busy
        self._key = key

    async def __aenter__(self) -> None:
        busy = self._busy
        if self._key not in busy:  # free: take it without allocating a queue
            busy[self._key] = None
            return
        waiters = busy[self._key]
        if waiters is None:
            waiters = busy[self._key] = []
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            elif ticket in waiters:  # (a release may already have passed over the cancelled ticket)
                waiters.remove(ticket)
            raise

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._busy[self._key]
        while waiters:
            ticket = waiters.pop(0)
            if not ticket.done():
                ticket.set_result(None)
                return
        del self._busy[self._key]


class MemoryIsolation(EventIsolation):
    """Strict FIFO per conversation inside one process; nothing is allocated for a free conversation."""

    def __init__(self) -> None:
        # A held conversation maps to its waiting turns in arrival order (None while nobody waits).
        self._busy: dict[ConversationKey, list[asyncio.Future[None]] | None] = {}

    def lock(self, key: ConversationKey) -> _Held:
        return _Held(self._busy, key)

    def hold_if_free(self, key: ConversationKey) -> Callable[[], None] | None:
        busy = self._busy
        if key in busy:
            return None
        busy[key] = None
        return _Held(busy, key)._release
