"""Orchestrator overhead counted in CPU instructions (callgrind), against the hand-written floor.

Wall-clock figures on a shared 2-core machine move by 2x from run to run; instruction counts do not.
Each configuration replays the seeded workload's first messages under `valgrind --tool=callgrind`
twice (LONG and SHORT messages, same start-up and warm-up), so the difference divided by LONG - SHORT
is what one message costs, start-up excluded. `PYTHONHASHSEED=0` makes the counts repeatable.

    python benchmarks/orchestrator_instructions.py            # N = 100, floor / process / stream
    python benchmarks/orchestrator_instructions.py --n 10 100 1000

Needs valgrind (on every machine of this project's kind); prints a note and exits 0 without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import orchestrator_speed as speed  # noqa: E402

LONG, SHORT = 3000, 600
RESULTS = HERE / "results"


async def replay(impl: str, scenario: str, n: int, api: str, limit: int) -> None:
    """Warm up on 200 messages of other tenants, then replay the first `limit` messages (replies checked)."""
    intents, fallback = speed.load_intents(n)
    stream = speed.load_stream(f"stream_{scenario}_N{n}.jsonl")
    handle, orch = await speed.build(impl, intents, fallback, scenario, api, "memory")
    for m in stream[:200]:
        await handle("w" + m["tenant_id"], m["user_id"], m["text"])
    errors = 0
    for m in stream[:limit]:
        if await handle(m["tenant_id"], m["user_id"], m["text"]) != m["expect"]:
            errors += 1
    if orch is not None:
        await orch.close()
    if errors:
        raise SystemExit(f"{errors} wrong replies")


def count(impl: str, scenario: str, n: int, api: str, limit: int) -> int:
    """Instructions of one replay process, counted by callgrind."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--replay",
        impl,
        scenario,
        str(n),
        api,
        str(limit),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def per_message(impl: str, scenario: str, n: int, api: str) -> float:
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two runs on the machine's two cores
        long_run = pool.submit(count, impl, scenario, n, api, LONG)
        short_run = pool.submit(count, impl, scenario, n, api, SHORT)
        return (long_run.result() - short_run.result()) / (LONG - SHORT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100])
    ap.add_argument("--replay", nargs=5, metavar=("IMPL", "SCENARIO", "N", "API", "LIMIT"))
    args = ap.parse_args()
    speed.ensure_workload()
    if args.replay:
        impl, scenario, n, api, limit = args.replay
        asyncio.run(replay(impl, scenario, int(n), api, int(limit)))
        return
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return
    rows: list[dict[str, Any]] = []
    print(f"{'scenario':9} {'N':>5} {'floor':>9} {'process':>9} {'x floor':>8} {'stream':>9} {'x floor':>8}")
    for scenario in ("A", "B"):
        for n in args.n:
            floor = per_message("floor", scenario, n, "process")
            process = per_message("flowagents", scenario, n, "process")
            stream = per_message("flowagents", scenario, n, "stream")
            rows.append({"scenario": scenario, "n": n, "floor": floor, "process": process, "stream": stream})
            print(
                f"{scenario:9} {n:>5} {floor:>9,.0f} {process:>9,.0f} {process / floor:>8.2f} "
                f"{stream:>9,.0f} {stream / floor:>8.2f}"
            )
    print("(instructions per message)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orchestrator_instructions.json").write_text(json.dumps(rows, indent=1))
    print(f"written {RESULTS / 'orchestrator_instructions.json'}")


if __name__ == "__main__":
    main()
