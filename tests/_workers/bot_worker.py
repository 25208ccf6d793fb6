"""A bot worker process for the durability tests.

Builds an Orchestrator on `--store URL` (via `store_from_url`) and processes JSON lines from stdin
concurrently: {"id", "text", "user", "tenant"?, "conv"?, "delivery_id"?}. Each reply is one JSON line on
stdout: {"id", "reply", "status", "field", "data", "duplicate", "processed", "error", "pid"}.
The first line it prints is {"ready": true, "pid": ...}. With a Redis store it also prints
{"queued": id, "position": n} when a message takes its place in its conversation's queue, and every
store {"running": id} when the slow agent starts its turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _workers.agents import ALL, Slow
from flowagents import Orchestrator
from flowagents.storage import ConversationKey
from flowagents.storage.redis import RedisIsolation
from flowagents.storage.url import store_from_url

current_id: contextvars.ContextVar[object] = contextvars.ContextVar("current_id", default=None)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def queued(key: ConversationKey, position: int) -> None:
    """Tell the test the message has its place in the conversation's queue (it has "arrived")."""
    emit({"queued": current_id.get(), "position": position})


async def handle(orch: Orchestrator, msg: dict[str, Any]) -> None:
    current_id.set(msg["id"])
    result = await orch.process(
        msg["text"],
        tenant_id=msg.get("tenant"),
        user_id=msg["user"],
        conversation_id=msg.get("conv"),
        delivery_id=msg.get("delivery_id"),
    )
    emit(
        {
            "id": msg["id"],
            "reply": result.raw_message,
            "status": result.status.value,
            "field": result.field,
            "data": result.data,
            "duplicate": result.duplicate,
            "processed": result.processed,
            "error": result.error,
            "pid": os.getpid(),
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--lease", type=float, default=10.0, help="conversation lease (Redis)")
    parser.add_argument("--delivery-lease", type=float, default=120.0)
    parser.add_argument("--slow-factor", type=float, default=1.0, help="scales the slow agent's run time")
    args = parser.parse_args()
    Slow.factor = args.slow_factor
    Slow.on_start = lambda: emit({"running": current_id.get()})
    store, isolation = store_from_url(args.store, lease_seconds=args.lease)
    if isinstance(isolation, RedisIsolation):
        isolation.on_queued = queued
    orch = Orchestrator(
        agents=ALL, store=store, isolation=isolation, delivery_lease_seconds=args.delivery_lease
    )
    await orch.initialize()
    emit({"ready": True, "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        if line.strip():
            task = asyncio.create_task(handle(orch, json.loads(line)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    await orch.close()


if __name__ == "__main__":
    asyncio.run(main())
