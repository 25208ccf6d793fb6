"""`make bench`: every benchmark in sequence, each in its own process, output streamed as it comes.

    .venv/bin/python benchmarks/run_all.py            # full runs (several minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # smoke runs
    .venv/bin/python benchmarks/run_all.py --only routing_orchestrator stores

Runs routing_quality.py, routing_orchestrator.py, orchestrator_speed.py, orchestrator_instructions.py
and stores.py, then collects their JSON results into benchmarks/results/summary.json (with each run's
exit code and duration).
A failing benchmark does not stop the others; the exit code is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    result: str
    quick_result: str | None = None
    """Where the quick run writes, when it does not overwrite the full results."""


BENCHES = (
    Bench(
        "routing_quality",
        (),
        (
            "--examples",
            "10",
            "--variants",
            "default",
            "--output",
            "benchmarks/results/routing_quality_quick.json",
        ),
        "routing_quality.json",
        "routing_quality_quick.json",
    ),
    Bench(
        "routing_orchestrator",
        (),
        ("--quick",),
        "routing_orchestrator.json",
        "routing_orchestrator_quick.json",
    ),
    Bench("orchestrator_speed", (), ("--quick",), "orchestrator_speed.json"),
    Bench(
        "orchestrator_instructions",
        ("--n", "10", "100", "1000"),
        ("--n", "100"),
        "orchestrator_instructions.json",
    ),
    Bench("stores", (), ("--messages", "500", "--open", "500"), "stores.json"),
)


def run(bench: Bench, quick: bool) -> dict[str, Any]:
    """Run one benchmark script, streaming its output; its exit code, duration and results file."""
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *(bench.quick_args if quick else bench.args)]
    print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
    result_file = RESULTS / (bench.quick_result if quick and bench.quick_result else bench.result)
    before = result_file.stat().st_mtime if result_file.exists() else None
    start = time.perf_counter()
    code = subprocess.run(command, cwd=HERE.parent, check=False).returncode  # inherits stdout/stderr
    seconds = time.perf_counter() - start
    entry: dict[str, Any] = {"command": command[1:], "exit_code": code, "seconds": round(seconds, 1)}
    fresh = result_file.exists() and result_file.stat().st_mtime != before
    if code == 0 and fresh:
        entry["results_file"] = str(result_file.relative_to(HERE.parent))
        entry["results"] = json.loads(result_file.read_text(encoding="utf-8"))
    elif code == 0:
        entry["error"] = f"{result_file.name} was not written"
    print(f"=== {bench.name}: exit {code} in {seconds:.0f}s", flush=True)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke runs (each benchmark's quick setting)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], help="run only these")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    summary: dict[str, Any] = {
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "benchmarks": {},
    }
    for bench in chosen:
        summary["benchmarks"][bench.name] = run(bench, args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    failed = [
        name for name, entry in summary["benchmarks"].items() if entry["exit_code"] != 0 or "error" in entry
    ]
    print(f"\nwrote {RESULTS / 'summary.json'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
