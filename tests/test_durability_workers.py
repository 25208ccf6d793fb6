"""Two worker processes on one Redis: 200 conversations, messages alternating between the workers and
several in flight per conversation, duplicates at once and after completion."""

from __future__ import annotations

import asyncio
import queue
import time
from typing import Any

import redis
from _workers.agents import ALL
from _workers.support import RedisNamespace, Worker, redis_ns

from flowagents import Orchestrator
from flowagents.storage.redis import RedisStore

CONVERSATIONS = 200
__all__ = ["redis_ns"]  # the fixture, imported for pytest
ROUNDS = ["start survey", "{c}-a1", "{c}-a2", "{c}-a3"]


def single_process_replies() -> dict[str, list[str]]:
    """What one process with the in-memory store answers to the same conversations."""

    async def run() -> dict[str, list[str]]:
        orch = Orchestrator(agents=ALL)
        out: dict[str, list[str]] = {}
        for i in range(CONVERSATIONS):
            c = f"c{i:03d}"
            out[c] = [
                (await orch.process(t.format(c=c), tenant_id="tw", user_id=c)).raw_message for t in ROUNDS
            ]
        return out

    return asyncio.run(run())


def drain(
    workers: list[Worker], into: list[dict[str, Any]], attr: str, until: int, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while len(into) < until:
        got = False
        for w in workers:
            try:
                into.append(getattr(w, attr).get(timeout=0.01))
                got = True
            except queue.Empty:
                pass
        if not got and time.monotonic() > deadline:
            raise AssertionError(f"only {len(into)} of {until} {attr} after {timeout}s")


def test_two_workers_give_every_conversation_the_single_process_result(redis_ns: RedisNamespace) -> None:
    workers = [Worker(redis_ns.url), Worker(redis_ns.url)]
    try:
        replies: list[dict[str, Any]] = []
        queued: list[dict[str, Any]] = []
        sent = 0
        for r, template in enumerate(ROUNDS):
            expected_queued = len(queued) + CONVERSATIONS
            for i in range(CONVERSATIONS):
                c = f"c{i:03d}"
                message = {
                    "id": f"{c}/{r}",
                    "tenant": "tw",
                    "user": c,
                    "text": template.format(c=c),
                    "delivery_id": f"Ev-{c}-{r}",
                }
                workers[(i + r) % 2].send(**message)
                sent += 1
                if r == 2 and i % 4 == 0:  # the platform delivers this event twice at once, to both workers
                    workers[(i + r + 1) % 2].send(**message)
                    sent += 1
            # Every message of this round has arrived (holds its place in its conversation's queue) before
            # the next round is sent; earlier rounds may still be running, so several are in flight.
            drain(workers, queued, "queued", expected_queued)
        drain(workers, replies, "replies", sent)
        # The same events once more, after completion, to the other worker: answered by nobody.
        for i in range(0, CONVERSATIONS, 10):
            c = f"c{i:03d}"
            workers[(i + 1) % 2].send(
                id=f"{c}/late", tenant="tw", user=c, text=f"{c}-a3", delivery_id=f"Ev-{c}-3"
            )
        late: list[dict[str, Any]] = []
        drain(workers, late, "replies", CONVERSATIONS // 10)
    finally:
        for w in workers:
            w.stop()

    assert all(item["duplicate"] and item["reply"] == "" for item in late)
    processed = [item for item in replies if not item["duplicate"]]
    duplicates = [item for item in replies if item["duplicate"]]
    assert len(duplicates) == CONVERSATIONS // 4 and all(d["reply"] == "" for d in duplicates)
    assert sorted(item["id"] for item in processed) == sorted(
        f"c{i:03d}/{r}" for i in range(CONVERSATIONS) for r in range(len(ROUNDS))
    )  # none lost or twice
    assert {item["pid"] for item in processed} == {w.pid for w in workers}
    got: dict[str, list[str]] = {}
    for item in sorted(processed, key=lambda x: int(x["id"].split("/")[1])):
        got.setdefault(item["id"].split("/")[0], []).append(item["reply"])
    assert got == single_process_replies()
    assert got["c007"][-1] == "Survey done: c007-a1 | c007-a2 | c007-a3"

    store = RedisStore(redis_ns.base, keys=redis_ns.keys)
    records = store.snapshot("tw")
    assert len(records) == CONVERSATIONS and all(r.status.value == "completed" for _, r in records)
    pattern = f"{redis_ns.keys.prefix}:conv:*:lock*"
    leftovers = list(redis.Redis.from_url(redis_ns.base).scan_iter(match=pattern))
    assert leftovers == []  # every turn released its place
