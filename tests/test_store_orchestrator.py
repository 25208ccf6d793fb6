"""The orchestrator on real stores: conversations survive a new process object, corrupt rows stay local,
deploys that remove an agent reset politely, duplicates are answered once."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis
from _workers.agents import ALL, Booking
from _workers.support import PG_URL, drop_redis_namespace, redis_namespace, require_service

from flowagents import AgentStatus, InputField, Orchestrator, StandardAgent, flowagent
from flowagents.storage import ConversationKey
from flowagents.storage.postgres import PostgresStore
from flowagents.storage.redis import RedisStore
from flowagents.storage.url import store_from_url

PERSISTENT = ["sqlite", "redis", "postgres"]


def url_for(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/data/bot.sqlite3"
    if kind == "redis":
        return redis_namespace().url
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_URL


Factory = Callable[..., Orchestrator]


async def _factory(kind: str, tmp_path: Path) -> AsyncIterator[Factory]:
    url = "memory" if kind == "memory" else url_for(kind, tmp_path)
    prefix = f"o_{uuid.uuid4().hex[:10]}_"
    made: list[Orchestrator] = []

    def factory(agents: list[type] | None = None) -> Orchestrator:
        store, isolation = store_from_url(url)
        if isinstance(store, PostgresStore):
            store = PostgresStore(url, table_prefix=prefix)
        orch = Orchestrator(agents=agents or ALL, store=store, isolation=isolation)
        made.append(orch)
        return orch

    yield factory
    for orch in made:
        if isinstance(orch.store, RedisStore):
            drop_redis_namespace(redis_namespace()._replace(base=orch.store.url, keys=orch.store.keys))
        if isinstance(orch.store, PostgresStore) and orch.store._pool is not None:
            async with orch.store._pool.acquire() as conn:
                await conn.execute(f"DROP TABLE IF EXISTS {prefix}conversations, {prefix}deliveries")
        await orch.close()


@pytest.fixture(params=["memory", *PERSISTENT])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Orchestrators on one store of each kind."""
    async for factory in _factory(request.param, tmp_path):
        yield factory


@pytest.fixture(params=PERSISTENT)
async def make_durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Orchestrators on one persistent store of each kind (SQLite, Redis, PostgreSQL)."""
    async for factory in _factory(request.param, tmp_path):
        yield factory


async def test_a_new_orchestrator_on_the_same_store_continues_the_conversation(make_durable: Factory) -> None:
    make = make_durable
    first = make()
    assert (await first.process("book a table", user_id="ada")).raw_message == "How many guests?"
    assert (await first.process("4", user_id="ada")).raw_message == "Which day?"
    await first.close()
    second = make()
    assert (await second.process("friday", user_id="ada")).raw_message == "Under which name?"
    done = await second.process("Ada", user_id="ada")
    assert done.raw_message == "Booked a table for 4 on friday under Ada."
    assert done.status is AgentStatus.COMPLETED


async def test_a_conversation_of_an_agent_removed_by_a_deploy_is_reset_with_a_notice(
    make_durable: Factory,
) -> None:
    make = make_durable
    before = make()
    await before.process("start survey", user_id="bob")
    await before.process("blue", user_id="bob")
    await before.close()
    after = make([Booking])
    reply = await after.process("green", user_id="bob")
    assert "reset" in reply.raw_message
    assert (await after.process("book a table", user_id="bob")).raw_message == "How many guests?"


async def corrupt(orch: Orchestrator, tmp_path: Path, user: str) -> None:
    """Overwrite one conversation's stored data with garbage, behind the store's back."""
    store = orch.store
    if isinstance(store, PostgresStore):
        assert store._pool is not None
        await store._pool.execute(
            f"UPDATE {store.prefix}conversations SET data = '{{\"agent\": 12' WHERE user_id = $1", user
        )
    elif "sqlite" in type(store).__name__.lower():
        with sqlite3.connect(tmp_path / "data" / "bot.sqlite3") as db:
            db.execute("UPDATE conversations SET data = '{\"agent\": 12, broken' WHERE user_id = ?", (user,))
    else:
        assert isinstance(store, RedisStore)
        client = redis.Redis.from_url(store.url)
        client.set(store.keys.conversation(ConversationKey("default", user, user)), b"\xff\x00 not json")
        client.close()


async def test_a_corrupt_row_breaks_only_its_own_conversation(
    make_durable: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    orch = make_durable()
    for user in ("u1", "u2", "u3"):
        await orch.process("book a table", user_id=user)
        await orch.process("2", user_id=user)
    await corrupt(orch, tmp_path, "u2")
    assert sorted(a.user_id for a in orch.get_active_agents()) == ["u1", "u3"]
    assert (await orch.process("monday", user_id="u1")).raw_message == "Under which name?"
    broken = await orch.process("monday", user_id="u2")
    assert broken.raw_message == "Sorry, I didn't get that."  # starts afresh, no crash
    assert "corrupt conversation record" in caplog.text
    assert (await orch.process("book a table", user_id="u2")).raw_message == "How many guests?"
    assert (await orch.process("tuesday", user_id="u3")).raw_message == "Under which name?"


async def test_the_same_delivery_twice_at_once_and_after_completion_gives_one_reply(make: Factory) -> None:
    orch = make()
    await orch.process("book a table", user_id="cy", delivery_id="Ev0")
    first, second = await asyncio.gather(
        orch.process("6", user_id="cy", delivery_id="Ev1"), orch.process("6", user_id="cy", delivery_id="Ev1")
    )
    assert sorted([first.duplicate, second.duplicate]) == [False, True]
    assert [r.raw_message for r in (first, second) if not r.duplicate] == ["Which day?"]
    again = await orch.process("6", user_id="cy", delivery_id="Ev1")
    assert again.duplicate and not again.processed and again.raw_message == ""
    assert (await orch.process("sunday", user_id="cy", delivery_id="Ev2")).raw_message == "Under which name?"


@flowagent(triggers=["order tea"], name="store_gated", description="An order that waits for a gate")
class Gated(StandardAgent):
    """Asks one question, then runs until the test opens `gate`."""

    entered: asyncio.Event
    gate: asyncio.Event
    kind: str = InputField("Which kind?")

    async def on_running(self, msg: str) -> str:
        Gated.entered.set()
        await Gated.gate.wait()
        return f"Ordered {self.kind} tea."


@pytest.mark.parametrize("how", ["task cancelled", "stream left"])
async def test_a_turn_cancelled_before_it_saved_is_processed_when_its_delivery_comes_again(
    make: Factory, how: str
) -> None:
    orch = make([Gated])
    assert (await orch.process("order tea", user_id="eve", delivery_id="Ev0")).raw_message == "Which kind?"
    Gated.entered, Gated.gate = asyncio.Event(), asyncio.Event()
    if how == "task cancelled":  # a caller's timeout around process(), a shutdown past its grace
        first = asyncio.create_task(orch.process("green", user_id="eve", delivery_id="Ev1"))
        await Gated.entered.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    else:
        stream = orch.process_stream("green", user_id="eve", delivery_id="Ev1")
        async for _ in stream:
            if Gated.entered.is_set():
                break
        await stream.aclose()  # type: ignore[attr-defined]
    Gated.gate.set()
    # Nothing was saved: the conversation still waits for the kind, and the retry is not a duplicate.
    retry = await orch.process("green", user_id="eve", delivery_id="Ev1")
    assert (retry.duplicate, retry.raw_message) == (False, "Ordered green tea.")
    assert (await orch.process("green", user_id="eve", delivery_id="Ev1")).duplicate


async def test_active_agents_and_cleanup_work_on_every_store(make: Factory) -> None:
    orch = make()
    await orch.process("book a table", tenant_id="t1", user_id="a")
    await orch.process("book a table", tenant_id="t2", user_id="b")
    await orch.process("start survey", tenant_id="t2", user_id="c")
    await orch.process("cancel", tenant_id="t2", user_id="c")
    active = orch.get_active_agents("t1")
    assert [(a.tenant_id, a.user_id, a.asking) for a in active] == [("t1", "a", "guests")]
    assert len(orch.get_active_agents()) == 2
    assert len(orch.get_active_agents(include_finished=True)) == 3
    assert orch.cleanup_completed_agents(max_age_seconds=3600) == 0
    assert orch.cleanup_completed_agents(max_age_seconds=0) == 1
    assert len(orch.get_active_agents(include_finished=True)) == 2


async def test_many_messages_of_one_conversation_at_once_are_applied_one_by_one(make: Factory) -> None:
    orch = make()
    await orch.process("start survey", user_id="dee")
    replies = await asyncio.gather(*(orch.process(w, user_id="dee") for w in ("one", "two", "three")))
    assert [r.raw_message for r in replies] == [
        "Second answer?",
        "Third answer?",
        "Survey done: one | two | three",
    ]


def test_a_store_shared_by_workers_without_its_isolation_is_warned_about(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    url = "redis://127.0.0.1:6379/0"
    Orchestrator(agents=[Booking], store=RedisStore(url))
    Orchestrator(agents=[Booking], store=PostgresStore(PG_URL))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split()[0] for w in warned] == ["RedisStore", "PostgresStore"]
    assert all("isolation=" in w for w in warned)
    caplog.clear()
    store, isolation = store_from_url(url)
    Orchestrator(agents=[Booking], store=store, isolation=isolation)
    Orchestrator(agents=[Booking], store=store_from_url(f"sqlite:///{tmp_path}/bot.db")[0])
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
