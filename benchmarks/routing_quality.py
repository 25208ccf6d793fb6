"""Semantic routing quality on CLINC150 Full (Larson et al., 2019), offline, one thread.

For 10 and 100 examples per intent, fit the semantic router, choose the no-match pivot on `val` +
`oos_val` only, then report on `test` (4,500 in-scope; a rejected in-scope query counts as wrong) and
`oos_test` (1,000 out-of-scope; recall). The N examples of each intent are drawn at random from its
`train` utterances with seeds 0-4 (the usual few-shot protocol, e.g. DNNC and CPFT on CLINC150) and
the table gives the mean over seeds (min-max beside it); 100 per intent is the whole training split, so
one run. `--selection first` takes the first N in file order instead (CLINC's first utterances of an
intent are near-paraphrases of each other, a harder and less usual setting). The "default" variant
also trains the router's hidden "none" class on `oos_train` (`SemanticRouter(oos_examples=...)`).

    .venv/bin/python benchmarks/routing_quality.py            # both sizes, prints a table
    .venv/bin/python benchmarks/routing_quality.py --examples 10 --variants default

Embeddings of every CLINC sentence are cached under data/cache/ (the first run embeds ~23,700
sentences, about 1.5 minutes on one core). Latency is measured without the cache: embedding plus
classification of single messages, one at a time, on one thread. Results go to
benchmarks/results/routing_quality.json. Requires the `semantic` extra.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowagents.embeddings.cache import CachedEmbedder, EmbeddingCache  # noqa: E402
from flowagents.embeddings.local import LocalEmbedder  # noqa: E402
from flowagents.routing.semantic import SemanticConfig, SemanticMatch, SemanticRouter  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from _clinc_selection import SEEDS, sample_n, seeds_for  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "clinc150" / "data_full.json"

EMBEDDINGS_ONLY = SemanticConfig(lexical_weight=0.0)
VARIANTS: dict[str, tuple[SemanticConfig, bool, bool]] = {
    # name: (config, train a "none" class on CLINC's oos_train, choose the pivot on val)
    "default": (SemanticConfig(), True, True),
    "default-uncalibrated": (SemanticConfig(), True, False),
    "no-oos-class": (SemanticConfig(), False, True),
    "embeddings-only": (EMBEDDINGS_ONLY, True, True),
    "previous": (EMBEDDINGS_ONLY, False, True),  # the configuration before the lexical part and none class
    "centroid": (SemanticConfig(head="centroid"), False, True),
    "nearest": (SemanticConfig(head="nearest"), False, True),
}
DEFAULT_VARIANTS = ["default", "default-uncalibrated", "no-oos-class", "embeddings-only", "previous"]


def score(matches: list[SemanticMatch], labels: list[str], oos: list[SemanticMatch]) -> dict[str, float]:
    """In-scope accuracy (rejections are wrong), OOS recall, and top-1 accuracy without rejection."""
    acc = sum(m.agent == y for m, y in zip(matches, labels, strict=True)) / len(labels)
    top1 = sum(m.best == y for m, y in zip(matches, labels, strict=True)) / len(labels)
    recall = sum(m.agent is None for m in oos) / len(oos)
    return {"in_scope_accuracy": acc, "oos_recall": recall, "top1_accuracy": top1}


def latency(router: SemanticRouter, raw: LocalEmbedder, texts: list[str]) -> dict[str, float]:
    """Milliseconds per message: embedding (uncached) + classification, one message at a time.

    Wall-clock and CPU time (`time.process_time`) are both given: on a shared machine the wall clock
    also counts time spent waiting for the core.
    """
    timed = SemanticRouter(raw, config=router.config)
    timed.classifier = router.classifier
    for t in texts[:20]:
        timed.predict(t)
    total, classify = [], []
    vectors = raw.embed_sync(texts)
    cpu_start = time.process_time()
    for t in texts:
        start = time.perf_counter()
        timed.predict(t)
        total.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / len(texts)
    for i in range(len(texts)):
        start = time.perf_counter()
        router.classifier.predict(vectors[i : i + 1])
        classify.append((time.perf_counter() - start) * 1000)
    total.sort()
    return {
        "ms_per_query_median": statistics.median(total),
        "ms_per_query_p95": total[int(0.95 * (len(total) - 1))],
        "cpu_ms_per_query_mean": cpu_ms,
        "ms_classify_only_median": statistics.median(classify),
    }


def selection_name(selection: str, seeds: list[int | None]) -> str:
    if seeds != [None]:
        return f"N per intent drawn at random, seeds {seeds}"
    return "first N in file order" if selection == "first" else "all train utterances of each intent"


def aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean, min and max of each metric over seeds."""
    out: dict[str, float] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = round(statistics.fmean(values), 4)
        out[f"{key}_min"] = round(min(values), 4)
        out[f"{key}_max"] = round(max(values), 4)
        if len(values) > 1:
            out[f"{key}_stdev"] = round(statistics.stdev(values), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--examples", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument(
        "--selection",
        choices=["random", "first"],
        default="random",
        help="N examples per intent drawn at random (one run per seed; default) or the first N in file order",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="seeds of the random selection")
    parser.add_argument(
        "--min-oos-recall",
        type=float,
        default=0.9,
        help="pivot rule on val: best val accuracy with at least this oos_val recall",
    )
    parser.add_argument(
        "--quantize", choices=["dynamic", "none"], default="dynamic", help="LocalEmbedder(quantize=...)"
    )
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "cache")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "routing_quality.json"
    )
    args = parser.parse_args()

    data = json.loads(args.data.read_text(encoding="utf-8"))
    start = time.perf_counter()
    raw = LocalEmbedder(threads=1, quantize=args.quantize)
    load_s = time.perf_counter() - start
    embedder = CachedEmbedder(raw, EmbeddingCache(args.cache_dir))
    everything = sorted({t for split in data.values() for t, _ in split})
    start = time.perf_counter()
    embedder.embed_sync(everything)  # fills the cache on the first run
    print(
        f"encoder load {load_s:.2f}s; {len(everything)} sentences embedded/cached in "
        f"{time.perf_counter() - start:.1f}s",
        flush=True,
    )

    val = [(t, y) for t, y in data["val"]]
    oos_val = [t for t, _ in data["oos_val"]]
    test_texts = [t for t, _ in data["test"]]
    test_labels = [y for _, y in data["test"]]
    oos_test = [t for t, _ in data["oos_test"]]
    oos_train = [t for t, _ in data["oos_train"]]

    rows = []
    for n in args.examples:
        seeds = seeds_for(data["train"], n, args.selection, args.seeds)
        for variant in args.variants:
            config, use_oos, calibrate = VARIANTS[variant]
            runs: list[dict[str, Any]] = []
            latency_row: dict[str, float] | None = None
            for seed in seeds:
                examples = sample_n(data["train"], n, seed)
                router = SemanticRouter(
                    embedder, config=config.model_copy(), oos_examples=oos_train if use_oos else ()
                )
                start = time.perf_counter()
                router.fit(examples, oos_examples=router.oos_examples)
                fit_s = time.perf_counter() - start
                if calibrate:
                    pivot = router.calibrate(val, oos_val, min_oos_recall=args.min_oos_recall)
                else:
                    pivot = router.classifier.pivot
                val_scores = score(
                    router.predict_batch([t for t, _ in val]),
                    [y for _, y in val],
                    router.predict_batch(oos_val),
                )
                test_scores = score(
                    router.predict_batch(test_texts), test_labels, router.predict_batch(oos_test)
                )
                runs.append(
                    {
                        "seed": seed,
                        "pivot": round(pivot, 4),
                        "fit_seconds": round(fit_s, 3),
                        "val": {k: round(v, 4) for k, v in val_scores.items()},
                        "test": {k: round(v, 4) for k, v in test_scores.items()},
                    }
                )
                if variant == "default" and latency_row is None:
                    latency_row = {
                        k: round(v, 3)
                        for k, v in latency(router, raw, test_texts[: args.latency_queries]).items()
                    }
                print(
                    f"n={n:<3} seed={seed!s:<4} {variant:<20} acc {test_scores['in_scope_accuracy']:.3f} "
                    f"oos {test_scores['oos_recall']:.3f} (val {val_scores['in_scope_accuracy']:.3f} / "
                    f"{val_scores['oos_recall']:.3f}; pivot {pivot:.3f}, fit {fit_s:.2f}s)",
                    flush=True,
                )
            row: dict[str, Any] = {
                "examples_per_intent": n,
                "variant": variant,
                "selection": selection_name(args.selection, seeds),
                "config": config.model_dump(),
                "oos_train_as_none_class": use_oos,
                "pivot_chosen_on_val": calibrate,
                "threshold": config.threshold,
                "fit_seconds": round(statistics.fmean(r["fit_seconds"] for r in runs), 3),
                "val": aggregate([r["val"] for r in runs]),
                "test": aggregate([r["test"] for r in runs]),
                "runs": runs,
            }
            if latency_row is not None:
                row["latency"] = latency_row
            rows.append(row)

    targets = {10: (0.88, 0.75), 100: (0.93, 0.80)}
    print()
    print(
        "| examples/intent | runs | variant | in-scope acc | OOS recall | top-1 (no reject) | target met | "
        "wall ms/query (median, p95) | CPU ms/query | fit s |"
    )
    print("|---:|---:|---|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        t = r["test"]
        goal = targets.get(r["examples_per_intent"])
        met = (
            "-"
            if goal is None
            else ("yes" if t["in_scope_accuracy"] >= goal[0] and t["oos_recall"] >= goal[1] else "no")
        )
        lat = r.get("latency")
        lat_s = f"{lat['ms_per_query_median']:.2f}, {lat['ms_per_query_p95']:.2f}" if lat else "-"
        cpu_s = f"{lat['cpu_ms_per_query_mean']:.2f}" if lat else "-"

        def cell(key: str, t: dict[str, float] = t) -> str:
            if f"{key}_stdev" not in t:
                return f"{100 * t[key]:.1f}"
            return f"{100 * t[key]:.1f} ({100 * t[key + '_min']:.1f}-{100 * t[key + '_max']:.1f})"

        print(
            f"| {r['examples_per_intent']} | {len(r['runs'])} | {r['variant']} | "
            f"{cell('in_scope_accuracy')} | {cell('oos_recall')} | {cell('top1_accuracy')} | {met} | "
            f"{lat_s} | {cpu_s} | "
            f"{r['fit_seconds']:.2f} |"
        )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": "CLINC150 Full (data_full.json)",
        "selection": (
            f"N train utterances per intent drawn at random, seeds {args.seeds} (all of them at 100)"
            if args.selection == "random"
            else "first N train utterances per intent"
        ),
        "pivot_rule": f"max val in-scope accuracy with oos_val recall >= {args.min_oos_recall}",
        "encoder": raw.model_id,
        "encoder_load_seconds": round(load_s, 3),
        "threads": 1,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "rows": rows,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
