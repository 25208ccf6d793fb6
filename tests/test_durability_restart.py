"""Restart proof: a bot process killed with SIGKILL mid-conversation continues at the same question."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from _workers.support import PG_URL, Worker, drop_redis_namespace, redis_namespace, require_service


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "redis":
        ns = redis_namespace()
        yield ns.url
        drop_redis_namespace(ns)
    elif request.param == "postgres":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        prefix = f"r_{uuid.uuid4().hex[:10]}_"
        yield f"{PG_URL}?prefix={prefix}"
        asyncio.run(drop_tables(prefix))
    else:
        yield f"sqlite:///{tmp_path}/data/bot.sqlite3"


async def drop_tables(prefix: str) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {prefix}conversations, {prefix}deliveries")
    finally:
        await conn.close()


def test_sigkill_mid_slot_filling_then_restart_continues_at_the_same_question(store_url: str) -> None:
    bot = Worker(store_url)
    try:
        assert bot.ask(id=1, user="ada", text="book a table", delivery_id="E1")["reply"] == "How many guests?"
        assert bot.ask(id=2, user="ada", text="4", delivery_id="E2")["reply"] == "Which day?"
    finally:
        bot.sigkill()
    again = Worker(store_url)
    try:
        assert again.pid != bot.pid
        # Slack retries E2 after the crash: it was fully processed before, so nothing runs twice.
        assert again.ask(id=3, user="ada", text="4", delivery_id="E2")["duplicate"] is True
        reply = again.ask(id=4, user="ada", text="friday", delivery_id="E3")
        assert (reply["reply"], reply["field"]) == ("Under which name?", "name")
        done = again.ask(id=5, user="ada", text="Ada", delivery_id="E4")
        assert done["reply"] == "Booked a table for 4 on friday under Ada."
        assert done["data"] == {"guests": 4, "day": "friday", "name": "Ada"}
    finally:
        again.stop()


def test_a_turn_killed_before_it_finished_is_processed_when_redelivered(store_url: str) -> None:
    bot = Worker(store_url, "--delivery-lease", "1", "--lease", "1")
    try:
        assert bot.ask(id=1, user="bo", text="slow job", delivery_id="S1")["reply"] == "How many seconds?"
        bot.send(id=2, user="bo", text="30", delivery_id="S2")  # runs for 30 s...
        assert bot.running.get(timeout=20) == {"running": 2}  # S2 was claimed and its turn is running
    finally:
        bot.sigkill()  # ...and dies in the middle
    again = Worker(store_url, "--delivery-lease", "1", "--lease", "1", "--slow-factor", "0.001")
    try:
        time.sleep(1.2)  # the dead worker's claim on S2 (and its Redis lease) expire
        # The platform redelivers S2; its first attempt never finished, so it is processed.
        redelivered = again.ask(id=3, user="bo", text="30", delivery_id="S2")
        assert redelivered["duplicate"] is False
        assert redelivered["reply"] == "Slow job done after 30s."
        assert again.ask(id=4, user="bo", text="30", delivery_id="S2")["duplicate"] is True
    finally:
        again.stop()
