"""Orchestrator overhead on the seeded workload (../shared/bench), against a hand-written floor.

One measurement per fresh process, pinned to one core; 3 runs per configuration, medians reported.

    python benchmarks/orchestrator_speed.py                 # the full table (N = 10, 100, 1000)
    python benchmarks/orchestrator_speed.py --quick         # N = 100 only, one run each
    python benchmarks/orchestrator_speed.py --one flowagents A 100 perf   # a single measurement (JSON)

The floor is what WORKLOAD.md describes: a dict for state, a token trie for triggers and one
`async def handle()` per message. flowagents is driven only through `Orchestrator.process` (or
`process_stream`), with one `@flowagent` per intent built through the public API.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
WORKLOAD = HERE / "workload"
RESULTS = HERE / "results"
TIME_CAP = 30.0

Handle = Callable[[str, str, str], Awaitable[str]]


# --------------------------------------------------------------------------------------------- workload


def ensure_workload() -> Path:
    """Generate the seeded workload once and check its checksums."""
    sums = WORKLOAD / "SHA256SUMS"
    if not sums.exists():
        subprocess.run(
            [sys.executable, str(SHARED_BENCH / "gen_workload.py"), "--out", str(WORKLOAD)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    for line in sums.read_text().splitlines():
        digest, name = line.split()
        if hashlib.sha256((WORKLOAD / name).read_bytes()).hexdigest() != digest:
            raise SystemExit(f"workload file {name} does not match SHA256SUMS; delete {WORKLOAD} and rerun")
    return WORKLOAD


def load_intents(n: int) -> tuple[list[dict[str, Any]], str]:
    data = json.loads((WORKLOAD / "intents.json").read_text())
    return data["intents"][:n], data["fallback_reply"]


def load_stream(name: str) -> list[dict[str, Any]]:
    with open(WORKLOAD / name) as f:
        return [json.loads(line) for line in f]


# --------------------------------------------------------------------------------------------- the floor

_TOKEN = re.compile(r"[a-z0-9']+")


def build_floor(intents: list[dict[str, Any]], fallback: str, scenario: str) -> Handle:
    """The hand-written floor: a token trie, a dict of state, one async handle()."""
    trie: dict[str, Any] = {}
    for it in intents:
        for phrase in it["triggers"]:
            node = trie
            for tok in _TOKEN.findall(phrase.lower()):
                node = node.setdefault(tok, {})
            node["\0"] = it
    state: dict[tuple[str, str], list[Any]] = {}

    def match(text: str) -> dict[str, Any] | None:
        toks = _TOKEN.findall(text.lower())
        for i in range(len(toks)):
            node = trie
            for tok in toks[i:]:
                node = node.get(tok)  # type: ignore[assignment]
                if node is None:
                    break
                hit = node.get("\0")
                if hit is not None:
                    return hit  # type: ignore[no-any-return]
        return None

    async def handle(tenant: str, user: str, text: str) -> str:
        key = (tenant, user)
        conv = state.get(key)
        if conv is not None:
            it, values = conv
            values.append(text)
            if len(values) == 1:
                return it["slots"][1]["question"]  # type: ignore[no-any-return]
            del state[key]
            return it["confirm_template"].format(quantity=values[0], when=values[1])  # type: ignore[no-any-return]
        it = match(text)
        if it is None:
            return fallback
        if scenario == "A":
            return it["reply"]  # type: ignore[no-any-return]
        state[key] = [it, []]
        return it["slots"][0]["question"]  # type: ignore[no-any-return]

    return handle


# --------------------------------------------------------------------------------------------- flowagents


def build_flowagents(
    intents: list[dict[str, Any]], fallback: str, scenario: str, api: str, store_url: str
) -> tuple[Handle, Any]:
    """One agent per intent through the public API; replies read from `process` or `process_stream`."""
    from _workload_agents import fallback_orchestrator, workload_agents

    from flowagents import MessageChunkEvent

    agents = workload_agents(intents, scenario)
    BenchOrchestrator = fallback_orchestrator(fallback)

    store = isolation = None
    if store_url != "memory":
        from flowagents.storage.url import store_from_url

        store, isolation = store_from_url(_fresh(store_url))
    orch = BenchOrchestrator(agents=agents, store=store, isolation=isolation)

    if api == "process":

        async def handle(tenant: str, user: str, text: str) -> str:
            return (await orch.process(text, tenant_id=tenant, user_id=user)).raw_message

    else:

        async def handle(tenant: str, user: str, text: str) -> str:
            parts = [
                e.content
                async for e in orch.process_stream(text, tenant_id=tenant, user_id=user)
                if isinstance(e, MessageChunkEvent)
            ]
            return "".join(parts)

    return handle, orch


async def build(
    impl: str, intents: list[dict[str, Any]], fallback: str, scenario: str, api: str, store_url: str
) -> tuple[Handle, Any]:
    """The floor's or flowagents' handle (initialized) and the orchestrator (None for the floor)."""
    if impl == "floor":
        return build_floor(intents, fallback, scenario), None
    handle, orch = build_flowagents(intents, fallback, scenario, api, store_url)
    await orch.initialize()
    return handle, orch


def _fresh(store_url: str) -> str:
    """The same kind of store, but empty: a new SQLite file, or a Redis key prefix of this process."""
    if store_url.startswith("sqlite:"):
        return f"sqlite:///{tempfile.mkdtemp(prefix='fa-bench-')}/state.sqlite3"
    if store_url.startswith("redis"):
        return f"{store_url}{'&' if '?' in store_url else '?'}prefix=fa-bench-{os.getpid()}"
    return store_url


def _drop_redis_prefix(store_url: str) -> None:
    import redis

    client = redis.Redis.from_url(store_url.split("?")[0])
    keys = list(client.scan_iter(match=f"fa-bench-{os.getpid()}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


# ------------------------------------------------------------------------------------------ one measurement


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(impl: str, scenario: str, n: int, mode: str, api: str, store_url: str) -> dict[str, Any]:
    intents, fallback = load_intents(n)
    logic = "B" if mode in ("mem", "memtrace") else scenario
    stream = (
        load_stream(f"stream_{logic}_N{n}.jsonl") if mode == "perf" else load_stream(f"stream_B_N{n}.jsonl")
    )
    opened = load_stream(f"open_N{n}.jsonl") if mode != "perf" else []
    handle, orch = await build(impl, intents, fallback, logic, api, store_url)
    out: dict[str, Any] = {
        "impl": impl,
        "scenario": logic,
        "n": n,
        "mode": mode,
        "api": api,
        "store": store_url,
    }
    if mode == "perf":
        warm_deadline = time.perf_counter() + min(10.0, TIME_CAP / 4)
        for m in stream[:1000]:
            await handle("w" + m["tenant_id"], m["user_id"], m["text"])
            if time.perf_counter() > warm_deadline:
                break
        gc.collect()
        lat: list[float] = []
        errors = 0
        pc = time.perf_counter
        start = pc()
        for m in stream:
            t0 = pc()
            reply = await handle(m["tenant_id"], m["user_id"], m["text"])
            t1 = pc()
            lat.append(t1 - t0)
            if reply != m["expect"]:
                errors += 1
                if errors <= 3:
                    print(f"mismatch seq={m['seq']}: {reply!r} != {m['expect']!r}", file=sys.stderr)
            if t1 - start > TIME_CAP:
                break
        wall = pc() - start
        lat.sort()
        out.update(
            messages=len(lat),
            errors=errors,
            msgs_per_s=len(lat) / wall,
            p50_us=lat[int(0.5 * (len(lat) - 1))] * 1e6,
            p99_us=lat[int(0.99 * (len(lat) - 1))] * 1e6,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
    else:
        for m in stream[:200]:
            await handle(m["tenant_id"], m["user_id"], m["text"])
        gc.collect()
        if mode == "memtrace":
            import tracemalloc

            tracemalloc.start()
        before = _rss_kb()
        errors = 0
        for m in opened:
            if await handle(m["tenant_id"], m["user_id"], m["text"]) != m["expect"]:
                errors += 1
        gc.collect()
        conversations = len(opened) // 2
        if mode == "memtrace":
            import tracemalloc

            traced, _ = tracemalloc.get_traced_memory()
            out["bytes_per_conversation"] = traced / conversations
        else:
            out["bytes_per_conversation"] = (_rss_kb() - before) * 1024 / conversations
        out["errors"] = errors
    if orch is not None:
        await orch.close()
        if store_url.startswith("redis"):
            _drop_redis_prefix(store_url)
    return out


# --------------------------------------------------------------------------------------------- the table


def run_one(impl: str, scenario: str, n: int, mode: str, api: str, store: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", impl, scenario, str(n), mode, "--api", api, "--store", store]
    taskset = ["taskset", "-c", "1"] if os.cpu_count() and os.cpu_count() > 1 else []  # type: ignore[operator]
    proc = subprocess.run(taskset + cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for k in ("msgs_per_s", "p50_us", "p99_us", "peak_rss_mb", "bytes_per_conversation"):
        if k in out:
            out[k] = statistics.median(r[k] for r in runs)
    out["errors"] = max(r["errors"] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=4, metavar=("IMPL", "SCENARIO", "N", "MODE"))
    ap.add_argument("--api", default="process", choices=["process", "stream"])
    ap.add_argument("--store", default="memory")
    ap.add_argument("--quick", action="store_true", help="N=100 only, one run each")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stores", default="", help="comma-separated extra store URLs to measure at N=100")
    args = ap.parse_args()
    ensure_workload()
    if args.one:
        impl, scenario, n, mode = args.one
        print(json.dumps(asyncio.run(measure(impl, scenario, int(n), mode, args.api, args.store))))
        return
    runs = 1 if args.quick else args.runs
    ns = [100] if args.quick else [10, 100, 1000]
    rows: list[dict[str, Any]] = []

    def med(
        impl: str, scenario: str, n: int, mode: str, api: str = "process", store: str = "memory"
    ) -> dict[str, Any]:
        return median_of([run_one(impl, scenario, n, mode, api, store) for _ in range(runs)])

    print(f"{'config':42} {'msgs/s':>10} {'p50 us':>8} {'p99 us':>8} {'RSS MB':>7} {'err':>4} {'x floor':>8}")
    for scenario in ("A", "B"):
        for n in ns:
            floor = med("floor", scenario, n, "perf")
            for api in ("process", "stream"):
                fa = med("flowagents", scenario, n, "perf", api)
                fa["slowdown_vs_floor"] = floor["msgs_per_s"] / fa["msgs_per_s"]
                rows += [floor, fa] if api == "process" else [fa]
                for r in ([floor] if api == "process" else []) + [fa]:
                    label = f"{r['impl']}:{r['api'] if r['impl'] != 'floor' else ''} {scenario} N={n}"
                    print(
                        f"{label:42} {r['msgs_per_s']:>10,.0f} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} "
                        f"{r['peak_rss_mb']:>7.1f} {r['errors']:>4} "
                        f"{r.get('slowdown_vs_floor', 1.0):>8.2f}"
                    )
    for store in [s for s in args.stores.split(",") if s]:
        for scenario in ("A", "B"):
            r = med("flowagents", scenario, 100, "perf", "process", store)
            rows.append(r)
            print(
                f"{'flowagents ' + store + ' ' + scenario + ' N=100':42} {r['msgs_per_s']:>10,.0f} "
                f"{r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['peak_rss_mb']:>7.1f} {r['errors']:>4}"
            )
    print(f"\n{'memory per open conversation (10,000 open)':42} {'RSS B':>10} {'traced B':>10}")
    for n in ns:
        for impl in ("floor", "flowagents"):
            rss = med(impl, "B", n, "mem")
            traced = run_one(impl, "B", n, "memtrace", "process", "memory")
            rss["bytes_traced"] = traced["bytes_per_conversation"]
            rows.append(rss)
            label = f"{impl} N={n}"
            rss_b, traced_b = rss["bytes_per_conversation"], traced["bytes_per_conversation"]
            print(f"{label:42} {rss_b:>10,.0f} {traced_b:>10,.0f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orchestrator_speed.json").write_text(json.dumps(rows, indent=1))
    print(f"\nwritten {RESULTS / 'orchestrator_speed.json'}")


if __name__ == "__main__":
    main()
