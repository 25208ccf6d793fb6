"""Faults: Redis stopped mid-run (a private redis-server, never the shared one), SQLite misuse, purges."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import asyncpg
import pytest
from _requirements import require_service
from _workers.agents import ALL
from _workers.support import PG_URL, RedisServer

from flowagents import AgentStatus, Orchestrator
from flowagents.errors import ConfigurationError, StoreError
from flowagents.storage.postgres import PostgresStore
from flowagents.storage.sqlite import SQLiteStore
from flowagents.storage.url import store_from_url

POLITE = "Sorry, I can't reach my memory right now. Please try again in a moment."


async def test_redis_stopped_mid_run_gives_polite_replies_and_the_bot_recovers_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    store, isolation = store_from_url(server.url)
    orch = Orchestrator(agents=ALL, store=store, isolation=isolation)
    try:
        assert (await orch.process("book a table", user_id="ada")).raw_message == "How many guests?"
        assert (await orch.process("3", user_id="ada", delivery_id="E1")).raw_message == "Which day?"

        server.stop()  # redis-cli shutdown nosave, mid-conversation
        caplog.set_level(logging.WARNING)
        down = await orch.process("friday", user_id="ada", delivery_id="E2")
        assert (down.raw_message, down.status, down.error) == (POLITE, AgentStatus.FAILED, "StoreError")
        assert not down.processed
        no_delivery_id = await orch.process("friday", user_id="ada")
        assert no_delivery_id.raw_message == POLITE
        assert f"Redis store redis://127.0.0.1:{server.port}/0: claim delivery failed" in caplog.text
        assert "Check that Redis is running" in caplog.text
        with pytest.raises(StoreError, match="snapshot failed"):
            orch.get_active_agents()

        server.start()  # same port and data directory; nothing is restarted on the bot side
        back = await orch.process("friday", user_id="ada", delivery_id="E2")  # the platform's retry
        assert back.raw_message == "Under which name?"
        done = await orch.process("Ada", user_id="ada", delivery_id="E3")
        assert done.raw_message == "Booked a table for 3 on friday under Ada."
        # E1 was processed before the outage and is still remembered
        assert (await orch.process("3", user_id="ada", delivery_id="E1")).duplicate
    finally:
        await orch.close()
        server.kill()


async def test_redis_down_at_startup_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started
    store, isolation = store_from_url(server.url)
    orch = Orchestrator(agents=ALL, store=store, isolation=isolation)
    with pytest.raises(StoreError, match=rf"redis://127.0.0.1:{server.port}/0: connecting failed"):
        await orch.initialize()
    await orch.close()


async def test_a_second_process_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    first = SQLiteStore(tmp_path / "bot.sqlite3")
    await first.open()
    second = SQLiteStore(tmp_path / "bot.sqlite3")
    with pytest.raises(ConfigurationError, match="redis://"):
        await second.open()
    await first.close()
    await second.open()  # the file is free again
    await second.close()


async def test_an_unwritable_sqlite_location_gives_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = SQLiteStore(blocker / "bot.sqlite3")
    with pytest.raises(StoreError, match="data directory"):
        await store.open()


async def test_a_failed_purge_after_a_save_neither_fails_the_turn_nor_lets_its_retry_apply_twice() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    prefix = f"fa_purge_{uuid.uuid4().hex[:10]}_"
    store = PostgresStore(PG_URL, table_prefix=prefix, timeout_seconds=1.0, purge_interval_seconds=0)
    orch = Orchestrator(agents=ALL, store=store)
    await orch.initialize()
    other = await asyncpg.connect(PG_URL)
    try:
        first = await orch.process("book a table", user_id="u", delivery_id="d1")
        assert first.field is not None
        # An expired row someone else holds locked: the purge after the next save times out.
        await other.execute(f"INSERT INTO {prefix}conversations VALUES ('t','c','x', true, 0, 0, '{{}}')")
        async with other.transaction():
            await other.execute(f"SELECT 1 FROM {prefix}conversations WHERE user_id = 'x' FOR UPDATE")
            answered = await orch.process("4", user_id="u", delivery_id="d2")
        assert answered.processed and answered.status is AgentStatus.WAITING_FOR_INPUT
        assert answered.field != first.field  # the answer was taken and the next question asked
        retry = await orch.process("4", user_id="u", delivery_id="d2")  # the platform retries the event
        assert retry.duplicate
    finally:
        await other.execute(f"DROP TABLE IF EXISTS {prefix}conversations, {prefix}deliveries")
        await other.close()
        await orch.close()
