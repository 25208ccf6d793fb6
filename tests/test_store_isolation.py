"""Turn isolation across processes: the Redis lease lock (and the PostgreSQL advisory lock)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from _workers.support import PG_URL, RedisNamespace, SlowLink, free_port, redis_ns, require_service

from flowagents.errors import StoreError
from flowagents.storage import ConversationKey, EventIsolation
from flowagents.storage.memory import MemoryIsolation
from flowagents.storage.postgres import PostgresIsolation
from flowagents.storage.redis import RedisIsolation

KEY = ConversationKey("t", "c", "u")


__all__ = ["redis_ns"]  # the fixture, imported for pytest


def make_isolation(kind: str, ns: RedisNamespace | None = None, **options: float) -> EventIsolation:
    if kind == "redis":
        assert ns is not None
        return RedisIsolation(ns.base, keys=ns.keys, **options)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return PostgresIsolation(PG_URL)


@pytest.fixture(params=["redis", "postgres"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[EventIsolation, EventIsolation]]:
    """Two isolations with their own connections, as two worker processes would have."""
    ns = request.getfixturevalue("redis_ns") if request.param == "redis" else None
    a, b = make_isolation(request.param, ns), make_isolation(request.param, ns)
    yield a, b
    await a.close()
    await b.close()


async def test_two_workers_never_run_one_conversation_at_the_same_time(
    pair: tuple[EventIsolation, EventIsolation],
) -> None:
    inside = 0
    overlaps = 0
    entered: list[str] = []

    async def turn(iso: EventIsolation, name: str) -> None:
        nonlocal inside, overlaps
        async with iso.lock(KEY):
            inside += 1
            overlaps += inside > 1
            entered.append(name)
            await asyncio.sleep(0.01)
            inside -= 1

    a, b = pair
    await asyncio.gather(*(turn(a if i % 2 else b, f"m{i}") for i in range(20)))
    assert overlaps == 0
    assert sorted(entered) == sorted(f"m{i}" for i in range(20))


async def test_other_conversations_are_not_blocked(pair: tuple[EventIsolation, EventIsolation]) -> None:
    a, b = pair
    async with a.lock(KEY):
        async with b.lock(ConversationKey("t", "c", "other")):
            pass


async def test_turns_of_one_process_keep_arrival_order(pair: tuple[EventIsolation, EventIsolation]) -> None:
    a, _ = pair
    order: list[int] = []

    async def turn(i: int) -> None:
        async with a.lock(KEY):
            order.append(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(turn(i) for i in range(10)))
    assert order == list(range(10))


async def test_the_lease_is_renewed_while_a_long_turn_runs(redis_ns: RedisNamespace) -> None:
    a = make_isolation("redis", redis_ns, lease_seconds=1.0)
    b = make_isolation("redis", redis_ns, lease_seconds=1.0)
    try:
        events: list[str] = []
        a_inside = asyncio.Event()

        async def long_turn() -> None:
            async with a.lock(KEY):
                a_inside.set()
                await asyncio.sleep(2.5)  # two and a half leases long
                events.append("a done")

        async def second() -> None:
            await a_inside.wait()
            async with b.lock(KEY):
                events.append("b in")

        await asyncio.gather(long_turn(), second())
        assert events == ["a done", "b in"]
    finally:
        await a.close()
        await b.close()


async def test_a_crashed_worker_holds_a_conversation_only_until_its_lease_expires(
    redis_ns: RedisNamespace,
) -> None:
    raw = aioredis.Redis.from_url(redis_ns.base)
    queue = redis_ns.keys.lock(KEY)
    # A worker took the conversation and died: its ticket heads the queue and its lease is never renewed.
    await raw.rpush(queue, "deadtoken")
    await raw.set(f"{queue}:deadtoken", "1", px=500)
    iso = RedisIsolation(redis_ns.base, keys=redis_ns.keys, lease_seconds=0.5)
    try:
        async with iso.lock(KEY):
            assert await raw.lindex(queue, 0) != b"deadtoken"
        assert await raw.llen(queue) == 0  # our own ticket is gone too
    finally:
        await iso.close()
        await raw.aclose()


async def test_messages_arriving_at_two_workers_mid_turn_run_in_arrival_order(
    redis_ns: RedisNamespace,
) -> None:
    a = make_isolation("redis", redis_ns)
    b = make_isolation("redis", redis_ns)
    order: list[str] = []
    queued: list[str] = []
    got_ticket = asyncio.Event()

    def on_queued(key: ConversationKey, position: int) -> None:
        queued.append(str(position))
        got_ticket.set()

    a.on_queued = b.on_queued = on_queued  # type: ignore[attr-defined]
    try:
        first_inside = asyncio.Event()
        release_first = asyncio.Event()

        async def turn(iso: EventIsolation, name: str, hold: asyncio.Event | None = None) -> None:
            async with iso.lock(KEY):
                order.append(name)
                if hold is not None:
                    first_inside.set()
                    await hold.wait()

        running = [asyncio.create_task(turn(a, "m0", release_first))]
        await first_inside.wait()
        for i in range(1, 7):  # arrive mid-turn, alternately at both workers, each queued before the next
            got_ticket.clear()
            running.append(asyncio.create_task(turn(b if i % 2 else a, f"m{i}")))
            await got_ticket.wait()
        release_first.set()
        await asyncio.gather(*running)
        assert order == [f"m{i}" for i in range(7)]
        assert queued == [str(i) for i in range(7)]
    finally:
        await a.close()
        await b.close()


async def test_the_lock_is_released_when_the_turn_raises(redis_ns: RedisNamespace) -> None:
    iso = make_isolation("redis", redis_ns)
    try:
        with pytest.raises(RuntimeError):
            async with iso.lock(KEY):
                raise RuntimeError("agent bug")
        raw = aioredis.Redis.from_url(redis_ns.base)
        assert not await raw.exists(redis_ns.keys.lock(KEY))  # no ticket left behind
        await raw.aclose()
    finally:
        await iso.close()


async def test_an_unreachable_redis_raises_store_error_with_a_clear_message() -> None:
    iso = RedisIsolation(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreError, match="Check that Redis is running"):
            async with iso.lock(KEY):
                pass
    finally:
        await iso.close()


async def test_a_waiting_message_that_is_cancelled_gives_up_its_place(redis_ns: RedisNamespace) -> None:
    iso = make_isolation("redis", redis_ns)
    raw = aioredis.Redis.from_url(redis_ns.base)
    waiting = asyncio.Event()
    iso.on_queued = lambda key, position: waiting.set() if position else None  # type: ignore[attr-defined]
    try:
        holder_inside, release = asyncio.Event(), asyncio.Event()

        async def holder() -> None:
            async with iso.lock(KEY):
                holder_inside.set()
                await release.wait()

        async def waiter() -> None:
            async with iso.lock(KEY):
                raise AssertionError("a cancelled message must not run")

        first = asyncio.create_task(holder())
        await holder_inside.wait()
        second = asyncio.create_task(waiter())
        await waiting.wait()
        assert await raw.llen(redis_ns.keys.lock(KEY)) == 2
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await raw.llen(redis_ns.keys.lock(KEY)) == 1
        release.set()
        await first
        assert not await raw.exists(redis_ns.keys.lock(KEY))
    finally:
        await iso.close()
        await raw.aclose()


async def test_a_waiting_turn_cancelled_as_the_holder_finishes_is_cancelled_not_failed() -> None:
    isolation = MemoryIsolation()
    key = ConversationKey("t", "c", "u")
    gate = asyncio.Event()

    async def hold() -> None:
        async with isolation.lock(key):
            await gate.wait()

    async def wait_behind() -> None:
        async with isolation.lock(key):
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(wait_behind())
    await asyncio.sleep(0)
    gate.set()  # in the same loop pass: the holder finishes and the waiter is cancelled
    waiter.cancel()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with asyncio.timeout(1), isolation.lock(key):  # and the conversation is free
        pass


async def _cancel_while_queueing(iso: RedisIsolation, link: SlowLink, on_the_wire: Awaitable[None]) -> None:
    """Cancel a message once its enqueue is `on_the_wire` (held by `link`), then let traffic through."""

    async def message() -> None:
        async with iso.lock(KEY):
            raise AssertionError("a cancelled message must not run")

    task = asyncio.create_task(message())
    await asyncio.wait_for(on_the_wire, 5)
    task.cancel()
    link.up = link.down = 0.0
    with pytest.raises(asyncio.CancelledError):
        await task


async def _next_message_runs_at_once(iso: RedisIsolation, raw: aioredis.Redis, queue: str) -> None:
    started = time.monotonic()
    async with iso.lock(KEY):
        pass
    assert time.monotonic() - started < 1  # not a lease (5 s)
    assert not await raw.exists(queue)


@contextlib.asynccontextmanager
async def behind_a_slow_link(
    redis_ns: RedisNamespace,
) -> AsyncIterator[tuple[RedisIsolation, SlowLink, aioredis.Redis, str]]:
    """A connected Redis isolation behind a `SlowLink`, a direct client and the conversation's queue key."""
    link = SlowLink()
    iso = RedisIsolation(await link.start(), keys=redis_ns.keys, lease_seconds=5)
    raw = aioredis.Redis.from_url(redis_ns.base)
    try:
        async with iso.lock(KEY):  # connected, scripts loaded
            pass
        yield iso, link, raw, redis_ns.keys.lock(KEY)
    finally:
        await iso.close()
        await raw.aclose()
        await link.stop()


async def test_a_message_cancelled_while_its_ticket_reply_is_on_the_wire_releases_it(
    redis_ns: RedisNamespace,
) -> None:
    async with behind_a_slow_link(redis_ns) as (iso, link, raw, queue):
        link.down = 0.5  # the enqueue runs on Redis, its reply is late

        async def ticket_in_redis() -> None:
            while not await raw.llen(queue):  # noqa: ASYNC110 - polls Redis, no event to await
                await asyncio.sleep(0.005)

        await _cancel_while_queueing(iso, link, ticket_in_redis())
        await _next_message_runs_at_once(iso, raw, queue)


async def test_a_cancelled_ticket_that_reaches_redis_after_its_release_is_not_queued(
    redis_ns: RedisNamespace,
) -> None:
    async with behind_a_slow_link(redis_ns) as (iso, link, raw, queue):
        link.up = 0.3  # the enqueue reaches Redis after the release sent on a fresh connection
        await _cancel_while_queueing(iso, link, asyncio.sleep(0.05))  # sent, held by the link
        await asyncio.sleep(0.5)  # the held enqueue has run by now
        assert not await raw.exists(queue)
        await _next_message_runs_at_once(iso, raw, queue)


async def test_a_postgres_lock_whose_server_falls_silent_mid_turn_is_given_up_not_held_for_minutes() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    pg = urlsplit(PG_URL)
    link = SlowLink(pg.hostname or "127.0.0.1", pg.port or 5432)
    await link.start()
    via_link = pg._replace(netloc=f"{pg.username}@127.0.0.1:{link.port}").geturl()
    iso = PostgresIsolation(via_link, timeout_seconds=0.5)
    other = PostgresIsolation(PG_URL)
    try:
        async with asyncio.timeout(30):  # not the minutes TCP takes to give up on a silent peer
            async with iso.lock(KEY):
                link.up = 3600.0  # the network goes silent mid-turn: the unlock never reaches PostgreSQL
        await link.stop()  # the dropped connection ends the session, and with it the lock
        async with asyncio.timeout(10), other.lock(KEY):
            pass
    finally:
        await iso.close()
        await other.close()
        await link.stop()


async def test_a_conversation_held_without_waiting_makes_the_next_turn_wait_for_its_release() -> None:
    isolation = MemoryIsolation()
    release = isolation.hold_if_free(KEY)
    assert release is not None
    assert isolation.hold_if_free(KEY) is None  # held: the next turn must queue
    assert isolation.hold_if_free(ConversationKey("t", "c", "other")) is not None
    entered = asyncio.Event()

    async def next_turn() -> None:
        async with isolation.lock(KEY):
            entered.set()

    waiting = asyncio.create_task(next_turn())
    await asyncio.sleep(0.01)
    assert not entered.is_set()
    release()
    await asyncio.wait_for(waiting, 1)
    assert isolation.hold_if_free(KEY) is not None  # free again once the queued turn is done
