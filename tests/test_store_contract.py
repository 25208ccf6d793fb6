"""The same behaviour from every store: memory, SQLite (real files), Redis (db 13) and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _workers.support import PG_URL, drop_redis_namespace, redis_namespace, require_service

from flowagents.results import AgentStatus
from flowagents.storage import ConversationKey, ConversationRecord, ConversationStore, MemoryStore
from flowagents.storage.postgres import PostgresStore
from flowagents.storage.redis import RedisStore
from flowagents.storage.sqlite import SQLiteStore

BACKENDS = ["memory", "sqlite", "redis", "postgres"]


async def make_store(kind: str, tmp_path: Path, **ttl: float) -> ConversationStore:
    if kind == "memory":
        return MemoryStore(**ttl)
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "state" / "bot.sqlite3", **ttl)
    if kind == "redis":
        ns = redis_namespace()
        return RedisStore(ns.base, keys=ns.keys, **ttl)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return PostgresStore(PG_URL, table_prefix=f"t_{uuid.uuid4().hex[:10]}_", **ttl)


async def drop(store: ConversationStore) -> None:
    if isinstance(store, RedisStore):
        drop_redis_namespace(redis_namespace()._replace(base=store.url, keys=store.keys))
    if isinstance(store, PostgresStore) and store._pool is not None:
        async with store._pool.acquire() as conn:
            await conn.execute(f"DROP TABLE {store.prefix}conversations; DROP TABLE {store.prefix}deliveries")


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConversationStore]:
    s = await make_store(request.param, tmp_path)
    await s.open()
    yield s
    await drop(s)
    await s.close()


def record(
    agent: str = "booking",
    status: AgentStatus = AgentStatus.WAITING_FOR_INPUT,
    age: float = 0.0,
    **values: object,
) -> ConversationRecord:
    now = time.time() - age
    return ConversationRecord(
        agent=agent,
        status=status,
        values=dict(values),
        asking="day",
        attempts=1,
        created_at=now - 5,
        updated_at=now,
    )


KEY = ConversationKey("T1", "C1", "U1")


async def test_round_trip_keeps_every_field(store: ConversationStore) -> None:
    rec = record(guests=4, when=dt.date(2026, 5, 1).isoformat())
    await store.save(KEY, rec)
    loaded = await store.load(KEY)
    assert loaded == rec
    assert await store.load(ConversationKey("T1", "C1", "other")) is None


async def test_save_replaces_and_delete_forgets(store: ConversationStore) -> None:
    await store.save(KEY, record(guests=2))
    await store.save(KEY, record(guests=3))
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.values == {"guests": 3}
    await store.delete(KEY)
    assert await store.load(KEY) is None
    await store.delete(KEY)  # deleting nothing is fine


async def test_keys_with_separators_and_glob_characters_stay_apart(store: ConversationStore) -> None:
    keys = [
        ConversationKey("a:b", "c", "d"),
        ConversationKey("a", "b:c", "d"),
        ConversationKey("a%3Ab", "c", "d"),
        ConversationKey("t*", "c", "d"),
        ConversationKey("t[1]", "c?", "lock"),
    ]
    for i, key in enumerate(keys):
        await store.save(key, record(n=i))
    for i, key in enumerate(keys):
        loaded = await store.load(key)
        assert loaded is not None and loaded.values == {"n": i}
    assert sorted(k for k, _ in store.snapshot()) == sorted(keys)
    assert [k for k, _ in store.snapshot("t*")] == [keys[3]]


async def test_a_conversation_idle_past_the_ttl_expires(tmp_path: Path) -> None:
    for kind in BACKENDS:
        s = await make_store(kind, tmp_path / kind, idle_ttl_seconds=60, finished_ttl_seconds=10)
        await s.open()
        try:
            await s.save(KEY, record(age=61))  # waiting for input, idle longer than 60 s
            fresh = ConversationKey("T1", "C2", "U2")
            await s.save(fresh, record(age=30))
            done = ConversationKey("T1", "C3", "U3")
            await s.save(done, record(status=AgentStatus.COMPLETED, age=11))
            assert await s.load(KEY) is None, kind
            assert await s.load(done) is None, kind
            assert await s.load(fresh) is not None, kind
            assert [k for k, _ in s.snapshot()] == [fresh], kind
        finally:
            await drop(s)
            await s.close()


async def test_the_memory_store_frees_conversations_nobody_came_back_to() -> None:
    store = MemoryStore(idle_ttl_seconds=60)
    tracemalloc.start()
    try:
        for i in range(5_000):  # abandoned mid-form more than a minute ago, never loaded again
            await store.save(ConversationKey("T1", f"C{i}", "U"), record(age=61))
        before = tracemalloc.get_traced_memory()[0]
        store.purge_interval_seconds = 0  # the next save purges (every minute by default)
        await store.save(KEY, record(age=0))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert before - after > 1_000_000  # about 300 bytes each, given back
    assert await store.load(KEY) is not None


async def test_snapshot_filters_by_tenant(store: ConversationStore) -> None:
    await store.save(ConversationKey("A", "1", "1"), record())
    await store.save(ConversationKey("A", "2", "2"), record(status=AgentStatus.COMPLETED))
    await store.save(ConversationKey("B", "1", "1"), record())
    assert sorted(k.conversation_id for k, _ in store.snapshot("A")) == ["1", "2"]
    assert [k.tenant_id for k, _ in store.snapshot("B")] == ["B"]
    assert len(store.snapshot()) == 3


async def test_purge_finished_removes_only_old_finished_records(store: ConversationStore) -> None:
    await store.save(ConversationKey("A", "old", "u"), record(status=AgentStatus.COMPLETED, age=600))
    await store.save(ConversationKey("A", "new", "u"), record(status=AgentStatus.CANCELLED, age=1))
    await store.save(ConversationKey("A", "waiting", "u"), record(age=600))
    assert store.purge_finished(300) == 1
    assert sorted(k.conversation_id for k, _ in store.snapshot()) == ["new", "waiting"]


async def test_a_delivery_is_claimed_once_and_remembered_when_done(store: ConversationStore) -> None:
    assert await store.claim_delivery("Ev1", lease_seconds=60)
    assert not await store.claim_delivery("Ev1", lease_seconds=60)  # in progress elsewhere
    await store.finish_delivery("Ev1", keep_seconds=60)
    assert not await store.claim_delivery("Ev1", lease_seconds=60)  # done
    assert await store.claim_delivery("Ev2", lease_seconds=60)


async def test_a_claim_whose_worker_died_can_be_taken_again(store: ConversationStore) -> None:
    assert await store.claim_delivery("Ev1", lease_seconds=0.2)
    await asyncio.sleep(0.4)  # the lease ran out: the first worker never finished
    assert await store.claim_delivery("Ev1", lease_seconds=60)
    assert not await store.claim_delivery("Ev1", lease_seconds=60)


async def test_a_delivery_released_with_no_keep_time_can_be_claimed_again_at_once(
    store: ConversationStore,
) -> None:
    # The orchestrator releases the claim of a turn that failed or was cancelled: the retry must run.
    for attempt in range(20):
        assert await store.claim_delivery("Ev1", lease_seconds=60), attempt
        await store.finish_delivery("Ev1", keep_seconds=0)
    assert await store.claim_delivery("Ev1", lease_seconds=60)


async def test_concurrent_claims_of_one_delivery_have_one_winner(store: ConversationStore) -> None:
    results = await asyncio.gather(*(store.claim_delivery("Ev-race", 60) for _ in range(20)))
    assert results.count(True) == 1


async def test_a_record_from_another_schema_version_is_returned_for_the_orchestrator_to_reset(
    store: ConversationStore,
) -> None:
    rec = record()
    rec.version = 99
    await store.save(KEY, rec)
    loaded = await store.load(KEY)
    assert loaded is not None and loaded.version == 99


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_worker_whose_clock_runs_ahead_cannot_take_over_a_claim_in_progress(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await make_store(kind, tmp_path)
    if isinstance(a, RedisStore):
        b: ConversationStore = RedisStore(a.url, keys=a.keys)
    else:
        assert isinstance(a, PostgresStore)
        b = PostgresStore(PG_URL, table_prefix=a.prefix, purge_interval_seconds=0)
    await a.open()
    await b.open()
    try:
        assert await a.claim_delivery("Ev1", lease_seconds=60)  # worker A is processing Ev1
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 120)  # worker B's host clock is 2 minutes ahead
        await b.save(KEY, record())  # B's housekeeping (purge after a save) must not drop A's claim either
        assert not await b.claim_delivery("Ev1", lease_seconds=60)  # the redelivery reaching B
        monkeypatch.undo()
        await a.finish_delivery("Ev1", keep_seconds=60)
        assert not await a.claim_delivery("Ev1", lease_seconds=60)
    finally:
        await drop(a)
        await a.close()
        await b.close()
