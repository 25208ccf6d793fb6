"""Conversation stores on the same slot-filling workload: messages/s and bytes per open conversation.

    python benchmarks/stores.py                  # memory, SQLite, Redis (db 14), PostgreSQL if reachable
    python benchmarks/stores.py --messages 3000  # a longer replay
    python benchmarks/stores.py --one redis      # a single measurement (JSON), used internally

Workload: ../shared/bench (scenario B, N=10 intents, two free-text slots), replayed closed-loop, one
message at a time through `Orchestrator.process`, every reply checked against `expect`. Each message
carries a delivery id (as Slack/Discord events do), so a turn costs: claim the delivery, take the
conversation lock, load, save, release, finish the delivery. Each store runs in a fresh process.

Bytes per open conversation: replay the trigger and first answer of `--open` distinct conversations
(each left waiting for its second slot) and divide what the store grew by their number:
memory = Python heap (tracemalloc), SQLite = database pages after a WAL checkpoint, Redis = `MEMORY USAGE`
of the conversation keys, PostgreSQL = `pg_total_relation_size` of the conversations table.
Results: a table on stdout and benchmarks/results/stores.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "workload"
RESULTS = HERE / "results"
SHARED_BENCH = HERE.parent.parent / "shared" / "bench"
REDIS_URL = "redis://127.0.0.1:6379/14"
PG_URL = os.environ.get("FLOWAGENTS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ["memory", "sqlite", "redis", "postgres"]


def ensure_workload() -> Path:
    if not (WORKLOAD / "stream_B_N10.jsonl").exists():
        subprocess.run(
            [sys.executable, str(SHARED_BENCH / "gen_workload.py"), "--out", str(WORKLOAD)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return WORKLOAD


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def build(store_url: str, tmp: Path) -> Any:
    """An orchestrator with one two-slot agent per intent (N=10), on the given store."""
    from _workload_agents import fallback_orchestrator, workload_agents

    from flowagents.storage.postgres import PostgresStore
    from flowagents.storage.url import store_from_url

    data = json.loads((WORKLOAD / "intents.json").read_text())
    agents = workload_agents(data["intents"][:10], "B")
    BenchOrchestrator = fallback_orchestrator(data["fallback_reply"])

    store, isolation = store_from_url(store_url)
    if isinstance(store, PostgresStore):
        store = PostgresStore(store_url, table_prefix=f"bench{os.getpid()}_")
    return BenchOrchestrator(agents=agents, store=store, isolation=isolation)


def url_of(kind: str, tmp: Path) -> str:
    return {
        "memory": "memory",
        "sqlite": f"sqlite:///{tmp}/bench.sqlite3",
        "redis": f"{REDIS_URL}?prefix=bench{os.getpid()}",
        "postgres": PG_URL,
    }[kind]


async def store_bytes(kind: str, orch: Any, tmp: Path) -> float:
    """What the store holds now, in bytes (see the module docstring)."""
    store = orch.store
    if kind == "sqlite":
        assert store._db is not None
        await store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        async with store._db.execute("PRAGMA page_count") as cur:
            pages = (await cur.fetchone())[0]
        async with store._db.execute("PRAGMA page_size") as cur:
            size = (await cur.fetchone())[0]
        return float(pages * size)
    if kind == "redis":
        total = 0
        async for name in store.client.scan_iter(match=f"{store.keys.prefix}:conv:*", count=1000):
            total += await store.client.memory_usage(name) or 0
        return float(total)
    if kind == "postgres":
        assert store._pool is not None
        sql = f"SELECT pg_total_relation_size('{store.prefix}conversations')"
        return float(await store._pool.fetchval(sql))
    return float(tracemalloc.get_traced_memory()[0])


async def measure(kind: str, messages: int, open_count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        orch = build(url_of(kind, tmp), tmp)
        await orch.initialize()
        try:
            lines = (WORKLOAD / "stream_B_N10.jsonl").read_text().splitlines()[:messages]
            stream = [json.loads(line) for line in lines]
            for m in stream[:200]:  # warm-up in a disjoint key space
                await orch.process(m["text"], tenant_id="w" + m["tenant_id"], user_id=m["user_id"])
            gc.collect()
            errors = 0
            latencies = []
            start = time.perf_counter()
            for m in stream:
                t0 = time.perf_counter()
                result = await orch.process(
                    m["text"], tenant_id=m["tenant_id"], user_id=m["user_id"], delivery_id=f"ev-{m['seq']}"
                )
                latencies.append(time.perf_counter() - t0)
                errors += result.raw_message != m["expect"]
            wall = time.perf_counter() - start
            latencies.sort()

            opens = [json.loads(line) for line in (WORKLOAD / "open_N10.jsonl").read_text().splitlines()]
            half = len(opens) // 2
            probe = opens[:open_count] + opens[half : half + open_count]  # triggers, then first answers
            gc.collect()
            if kind == "memory":
                tracemalloc.start()
            before = await store_bytes(kind, orch, tmp)
            for m in probe:
                await orch.process(m["text"], tenant_id="o" + m["tenant_id"], user_id=m["user_id"])
            gc.collect()
            after = await store_bytes(kind, orch, tmp)
            if kind == "memory":
                tracemalloc.stop()
            waiting = sum(1 for a in orch.get_active_agents() if a.tenant_id.startswith("o"))
        finally:
            if kind == "redis":  # only this run's keys: never FLUSHDB a shared database
                names = [n async for n in orch.store.client.scan_iter(match=f"{orch.store.keys.prefix}:*")]
                for start in range(0, len(names), 500):
                    await orch.store.client.delete(*names[start : start + 500])
            if kind == "postgres" and orch.store._pool is not None:
                await orch.store._pool.execute(
                    f"DROP TABLE {orch.store.prefix}conversations, {orch.store.prefix}deliveries"
                )
            await orch.close()
    return {
        "store": kind,
        "messages": len(stream),
        "errors": errors,
        "msgs_per_s": round(len(stream) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
        "open_conversations": waiting,
        "bytes_per_open_conversation": round((after - before) / max(waiting, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--open", type=int, default=2000, dest="open_count")
    parser.add_argument("--one", choices=STORES)
    args = parser.parse_args()
    ensure_workload()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one, args.messages, args.open_count))))
        return
    rows = []
    for kind in STORES:
        if (kind == "redis" and not reachable(6379)) or (kind == "postgres" and not reachable(5432)):
            print(f"{kind}: not reachable, skipped", file=sys.stderr)
            continue
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                kind,
                "--messages",
                str(args.messages),
                "--open",
                str(args.open_count),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'store':<10}{'msgs/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}{'bytes/open conv':>17}")
    for r in rows:
        print(
            f"{r['store']:<10}{r['msgs_per_s']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['errors']:>8}"
            f"{r['bytes_per_open_conversation']:>17}"
        )
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "workload": "stream_B_N10 (closed loop, delivery ids) + open_N10 probe",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "note": "shared 2-core machine; compare stores within one run",
    }
    (RESULTS / "stores.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
