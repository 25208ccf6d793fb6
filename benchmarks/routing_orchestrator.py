"""Routing strategies end to end on CLINC150 Full, through `Orchestrator.process` (the public entry point).

One agent per intent, built with `@flowagent(name=intent, triggers=..., examples=...)` from N `train`
utterances of the intent: N = 10 drawn at random with seeds 0-4 (one run per seed, the usual few-shot
protocol; `--selection first` takes the first N in file order) and N = 100 (all of them, one run).
Every `test` (4,500 in-scope) and `oos_test` (1,000 out-of-scope) message goes through
`Orchestrator.process`, one at a time:

- **trigger**: triggers mined from the N training utterances (`flowagents.routing.mining`); the mining
  knobs and the no-match threshold are chosen on `val` + `oos_val`.
- **semantic**: `SemanticRouter(oos_examples=oos_train)` (offline MiniLM int8, one thread, default
  `SemanticConfig`: embeddings + lexical naive Bayes, hidden "none" class trained on `oos_train`), pivot
  calibrated on `val` + `oos_val`.
- **hybrid**: `HybridRouter`: triggers, then semantic (the same default configuration and calibration),
  then the LLM in the uncertain band, then no match. Offline the LLM can only be the loopback fake
  OpenAI server (real `openai` client, real HTTP): it answers "none" to everything, so hybrid figures
  are a *lower bound* of what a real model adds; the share of messages that reached the LLM is
  measured. Its "ceiling" columns say what a perfect model could reach among the agents it was offered
  (test labels used for the report only, never to answer). Measured with the agents' examples only,
  and with examples + mined triggers.
- **llm**: not measurable offline (needs a real model); printed as such.

Selection rule for every knob (same for all strategies): the best `val` in-scope accuracy with at least
90 % `oos_val` recall (`--min-oos-recall`). `test` / `oos_test` are only used for the report.

    .venv/bin/python benchmarks/routing_orchestrator.py            # 10 and 100 examples per intent
    .venv/bin/python benchmarks/routing_orchestrator.py --quick    # 10 examples, one seed, 1/10 of test

Latency: wall-clock per `process()` call (mean, p95) on one pinned core with a single-threaded encoder;
for hybrid it includes the loopback HTTP round trip to the fake server (same process) for the messages
that reach the LLM. Results: a table on stdout and benchmarks/results/routing_orchestrator.json
(`--quick`: routing_orchestrator_quick.json).
Requires the `semantic` extra; embeddings of the examples and of val come from data/cache.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowagents import Orchestrator, StandardAgent, flowagent  # noqa: E402
from flowagents.embeddings.local import LocalEmbedder  # noqa: E402
from flowagents.routing.base import AgentProfile  # noqa: E402
from flowagents.routing.llm import HybridRouter  # noqa: E402
from flowagents.routing.mining import PhraseCounts  # noqa: E402
from flowagents.routing.semantic import SemanticConfig, SemanticRouter  # noqa: E402
from flowagents.routing.triggers import TriggerIndex  # noqa: E402
from flowagents.testing.openai import ChatRequest, FakeOpenAI  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _clinc_selection import SEEDS, sample_n, seeds_for  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "clinc150" / "data_full.json"
OUTPUT = ROOT / "benchmarks" / "results" / "routing_orchestrator.json"

Pairs = list[tuple[str, str]]


# --------------------------------------------------------------------------------------------- data


async def reply(self: StandardAgent, message: str) -> str:
    return "ok"


def build_agents(
    intents: Sequence[str], examples: Mapping[str, Sequence[str]], triggers: Mapping[str, Sequence[str]]
) -> list[type[StandardAgent]]:
    """One `@flowagent` per intent, created through the public API."""
    classes: list[type[StandardAgent]] = []
    for intent in intents:
        cls = type(f"Clinc_{intent}", (StandardAgent,), {"on_running": reply, "__module__": __name__})
        decorate = flowagent(
            name=intent,
            triggers=list(triggers.get(intent, ())),
            examples=list(examples.get(intent, ())),
            description=intent.replace("_", " "),
        )
        classes.append(decorate(cls))
    return classes


# --------------------------------------------------------------------------------------------- tuning


def pick_on_val(rows: list[dict[str, Any]], min_oos_recall: float) -> dict[str, Any]:
    """Best val accuracy with at least `min_oos_recall` oos_val recall; else the best accuracy + recall."""
    ok = [r for r in rows if r["val_oos_recall"] + 1e-12 >= min_oos_recall]
    if ok:
        return max(ok, key=lambda r: (r["val_accuracy"], r["val_oos_recall"]))
    return max(rows, key=lambda r: r["val_accuracy"] + r["val_oos_recall"])


def tune_triggers(
    examples: Mapping[str, Sequence[str]],
    negatives: Sequence[str],
    val: Pairs,
    oos_val: Sequence[str],
    min_oos_recall: float,
    quick: bool,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Mine triggers from the training examples; choose the knobs and the threshold on val."""
    n = max(len(v) for v in examples.values())
    counts = PhraseCounts.of(examples, negatives, max_words=3)
    supports = [1, 2, 3] if n <= 10 else [4, 5, 6, 8]
    precisions = [0.6, 0.7, 0.75, 0.8]
    if quick:
        supports, precisions = supports[:2], precisions[1:3]
    rows = []
    for support in supports:
        for precision in precisions:
            mined = counts.select(max_per_agent=40, min_precision=precision, min_support=support)
            index = TriggerIndex([AgentProfile(a, a, tuple(t)) for a, t in mined.items()])
            decided = [index.decide(t) for t, _ in val]
            rejected_oos = [index.decide(t) for t in oos_val]
            for threshold in (0.5, 0.55):  # 0.55 also rejects ties between two agents' triggers (0.5)
                acc = sum(
                    d is not None and d.confidence >= threshold and d.agent_type == y
                    for d, (_, y) in zip(decided, val, strict=True)
                ) / len(val)
                rec = sum(d is None or d.confidence < threshold for d in rejected_oos) / len(oos_val)
                rows.append(
                    {
                        "min_support": support,
                        "min_precision": precision,
                        "max_per_agent": 40,
                        "max_words": 3,
                        "no_match_threshold": threshold,
                        "val_accuracy": round(acc, 4),
                        "val_oos_recall": round(rec, 4),
                    }
                )
    best = pick_on_val(rows, min_oos_recall)
    mined = counts.select(
        max_per_agent=best["max_per_agent"],
        min_precision=best["min_precision"],
        min_support=best["min_support"],
    )
    best = dict(best, triggers_per_agent=round(statistics.mean(len(v) for v in mined.values()), 1))
    return mined, best


async def tune_band(
    router: SemanticRouter, val: Pairs, oos_val: Sequence[str], target: float
) -> tuple[float, list[dict[str, float]]]:
    """Hybrid `confident_at`: the lowest confidence from which semantic decisions are at least `target`
    precise on val + oos_val (an accepted out-of-scope message counts as a wrong decision)."""
    texts = [t for t, _ in val] + list(oos_val)
    matches = router.classifier.predict(await router.examples_embedder.embed(texts), None, texts)
    n = len(val)
    curve = []
    chosen = None
    for step in range(0, 9):
        cut = round(router.config.threshold + 0.05 * step, 2)
        accepted = [m.confidence >= cut for m in matches]
        right = sum(a and m.best == y for a, m, (_, y) in zip(accepted[:n], matches[:n], val, strict=True))
        precision = right / max(1, sum(accepted))
        curve.append(
            {
                "confident_at": cut,
                "val_precision": round(precision, 4),
                "val_share_decided": round(sum(accepted) / len(accepted), 4),
            }
        )
        if chosen is None and precision >= target:
            chosen = cut
    return (chosen if chosen is not None else curve[-1]["confident_at"]), curve


# --------------------------------------------------------------------------------------------- running


class NoneModel:
    """The fake server's answer: always "none" (never scripted with labels); records what was offered."""

    def __init__(self) -> None:
        self.offered: dict[str, list[str]] = {}

    def __call__(self, request: ChatRequest) -> dict[str, Any]:
        schema = request.json_schema or {}
        self.offered[request.user_text] = list(schema.get("properties", {}).get("agent", {}).get("enum", []))
        return {"reason": "offline benchmark: no real model", "agent": "none", "confidence": 0.9}


async def run_queries(
    orch: Orchestrator, queries: Sequence[str], hybrid: HybridRouter | None
) -> tuple[list[str | None], list[float], list[bool]]:
    """Route every query through `Orchestrator.process`; the agent (None for no match) and ms per query."""
    agents: list[str | None] = []
    millis: list[float] = []
    reached: list[bool] = []
    for i, text in enumerate(queries):
        calls = hybrid.stats.llm_calls if hybrid is not None else 0
        start = time.perf_counter()
        result = await orch.process(text, user_id=f"q{i}")
        millis.append((time.perf_counter() - start) * 1000)
        agents.append(None if result.no_match else result.agent_name)
        reached.append(hybrid is not None and hybrid.stats.llm_calls > calls)
    return agents, millis, reached


def latency(millis: Sequence[float]) -> dict[str, float]:
    if not millis:
        return {"mean": 0.0, "p95": 0.0}
    ordered = sorted(millis)
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
    }


async def measure(
    label: str,
    orch: Orchestrator,
    test: Pairs,
    oos_test: Sequence[str],
    warmup: Sequence[str],
    hybrid: HybridRouter | None = None,
    model: NoneModel | None = None,
) -> dict[str, Any]:
    await orch.initialize()
    await run_queries(orch, warmup, None)
    if hybrid is not None:
        hybrid.stats = type(hybrid.stats)()
    if model is not None:
        model.offered.clear()
    texts = [t for t, _ in test] + list(oos_test)
    cpu = time.process_time()
    agents, millis, reached = await run_queries(orch, texts, hybrid)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(texts)
    n_in = len(test)
    correct = sum(a == y for a, (_, y) in zip(agents[:n_in], test, strict=True))
    rejected = sum(a is None for a in agents[n_in:])
    row: dict[str, Any] = {
        "in_scope_accuracy": round(correct / n_in, 4),
        "oos_recall": round(rejected / len(oos_test), 4),
        "queries": len(texts),
        "ms_per_query": latency(millis),
        "cpu_ms_per_query_mean": round(cpu_ms, 3),
    }
    if hybrid is not None and model is not None:
        s = hybrid.stats
        row["llm_share"] = round(s.llm_share, 4)
        row["stages"] = {
            "trigger": s.trigger_decisions,
            "semantic": s.semantic_decisions,
            "llm": s.llm_calls,
            "no_match_below_band": s.below_band,
            "llm_failures": s.llm_failures,
        }
        row["ms_per_query_without_llm"] = latency([m for m, r in zip(millis, reached, strict=True) if not r])
        row["ms_per_query_with_llm"] = latency([m for m, r in zip(millis, reached, strict=True) if r])
        # What a perfect model could reach, given the agents it was offered (report only, never an answer).
        ceiling_in = correct + sum(
            y in model.offered.get(t, ()) for (t, y), r in zip(test, reached[:n_in], strict=True) if r
        )
        ceiling_oos = rejected  # out-of-scope messages that reached the model are already rejected ("none")
        row["perfect_llm_ceiling"] = {
            "in_scope_accuracy": round(ceiling_in / n_in, 4),
            "oos_recall": round(ceiling_oos / len(oos_test), 4),
        }
        row["in_scope_reaching_llm_with_label_offered"] = round(
            sum(y in model.offered.get(t, ()) for (t, y), r in zip(test, reached[:n_in], strict=True) if r)
            / max(1, sum(reached[:n_in])),
            4,
        )
    print(
        f"  {label:<34} in-scope {100 * row['in_scope_accuracy']:5.1f}  "
        f"OOS recall {100 * row['oos_recall']:5.1f}  "
        f"{row['ms_per_query']['mean']:.2f} ms mean, {row['ms_per_query']['p95']:.2f} p95"
        + (f"  LLM share {100 * row['llm_share']:.1f} %" if "llm_share" in row else ""),
        flush=True,
    )
    await orch.close()
    return row


async def run_size(
    n: int,
    seed: int | None,
    data: dict[str, Any],
    args: argparse.Namespace,
    embedder: LocalEmbedder,
    test: Pairs,
    oos_test: list[str],
) -> list[dict[str, Any]]:
    examples = sample_n(data["train"], n, seed)
    intents = sorted(examples)
    val: Pairs = [(t, y) for t, y in data["val"]]
    oos_val = [t for t, _ in data["oos_val"]]
    oos_train = [t for t, _ in data["oos_train"]]
    warmup = [t for t, _ in val[:: max(1, len(val) // 20)]][:20]
    rows: list[dict[str, Any]] = []
    tag: dict[str, Any] = {"examples_per_intent": n, "seed": seed}
    print(
        f"\n{n} examples per intent, seed {seed} ({len(intents)} agents, {len(test)} + {len(oos_test)} "
        "test queries)",
        flush=True,
    )

    start = time.perf_counter()
    mined, trigger_knobs = tune_triggers(examples, oos_train, val, oos_val, args.min_oos_recall, args.quick)
    print(
        f"  triggers mined and tuned on val in {time.perf_counter() - start:.1f}s: {trigger_knobs}",
        flush=True,
    )
    if "trigger" in args.strategies:
        orch = Orchestrator(
            agents=build_agents(intents, {}, mined),
            routing_strategy="trigger",
            no_match_threshold=trigger_knobs["no_match_threshold"],
        )
        row = await measure("trigger (mined)", orch, test, oos_test, warmup)
        rows.append(
            {"strategy": "trigger", "variant": "mined triggers", **tag, "knobs": trigger_knobs, **row}
        )

    def semantic_router(config: SemanticConfig | None = None) -> SemanticRouter:
        return SemanticRouter(embedder, config=config, cache_dir=args.cache_dir, oos_examples=oos_train)

    if "semantic" in args.strategies:
        router = semantic_router()
        orch = Orchestrator(agents=build_agents(intents, examples, {}), routing_strategy=router)
        start = time.perf_counter()
        await orch.initialize()
        fit_s = time.perf_counter() - start
        pivot = await router.acalibrate(val, oos_val, min_oos_recall=args.min_oos_recall)
        knobs = {
            "config": router.config.model_dump(),
            "oos_examples": "oos_train",
            "pivot": round(pivot, 4),
            "no_match_threshold": router.config.threshold,
            "fit_seconds": round(fit_s, 2),
        }
        print(f"  semantic fitted in {fit_s:.1f}s, pivot chosen on val: {pivot:.3f}", flush=True)
        row = await measure("semantic", orch, test, oos_test, warmup)
        rows.append({"strategy": "semantic", "variant": "examples", **tag, "knobs": knobs, **row})

    if "hybrid" in args.strategies:
        calibrated = semantic_router()
        await calibrated.afit(examples, oos_examples=oos_train)
        pivot = await calibrated.acalibrate(val, oos_val, min_oos_recall=args.min_oos_recall)
        confident_at, band_curve = await tune_band(calibrated, val, oos_val, args.trust_precision)
        print(
            f"  hybrid's semantic stage: pivot chosen on val {pivot:.3f}; confident_at chosen on val: "
            f"{confident_at} (semantic decisions >= {args.trust_precision:.0%} precise)",
            flush=True,
        )
        async with FakeOpenAI() as fake:
            variants = [
                ("examples, default band", {}, args.confident_at),
                ("examples, band tuned on val", {}, confident_at),
                ("examples + mined triggers, band tuned on val", mined, confident_at),
            ]
            if args.quick:
                variants = variants[1:2]
            for variant, triggers, band_top in variants:
                model = NoneModel()
                fake.default = model
                semantic = semantic_router()
                hybrid = HybridRouter(
                    fake.client(timeout=30.0),
                    semantic=semantic,
                    top_k=args.top_k,
                    confident_at=band_top,
                    ask_llm_from=min(args.ask_llm_from, band_top),
                    timeout=30.0,
                )
                orch = Orchestrator(
                    llm_client=hybrid.llm_router.llm,
                    agents=build_agents(intents, examples, triggers),
                    routing_strategy=hybrid,
                )
                await orch.initialize()
                semantic.config.pivot = pivot  # the pivot chosen on val above (same fit, same examples)
                row = await measure(f"hybrid ({variant})", orch, test, oos_test, warmup, hybrid, model)
                hknobs: dict[str, Any] = {
                    "semantic_config": semantic.config.model_dump(),
                    "pivot": pivot,
                    "confident_at": hybrid.confident_at,
                    "ask_llm_from": hybrid.ask_llm_from,
                    "top_k": hybrid.top_k,
                    "llm": "fake server answering 'none'",
                }
                if band_top == confident_at:
                    hknobs["confident_at_rule"] = f"lowest with val precision >= {args.trust_precision}"
                    hknobs["val_band_curve"] = band_curve
                if triggers:
                    hknobs["triggers"] = trigger_knobs
                rows.append({"strategy": "hybrid", "variant": variant, **tag, "knobs": hknobs, **row})
    rows.append(
        {"strategy": "llm", "variant": "-", **tag, "note": "not measurable offline (needs a real model)"}
    )
    print("  llm                                not measurable offline (needs a real model)", flush=True)
    return rows


def mean_over_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (examples, strategy, variant): metrics averaged over seeds, with their min and max."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["examples_per_intent"], r["strategy"], r["variant"]), []).append(r)
    out = []
    for (n, strategy, variant), rs in groups.items():
        row: dict[str, Any] = {
            "examples_per_intent": n,
            "strategy": strategy,
            "variant": variant,
            "runs": len(rs),
        }
        if "note" in rs[0]:
            out.append({**row, "note": rs[0]["note"]})
            continue
        for key in ("in_scope_accuracy", "oos_recall", "llm_share"):
            if key in rs[0]:
                values = [r[key] for r in rs]
                row[key] = round(statistics.fmean(values), 4)
                row[f"{key}_range"] = [min(values), max(values)]
        row["ms_per_query"] = {
            k: round(statistics.fmean(r["ms_per_query"][k] for r in rs), 3) for k in ("mean", "p95")
        }
        if "perfect_llm_ceiling" in rs[0]:
            row["perfect_llm_ceiling"] = {
                k: round(statistics.fmean(r["perfect_llm_ceiling"][k] for r in rs), 4)
                for k in ("in_scope_accuracy", "oos_recall")
            }
        out.append(row)
    return out


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of `mean_over_seeds` rows (min-max over seeds in brackets)."""
    lines = [
        "| examples/intent | runs | strategy | in-scope acc % | OOS recall % | ms/query mean | ms/query p95 "
        "| LLM share % | perfect-LLM ceiling (in-scope / OOS) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]

    def cell(r: dict[str, Any], key: str) -> str:
        low, high = r[f"{key}_range"]
        spread = f" ({100 * low:.1f}-{100 * high:.1f})" if r["runs"] > 1 else ""
        return f"{100 * r[key]:.1f}{spread}"

    for r in rows:
        name = r["strategy"] if r["variant"] in ("-", "examples") else f"{r['strategy']} ({r['variant']})"
        head = f"| {r['examples_per_intent']} | {r['runs']} | {name} |"
        if "note" in r:
            lines.append(f"{head} {r['note']} | | | | | |")
            continue
        ceiling = r.get("perfect_llm_ceiling")
        lines.append(
            f"{head} {cell(r, 'in_scope_accuracy')} | {cell(r, 'oos_recall')} | "
            f"{r['ms_per_query']['mean']:.2f} | {r['ms_per_query']['p95']:.2f} | "
            + (f"{100 * r['llm_share']:.1f}" if "llm_share" in r else "-")
            + " | "
            + (
                f"{100 * ceiling['in_scope_accuracy']:.1f} / {100 * ceiling['oos_recall']:.1f}"
                if ceiling
                else "-"
            )
            + " |"
        )
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> None:
    data = json.loads(args.data.read_text(encoding="utf-8"))
    test: Pairs = [(t, y) for t, y in data["test"]]
    oos_test = [t for t, _ in data["oos_test"]]
    if args.quick:
        test, oos_test = test[::10], oos_test[::10]
    start = time.perf_counter()
    embedder = LocalEmbedder(threads=1)
    load_s = time.perf_counter() - start
    print(f"encoder loaded in {load_s:.1f}s (one thread); pinned to CPU {args.cpu}", flush=True)
    rows: list[dict[str, Any]] = []
    for n in args.examples:
        for seed in seeds_for(data["train"], n, args.selection, args.seeds):
            rows += await run_size(n, seed, data, args, embedder, test, oos_test)
    summary = mean_over_seeds(rows)
    print()
    print(table(summary))
    report = {
        "dataset": "CLINC150 Full (data_full.json)",
        "entry_point": "Orchestrator.process, one @flowagent per intent",
        "selection": (
            f"N train utterances per intent drawn at random, seeds {args.seeds} (all of them at 100)"
            if args.selection == "random"
            else "first N train utterances per intent"
        ),
        "summary": summary,
        "tuning": f"on val + oos_val only: best val accuracy with oos_val recall >= {args.min_oos_recall}",
        "test_queries": {"in_scope": len(test), "out_of_scope": len(oos_test), "quick": args.quick},
        "hybrid_llm": "loopback fake OpenAI server answering 'none' (lower bound); ceiling = perfect model "
        "among the offered agents",
        "encoder": embedder.model_id,
        "threads": 1,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "pinned_cpu": args.cpu,
            "load_average": os.getloadavg(),
        },
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--examples", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["trigger", "semantic", "hybrid"],
        choices=["trigger", "semantic", "hybrid"],
    )
    parser.add_argument(
        "--selection",
        choices=["random", "first"],
        default="random",
        help="N examples per intent drawn at random (one run per seed; default) or the first N in file order",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--quick", action="store_true", help="10 examples per intent, every 10th test query")
    parser.add_argument("--min-oos-recall", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=5, help="hybrid: semantic candidates offered to the LLM")
    parser.add_argument("--confident-at", type=float, default=0.7, help="hybrid default band top")
    parser.add_argument(
        "--trust-precision",
        type=float,
        default=0.95,
        help="hybrid tuned band: semantic decides alone where it is this precise on val",
    )
    parser.add_argument("--ask-llm-from", type=float, default=0.3)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "cache")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args()
    if args.quick:
        args.examples = [10]
        args.seeds = args.seeds[:1]
        if args.output == OUTPUT:
            args.output = OUTPUT.with_name("routing_orchestrator_quick.json")
    args.cpu = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        args.cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {args.cpu})
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
