"""Redis store and lock: conversation state shared by many worker processes.

- A record is one string key (JSON) with a Redis expiry: the idle TTL while the agent waits for input,
  the finished TTL once it is done. Redis drops abandoned conversations on its own.
- A delivery id is a key set only if absent (a small script, like `SET NX PX`): "pending:<claim>" for the
  claim lease, then "done" for the keep time. A worker that dies mid-turn leaves "pending", which
  expires, so the platform's retry is processed.
- `RedisIsolation` serialises the turns of one conversation across processes with a FIFO queue of leased
  tickets (Lua scripts), renewed by a background task while a message waits or runs. A crashed worker's
  ticket simply expires. (redis-py's `Lock` is a lease too, but not fair: the worker that just released
  it usually wins again, so messages arriving at different workers could run out of order.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from flowagents.errors import ConfigurationError, StoreError
from flowagents.storage._codec import decode, encode, log, redact, seconds_left, store_error
from flowagents.storage.base import (
    ConversationKey,
    ConversationRecord,
    ConversationStore,
    EventIsolation,
    KeyBuilder,
    checked_ttl,
)
from flowagents.storage.memory import MemoryIsolation

_HINT = "Check that Redis is running and FLOWAGENTS_STORE points at it; the bot retries on the next message."

_CLAIM = """
local seen = redis.call('GET', KEYS[1])
if not seen then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if seen == ARGV[1] then return 1 end
return 0
"""

_DELETE_IF_SAME = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def url_problem(url: str) -> str | None:
    """Why redis-py cannot use ``url`` (bad port, host or query option), or None; nothing connects.

    The answer names the problem, never the password.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        return "malformed host or port: use redis://[:password@]host:port/db ([::1] for an IPv6 address)"
    try:
        pool = aioredis.ConnectionPool.from_url(url)
        pool.connection_class(**pool.connection_kwargs)  # checks the options; connects only on first use
    except TypeError as exc:  # "... got an unexpected keyword argument 'name'"
        name = str(exc).rpartition(" ")[2].strip("'")
        hint = " (TLS options need rediss://)" if "ssl" in name else ""
        return f"unknown Redis URL option ?{name}={hint}"
    except (ValueError, RedisError) as exc:
        problem = str(exc)
        if parts.password:
            problem = problem.replace(parts.password, "***")
        return f"invalid Redis URL option: {problem}"
    return None


def _client_options(socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": aioredis.retry.Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "health_check_interval": 30,
    }


def _async_client(url: str, options: dict[str, Any], max_connections: int) -> aioredis.Redis:
    """A client whose pool makes commands wait for a free connection instead of failing under bursts."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=options["socket_timeout"], **options
    )
    return aioredis.Redis.from_pool(pool)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore(ConversationStore):
    """Conversation records and delivery ids in Redis (see the module docstring)."""

    shared = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        idle_ttl_seconds: float = 24 * 3600,
        finished_ttl_seconds: float = 3600,
        keys: KeyBuilder | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_connections: int = 32,
    ) -> None:
        problem = url_problem(url)
        if problem is not None:
            raise ConfigurationError(f"Redis URL {redact(url)}: {problem}")
        self.url = url
        self.max_connections = max_connections
        self.idle_ttl_seconds = checked_ttl("idle_ttl_seconds", idle_ttl_seconds)
        self.finished_ttl_seconds = checked_ttl("finished_ttl_seconds", finished_ttl_seconds)
        self.keys = keys or KeyBuilder()
        self._options = _client_options(socket_timeout, connect_timeout)
        self._client: aioredis.Redis | None = None
        self._sync_client: redis.Redis | None = None
        self._claim: Any = None
        self._where = redact(url)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return store_error(f"Redis store {self._where}: {what} failed", exc, _HINT)

    @property
    def client(self) -> aioredis.Redis:
        """The asyncio client (created on first use)."""
        if self._client is None:
            self._client = _async_client(self.url, self._options, self.max_connections)
        return self._client

    async def open(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise self._error("connecting", exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        self._claim = None
        if client is not None:
            await client.aclose()
        sync, self._sync_client = self._sync_client, None
        if sync is not None:
            sync.close()

    # ------------------------------------------------------------------------------ hot path

    async def load(self, key: ConversationKey) -> ConversationRecord | None:
        try:
            raw = await self.client.get(self.keys.conversation(key))
        except RedisError as exc:
            raise self._error("load", exc) from exc
        return None if raw is None else decode(raw, key.tenant_id)

    async def save(self, key: ConversationKey, record: ConversationRecord) -> None:
        name = self.keys.conversation(key)
        left = seconds_left(record, self.idle_ttl_seconds, self.finished_ttl_seconds)
        try:
            if left <= 0:
                await self.client.delete(name)
            else:
                await self.client.set(name, encode(record), px=max(1, int(left * 1000)))
        except RedisError as exc:
            raise self._error("save", exc) from exc

    async def delete(self, key: ConversationKey) -> None:
        try:
            await self.client.delete(self.keys.conversation(key))
        except RedisError as exc:
            raise self._error("delete", exc) from exc

    async def claim_delivery(self, delivery_id: str, lease_seconds: float) -> bool:
        # SET NX with a unique claim value, so a client retry (after a timeout that hid a success) sees its
        # own claim instead of reporting a duplicate and dropping the message.
        if self._claim is None:
            self._claim = self.client.register_script(_CLAIM)
        mine = f"pending:{uuid.uuid4().hex}"
        try:
            won = await self._claim(
                keys=[self.keys.delivery(delivery_id)], args=[mine, max(1, int(lease_seconds * 1000))]
            )
        except RedisError as exc:
            raise self._error("claim delivery", exc) from exc
        return bool(won)

    async def finish_delivery(self, delivery_id: str, keep_seconds: float) -> None:
        keep_ms = int(keep_seconds * 1000)
        try:
            if keep_ms <= 0:  # released (the turn failed): its retry may claim it at once, as elsewhere
                await self.client.delete(self.keys.delivery(delivery_id))
            else:
                await self.client.set(self.keys.delivery(delivery_id), "done", px=keep_ms)
        except RedisError as exc:
            raise self._error("finish delivery", exc) from exc

    # ------------------------------------------------------------------------------ admin (sync)

    @property
    def sync_client(self) -> redis.Redis:
        """A blocking client for the synchronous admin calls."""
        if self._sync_client is None:
            options = dict(self._options)
            options["retry"] = redis.retry.Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
            self._sync_client = redis.Redis.from_url(self.url, **options)
        return self._sync_client

    def _scan(self, tenant_id: str | None) -> list[tuple[ConversationKey, bytes, bytes]]:
        """(key, redis key, raw value) of every stored conversation (of one tenant)."""
        kb = self.keys
        head = [kb.prefix, "conv"] + ([kb._escape(tenant_id)] if tenant_id is not None else [])
        pattern = _glob_escape(kb.separator.join(head)) + kb.separator + "*"
        parts = len(kb.conversation(ConversationKey("t", "c", "u")).split(kb.separator))
        client = self.sync_client
        names = [
            n
            for n in client.scan_iter(match=pattern, count=1000)
            if len(n.split(kb.separator.encode())) == parts  # skips lock keys
        ]
        out: list[tuple[ConversationKey, bytes, bytes]] = []
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            for name, raw in zip(chunk, client.mget(chunk), strict=True):
                if isinstance(raw, bytes):
                    out.append((kb.parse_conversation(name.decode()), name, raw))
        return out

    def snapshot(self, tenant_id: str | None = None) -> list[tuple[ConversationKey, ConversationRecord]]:
        try:
            rows = self._scan(tenant_id)
        except RedisError as exc:
            raise self._error("snapshot", exc) from exc
        out: list[tuple[ConversationKey, ConversationRecord]] = []
        for key, _, raw in rows:
            record = decode(raw, key.tenant_id)
            if record is not None:
                out.append((key, record))
        return out

    def purge_finished(self, max_age_seconds: float) -> int:
        """Delete finished records older than `max_age_seconds` (if unchanged); TTLs do the rest."""
        cutoff = time.time() - max_age_seconds
        removed = 0
        try:
            for key, name, raw in self._scan(None):
                record = decode(raw, key.tenant_id)
                if record is not None and record.status.is_terminal and record.updated_at < cutoff:
                    removed += int(self.sync_client.eval(_DELETE_IF_SAME, 1, name, raw))
        except RedisError as exc:
            raise self._error("purge", exc) from exc
        return removed


# A conversation's lock is a FIFO queue of tokens (a Redis list) plus one lease key per token. The token at
# the head owns the conversation. A token whose lease key expired belongs to a dead worker: whoever finds it
# at the head pops it. Scripts run atomically; lease keys are derived from the queue key (single Redis node).
# A released token leaves a "gone" marker when its enqueue may still be on the wire (cancelled or reply
# lost), so an enqueue that reaches Redis after the release queues nothing. A retried enqueue (reply lost to
# a timeout, redis-py resends) keeps the token's place instead of queueing it twice.
_ENQUEUE = """
local state = redis.call('GET', KEYS[2])
if state == 'gone' then return -1 end
if state then
  local pos = redis.call('LPOS', KEYS[1], ARGV[1])
  if pos then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return pos
  end
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('LLEN', KEYS[1]) - 1
"""
_TRY = """
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return -1 end
  if head == ARGV[1] then
    redis.call('SET', ARGV[2] .. head, '1', 'PX', ARGV[3])
    return 0
  end
  if redis.call('EXISTS', ARGV[2] .. head) == 1 then
    local pos = redis.call('LPOS', KEYS[1], ARGV[1])
    if not pos then return -1 end
    return pos
  end
  redis.call('LPOP', KEYS[1])
end
"""
_RENEW = """
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
_RELEASE = """
if ARGV[2] then
  redis.call('SET', KEYS[2], 'gone', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[2])
end
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  return 1
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
return 0
"""

QueuedHook = Callable[[ConversationKey, int], None]


class RedisIsolation(EventIsolation):
    """One turn of a conversation at a time across every process on the Redis database, in arrival order.

    Each message takes a ticket in the conversation's Redis queue when it reaches the lock and runs when
    its ticket is at the head, so messages that arrive mid-turn - at any worker - wait behind the running
    turn and run in the order they arrived. A ticket is a lease renewed every third of `lease_seconds`
    while its message waits or runs; a crashed worker's ticket expires and the next message goes ahead.
    A message waits at most `wait_seconds`, then the turn fails with `StoreError` (the user gets the
    polite "try again" reply). `on_queued(key, position)` is called once the ticket is taken
    (position 0: nothing ahead of it). Needs a single Redis node (not Redis Cluster).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        lease_seconds: float = 10.0,
        wait_seconds: float = 60.0,
        poll_seconds: float = 0.005,
        max_poll_seconds: float = 0.05,
        keys: KeyBuilder | None = None,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_connections: int = 32,
        on_queued: QueuedHook | None = None,
    ) -> None:
        self.url = url
        self.max_connections = max_connections
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.keys = keys or KeyBuilder()
        self.on_queued = on_queued
        self._options = _client_options(socket_timeout, connect_timeout)
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._enqueue_locks = MemoryIsolation()  # keeps one process's tickets in call order
        self._releasing: set[asyncio.Task[None]] = set()
        self._where = redact(url)

    @property
    def client(self) -> aioredis.Redis:
        """The asyncio client (created on first use)."""
        if self._client is None:
            self._client = _async_client(self.url, self._options, self.max_connections)
            self._scripts = {
                name: self._client.register_script(text)
                for name, text in (
                    ("enqueue", _ENQUEUE),
                    ("try", _TRY),
                    ("renew", _RENEW),
                    ("release", _RELEASE),
                )
            }
        return self._client

    def lock(self, key: ConversationKey) -> AbstractAsyncContextManager[None]:
        return self._hold(key)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return store_error(f"Redis lock {self._where}: {what} failed", exc, _HINT)

    @asynccontextmanager
    async def _hold(self, key: ConversationKey) -> AsyncIterator[None]:
        client = self.client
        queue = self.keys.lock(key)
        token = uuid.uuid4().hex
        alive = f"{queue}{self.keys.separator}{token}"
        lease_ms = max(1, int(self.lease_seconds * 1000))
        queue_ms = lease_ms * 3
        try:
            async with self._enqueue_locks.lock(key):
                position = await self._scripts["enqueue"](
                    keys=[queue, alive], args=[token, lease_ms, queue_ms], client=client
                )
        except BaseException as exc:
            # The script may have run with its reply lost (cancelled, timeout): release the ticket in the
            # background, marked gone in case the enqueue reaches Redis later, without delaying the error.
            self._release(client, queue, alive, token, queue_ms)
            if isinstance(exc, RedisError):
                raise self._error("queueing the message", exc) from exc
            raise
        renewer = asyncio.create_task(self._renew(queue, alive, lease_ms, queue_ms))
        try:
            if self.on_queued is not None:
                self.on_queued(key, int(position))
            if position != 0:  # 0: the queue was empty, the conversation is ours already
                await self._wait_turn(key, queue, alive, token, lease_ms, queue_ms)
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            # Shielded: a second cancellation must not leave the ticket at the head of the queue.
            await asyncio.shield(self._release(client, queue, alive, token))

    def _release(
        self, client: aioredis.Redis, queue: str, alive: str, token: str, gone_ms: int | None = None
    ) -> asyncio.Task[None]:
        """Drop a ticket in a task of its own (kept until done); `gone_ms`: refuse its enqueue that long."""
        task = asyncio.create_task(self._release_now(client, queue, alive, token, gone_ms))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        return task

    async def _release_now(
        self, client: aioredis.Redis, queue: str, alive: str, token: str, gone_ms: int | None
    ) -> None:
        args: list[str | int] = [token] if gone_ms is None else [token, gone_ms]
        try:
            await self._scripts["release"](keys=[queue, alive], args=args, client=client)
        except RedisError as exc:
            log.warning("could not release a conversation lease (%s); it will expire", type(exc).__name__)

    async def _wait_turn(
        self, key: ConversationKey, queue: str, alive: str, token: str, lease_ms: int, queue_ms: int
    ) -> None:
        deadline = time.monotonic() + self.wait_seconds
        prefix = queue + self.keys.separator
        pause = self.poll_seconds
        while True:
            try:
                position = await self._scripts["try"](
                    keys=[queue], args=[token, prefix, lease_ms], client=self.client
                )
                if position == -1:  # our ticket expired (a long stall): take a new one at the back
                    log.warning("a queued message lost its place (lease expired); queueing it again")
                    await self._scripts["enqueue"](
                        keys=[queue, alive], args=[token, lease_ms, queue_ms], client=self.client
                    )
                    continue
            except RedisError as exc:
                raise self._error("waiting for the conversation", exc) from exc
            if position == 0:
                return
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"The conversation stayed busy for {self.wait_seconds}s ({position} message(s) ahead); "
                    "this message was not processed. Raise wait_seconds if agents run that long."
                )
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, self.max_poll_seconds)

    async def _renew(self, queue: str, alive: str, lease_ms: int, queue_ms: int) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                kept = await self._scripts["renew"](
                    keys=[alive, queue], args=[lease_ms, queue_ms], client=self.client
                )
            except RedisError as exc:
                log.warning("could not renew a conversation lease: %s", type(exc).__name__)
                continue
            if not kept:
                log.error("a conversation lease expired (stalled worker?); another worker may take over")

    async def close(self) -> None:
        if self._releasing:  # tickets being released still need the client
            await asyncio.gather(*self._releasing, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
