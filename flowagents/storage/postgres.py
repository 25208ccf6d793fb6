"""PostgreSQL store and lock (asyncpg): shared state for several workers when Redis is not wanted.

Records live in one table with an `expires_at` column (expired rows are invisible and purged lazily).
`PostgresIsolation` holds a session-level advisory lock on a pooled connection for the turn; PostgreSQL
releases it by itself when a crashed worker's connection drops, and queues waiters in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from flowagents.errors import ConfigurationError, StoreError
from flowagents.storage._codec import decode, encode, expires_at, redact, store_error
from flowagents.storage.base import (
    ConversationKey,
    ConversationRecord,
    ConversationStore,
    EventIsolation,
    checked_ttl,
)
from flowagents.storage.memory import MemoryIsolation

_HINT = (
    "Check that PostgreSQL is running and FLOWAGENTS_STORE points at it; the bot retries on the next message."
)
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)

T = TypeVar("T")
_NOW = "extract(epoch from now())::float8"
"""The server's Unix time (of the statement's transaction), in SQL."""


def _schema(prefix: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {prefix}conversations (
    tenant_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    terminal BOOLEAN NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, user_id)
);
CREATE INDEX IF NOT EXISTS {prefix}conversations_expiry ON {prefix}conversations (expires_at);
CREATE TABLE IF NOT EXISTS {prefix}deliveries (
    id TEXT PRIMARY KEY,
    done BOOLEAN NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""


class PostgresStore(ConversationStore):
    """Conversation records and delivery ids in PostgreSQL tables named `<table_prefix>conversations` etc."""

    shared = True

    def __init__(
        self,
        dsn: str,
        *,
        idle_ttl_seconds: float = 24 * 3600,
        finished_ttl_seconds: float = 3600,
        table_prefix: str = "flowagents_",
        pool_size: int = 10,
        purge_interval_seconds: float = 60.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", table_prefix):
            raise ConfigurationError("table_prefix must be lower-case letters, digits and underscores.")
        self.dsn = dsn
        self.idle_ttl_seconds = checked_ttl("idle_ttl_seconds", idle_ttl_seconds)
        self.finished_ttl_seconds = checked_ttl("finished_ttl_seconds", finished_ttl_seconds)
        self.prefix = table_prefix
        self.pool_size = pool_size
        self.purge_interval_seconds = purge_interval_seconds
        self.timeout_seconds = timeout_seconds
        self._pool: asyncpg.Pool | None = None
        self._where = redact(dsn)
        self._next_purge = 0.0
        t = table_prefix
        self._sql = {
            "load": f"SELECT data FROM {t}conversations WHERE tenant_id = $1 AND conversation_id = $2 "
            "AND user_id = $3 AND expires_at > $4",
            "save": f"INSERT INTO {t}conversations AS c VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (tenant_id, conversation_id, user_id) DO UPDATE SET terminal = $4, updated_at = $5, "
            "expires_at = $6, data = $7",
            "delete": f"DELETE FROM {t}conversations WHERE tenant_id = $1 AND conversation_id = $2 "
            "AND user_id = $3",
            # Delivery leases run on the server's clock, like Redis's PX: workers on hosts whose clocks
            # disagree must not take over (or purge) each other's claims early.
            "claim": f"INSERT INTO {t}deliveries AS d VALUES ($1, false, {_NOW} + $2::float8) "
            f"ON CONFLICT (id) DO UPDATE SET done = false, expires_at = {_NOW} + $2::float8 "
            f"WHERE d.expires_at <= {_NOW} RETURNING 1",
            "finish": f"INSERT INTO {t}deliveries VALUES ($1, true, {_NOW} + $2::float8) "
            f"ON CONFLICT (id) DO UPDATE SET done = true, expires_at = {_NOW} + $2::float8",
            "purge": f"DELETE FROM {t}conversations WHERE expires_at <= $1",
            "purge_deliveries": f"DELETE FROM {t}deliveries WHERE expires_at <= {_NOW}",
        }

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return store_error(f"PostgreSQL store {self._where}: {what} failed", exc, _HINT)

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=self.timeout_seconds,
                command_timeout=self.timeout_seconds,
            )
            async with self._pool.acquire() as conn:
                await conn.execute(_schema(self.prefix))
        except _ERRORS as exc:
            raise self._error("connecting", exc) from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _call(self, what: str, run: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StoreError(
                f"The PostgreSQL store {self._where} is not open; call `await store.open()` first."
            )
        try:
            return await run(self._pool)
        except _ERRORS as exc:
            raise self._error(what, exc) from exc

    async def load(self, key: ConversationKey) -> ConversationRecord | None:
        raw = await self._call("load", lambda p: p.fetchval(self._sql["load"], *key, time.time()))
        return None if raw is None else decode(raw, key.tenant_id)

    async def save(self, key: ConversationKey, record: ConversationRecord) -> None:
        expiry = expires_at(record, self.idle_ttl_seconds, self.finished_ttl_seconds)
        args = (*key, record.status.is_terminal, record.updated_at, expiry, encode(record))
        await self._call("save", lambda p: p.execute(self._sql["save"], *args))
        now = time.time()
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval_seconds
            try:  # the record is saved: a failed clean-up must not fail the turn
                await self._call("purge", lambda p: p.execute(self._sql["purge"], now))
                await self._call("purge", lambda p: p.execute(self._sql["purge_deliveries"]))
            except StoreError:  # already logged; the next interval tries again
                pass

    async def delete(self, key: ConversationKey) -> None:
        await self._call("delete", lambda p: p.execute(self._sql["delete"], *key))

    async def claim_delivery(self, delivery_id: str, lease_seconds: float) -> bool:
        got = await self._call(
            "claim delivery", lambda p: p.fetchval(self._sql["claim"], delivery_id, lease_seconds)
        )
        return got is not None

    async def finish_delivery(self, delivery_id: str, keep_seconds: float) -> None:
        await self._call(
            "finish delivery", lambda p: p.execute(self._sql["finish"], delivery_id, keep_seconds)
        )

    # ------------------------------------------------------------------------------ admin (sync)

    def _blocking(self, what: str, job: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `job` on a fresh connection in a helper thread (asyncpg has no blocking API)."""

        async def run() -> T:
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout_seconds)
            try:
                return await job(conn)
            finally:
                await conn.close()

        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = asyncio.run(run())
            except BaseException as exc:
                box["error"] = exc

        import threading

        thread = threading.Thread(target=target, name="flowagents-pg-admin")
        thread.start()
        thread.join()
        if "error" in box:
            exc = box["error"]
            if isinstance(exc, _ERRORS):
                raise self._error(what, exc) from exc
            raise exc
        return box["value"]  # type: ignore[no-any-return]

    def snapshot(self, tenant_id: str | None = None) -> list[tuple[ConversationKey, ConversationRecord]]:
        sql = (
            f"SELECT tenant_id, conversation_id, user_id, data FROM {self.prefix}conversations "
            "WHERE expires_at > $1"
        )
        args: list[Any] = [time.time()]
        if tenant_id is not None:
            sql += " AND tenant_id = $2"
            args.append(tenant_id)
        rows = self._blocking("snapshot", lambda c: c.fetch(sql, *args))
        out: list[tuple[ConversationKey, ConversationRecord]] = []
        for tenant, conversation, user, data in rows:
            record = decode(data, tenant)
            if record is not None:
                out.append((ConversationKey(tenant, conversation, user), record))
        return out

    def purge_finished(self, max_age_seconds: float) -> int:
        now = time.time()
        sql = (
            f"WITH gone AS (DELETE FROM {self.prefix}conversations WHERE (terminal AND updated_at < $1) "
            "OR expires_at <= $2 RETURNING 1) SELECT count(*) FROM gone"
        )
        count = self._blocking("purge", lambda c: c.fetchval(sql, now - max_age_seconds, now))
        return int(count)


def _lock_id(key: ConversationKey) -> int:
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresIsolation(EventIsolation):
    """Turns of one conversation one at a time across processes, via `pg_advisory_lock` per conversation.

    Each running turn holds one pooled connection (`pool_size` bounds concurrent turns per process).
    A message waits at most `wait_seconds` for the conversation; giving it back may take `timeout_seconds`,
    after which the connection is dropped (PostgreSQL then frees the lock when it notices).
    """

    def __init__(
        self, dsn: str, *, pool_size: int = 10, wait_seconds: float = 60.0, timeout_seconds: float = 5.0
    ) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.wait_seconds = wait_seconds
        self.timeout_seconds = timeout_seconds
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._local = MemoryIsolation()
        self._where = redact(dsn)

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=self.pool_size)
            return self._pool

    def lock(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        return self._hold(key)

    @asynccontextmanager
    async def _hold(self, key: ConversationKey) -> AsyncIterator[None]:
        lock_id = _lock_id(key)
        async with self._local.lock(key):
            try:
                pool = await self._get_pool()
                conn = await pool.acquire(timeout=self.wait_seconds)
            except _ERRORS as exc:
                raise store_error(f"PostgreSQL lock {self._where}: connecting", exc, _HINT) from exc
            clean = False  # a connection that may still hold the lock is dropped, never pooled
            try:
                try:
                    await conn.execute("SELECT pg_advisory_lock($1)", lock_id, timeout=self.wait_seconds)
                except _ERRORS as exc:
                    raise store_error(f"PostgreSQL lock {self._where}: acquire", exc, _HINT) from exc
                try:
                    yield
                finally:
                    with contextlib.suppress(*_ERRORS):
                        # Bounded: a silent network must not hold the turn (and its conversation) for minutes.
                        unlock = "SELECT pg_advisory_unlock($1)"
                        clean = bool(await conn.fetchval(unlock, lock_id, timeout=self.timeout_seconds))
            finally:
                if not clean:
                    conn.terminate()
                with contextlib.suppress(*_ERRORS):
                    await pool.release(conn, timeout=self.timeout_seconds)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
