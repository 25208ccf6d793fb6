"""SQLite store: the bot's embedded default. One file, WAL mode, async access through aiosqlite.

Durability: every write is its own committed transaction (autocommit, WAL, `synchronous=NORMAL`), so a
process killed with SIGKILL loses nothing it has saved. One bot process owns the file: `open()` takes an
exclusive `flock` on `<file>.lock` (released by the kernel when the process dies, so a restart after a
crash just works) and a second process fails fast with a `ConfigurationError`. Turn isolation is the
in-process `MemoryIsolation`. To run several worker processes, use the Redis (or PostgreSQL) store.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import IO, Any

import aiosqlite

from flowagents.errors import ConfigurationError, StoreError
from flowagents.storage._codec import decode, encode, expires_at, log, store_error
from flowagents.storage.base import ConversationKey, ConversationRecord, ConversationStore, checked_ttl

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    tenant_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations (expires_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (expires_at);
"""

_HINT = "Check that the data directory is writable and the disk is not full."


class SQLiteStore(ConversationStore):
    """Conversation records in one SQLite file (see the module docstring for the process model)."""

    def __init__(
        self,
        path: str | Path,
        *,
        idle_ttl_seconds: float = 24 * 3600,
        finished_ttl_seconds: float = 3600,
        busy_timeout_seconds: float = 5.0,
        purge_interval_seconds: float = 60.0,
        exclusive: bool = True,
    ) -> None:
        if str(path) in ("", ":memory:"):
            raise ConfigurationError("SQLiteStore needs a file path; use MemoryStore for in-memory state.")
        self.path = Path(path)
        self.idle_ttl_seconds = checked_ttl("idle_ttl_seconds", idle_ttl_seconds)
        self.finished_ttl_seconds = checked_ttl("finished_ttl_seconds", finished_ttl_seconds)
        self.busy_timeout_seconds = busy_timeout_seconds
        self.purge_interval_seconds = purge_interval_seconds
        self.exclusive = exclusive
        self._db: aiosqlite.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._next_purge = 0.0

    # ------------------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(f"Cannot create the data directory {self.path.parent}", exc, _HINT) from exc
        if self.exclusive:
            self._take_file_lock()
        try:
            db = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout_seconds)
            try:
                await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute("PRAGMA synchronous = NORMAL")
                await db.executescript(_SCHEMA)
            except BaseException:
                await db.close()
                raise
        except sqlite3.Error as exc:
            self._release_file_lock()
            raise store_error(f"Cannot open the SQLite store {self.path}", exc, _HINT) from exc
        self._db = db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                await db.close()
            except sqlite3.Error as exc:
                log.warning("closing the SQLite store failed: %s", exc)
        self._release_file_lock()

    def _take_file_lock(self) -> None:
        if fcntl is None:  # pragma: no cover - Windows: no guard, documented as single-process
            return
        handle = open(f"{self.path}.lock", "ab")  # held until close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigurationError(
                f"Another process already uses the SQLite store {self.path}. SQLite is for one bot process; "
                "run several workers with FLOWAGENTS_STORE=redis://host:port/db instead."
            ) from None
        self._lock_file = handle

    def _release_file_lock(self) -> None:
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            handle.close()  # closing the descriptor drops the flock

    # ------------------------------------------------------------------------------ hot path

    async def _run(self, sql: str, params: tuple[Any, ...], what: str) -> tuple[int, Any]:
        """Execute one statement (its own transaction); return (rowcount, first row)."""
        db = self._db
        if db is None:
            raise StoreError(f"The SQLite store {self.path} is not open; call `await store.open()` first.")
        try:
            async with db.execute(sql, params) as cursor:
                return cursor.rowcount, await cursor.fetchone()
        except sqlite3.Error as exc:
            raise store_error(f"SQLite store {self.path}: {what} failed", exc, _HINT) from exc

    async def load(self, key: ConversationKey) -> ConversationRecord | None:
        _, row = await self._run(
            "SELECT data FROM conversations WHERE tenant_id = ? AND conversation_id = ? AND user_id = ? "
            "AND expires_at > ?",
            (*key, time.time()),
            "load",
        )
        return None if row is None else decode(row[0], key.tenant_id)

    async def save(self, key: ConversationKey, record: ConversationRecord) -> None:
        expiry = expires_at(record, self.idle_ttl_seconds, self.finished_ttl_seconds)
        await self._run(
            "INSERT OR REPLACE INTO conversations "
            "(tenant_id, conversation_id, user_id, terminal, updated_at, expires_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, int(record.status.is_terminal), record.updated_at, expiry, encode(record)),
            "save",
        )
        await self._maybe_purge()

    async def delete(self, key: ConversationKey) -> None:
        await self._run(
            "DELETE FROM conversations WHERE tenant_id = ? AND conversation_id = ? AND user_id = ?",
            tuple(key),
            "delete",
        )

    async def claim_delivery(self, delivery_id: str, lease_seconds: float) -> bool:
        now = time.time()
        count, _ = await self._run(
            "INSERT INTO deliveries (id, done, expires_at) VALUES (?, 0, ?) "
            "ON CONFLICT (id) DO UPDATE SET done = 0, expires_at = excluded.expires_at "
            "WHERE deliveries.expires_at <= ?",
            (delivery_id, now + lease_seconds, now),
            "claim delivery",
        )
        return count == 1

    async def finish_delivery(self, delivery_id: str, keep_seconds: float) -> None:
        await self._run(
            "INSERT OR REPLACE INTO deliveries (id, done, expires_at) VALUES (?, 1, ?)",
            (delivery_id, time.time() + keep_seconds),
            "finish delivery",
        )

    async def _maybe_purge(self) -> None:
        """Lazily drop expired rows, at most once per `purge_interval_seconds`."""
        now = time.time()
        if now < self._next_purge:
            return
        self._next_purge = now + self.purge_interval_seconds
        try:  # called after a save: a failed clean-up must not fail the turn
            await self._run("DELETE FROM conversations WHERE expires_at <= ?", (now,), "purge")
            await self._run("DELETE FROM deliveries WHERE expires_at <= ?", (now,), "purge")
        except StoreError:  # already logged; the next interval tries again
            pass

    # ------------------------------------------------------------------------------ admin (sync)

    def _sync(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_seconds, isolation_level=None)
        except sqlite3.Error as exc:
            raise store_error(f"Cannot open the SQLite store {self.path}", exc, _HINT) from exc
        return conn

    def snapshot(self, tenant_id: str | None = None) -> list[tuple[ConversationKey, ConversationRecord]]:
        sql = "SELECT tenant_id, conversation_id, user_id, data FROM conversations WHERE expires_at > ?"
        params: tuple[Any, ...] = (time.time(),)
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            params += (tenant_id,)
        conn = self._sync()
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise store_error(f"SQLite store {self.path}: snapshot failed", exc, _HINT) from exc
        finally:
            conn.close()
        out: list[tuple[ConversationKey, ConversationRecord]] = []
        for tenant, conversation, user, data in rows:
            record = decode(data, tenant)
            if record is not None:
                out.append((ConversationKey(tenant, conversation, user), record))
        return out

    def purge_finished(self, max_age_seconds: float) -> int:
        now = time.time()
        conn = self._sync()
        try:
            cursor = conn.execute(
                "DELETE FROM conversations WHERE (terminal = 1 AND updated_at < ?) OR expires_at <= ?",
                (now - max_age_seconds, now),
            )
            conn.execute("DELETE FROM deliveries WHERE expires_at <= ?", (now,))
            return cursor.rowcount
        except sqlite3.Error as exc:
            raise store_error(f"SQLite store {self.path}: purge failed", exc, _HINT) from exc
        finally:
            conn.close()
