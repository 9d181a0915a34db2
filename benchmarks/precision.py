"""Accuracy of each precision on clinc150-15: the same shipped configs run to the end with
train.precision = each of --precisions, everything else equal.

    python benchmarks/precision.py --data-root DATA [--methods dualprompt hash]
        [--precisions 32-true bf16-mixed bf16-true] [--query-precisions same]
        [--seeds 0] [--train-per-class 10] [--test-per-class N]

The speed of the training step by precision is benchmarks/throughput.py's, measured on a quiet
machine; this script checks what a precision does to the results (FAA within 0.5 of fp32 is the
bar, docs/results.md "Speed"). Its runs may share the machine with other jobs, so their times
are not compared. Runs go to runs/bench-precision-capN/METHOD-PRECISION-sSEED and are reused.

``--query-precisions same bf16`` adds train.query_precision=bf16 runs (the frozen query pass
under bf16 autocast) and times that pass alone: the query features of the test set, once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import REPO, machine, markdown_table, mean_std, update_readme_section

from promptcl import load_config, run
from promptcl.config import SHIPPED_CONFIGS
from promptcl.protocols.continual import Experiment


def query_seconds(config) -> float | None:
    """Seconds of the frozen query pass over the whole test set; None when the method has
    none (or its test queries are not cached)."""
    exp = Experiment(config)
    if "test" not in exp.caches:
        return None
    start = time.perf_counter()
    exp.caches["test"].fill(range(len(exp.items["test"])))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", default=["dualprompt", "hash"])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed", "bf16-true"])
    parser.add_argument("--query-precisions", nargs="+", default=["same"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--test-per-class", type=int)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--readme-section",
        help="docs marker to write (default: query-precision with --query-precisions beyond "
        "same, else precision-accuracy)",
    )
    args = parser.parse_args()
    test_cap = "" if args.test_per_class is None else f"-test{args.test_per_class}"
    runs = REPO / "runs" / f"bench-precision-cap{args.train_per_class}{test_cap}"
    rows = []
    for method in args.methods:
        base = None
        for precision in args.precisions:
            for query in args.query_precisions:
                settings = [
                    f"data.root={args.data_root}", "train.progress=false",
                    f"data.train_per_class={args.train_per_class}",
                    f"data.test_per_class={args.test_per_class or 'null'}",
                    f"train.precision={precision}", f"train.query_precision={query}",
                ]  # fmt: skip
                results = []
                for seed in args.seeds:
                    variant = precision if query == "same" else f"{precision}-query-{query}"
                    out = runs / f"{method}-{variant}-s{seed}"
                    if not (out / "metrics.json").is_file():
                        path = SHIPPED_CONFIGS / "clinc150" / f"{method}.yaml"
                        config = load_config(path, [*settings, f"seed={seed}"])
                        run(config, out, resume=(out / "config.json").is_file())
                    results.append(json.loads((out / "metrics.json").read_text()))
                faa = [m["faa"] for m in results]
                base = base or faa
                row = [
                    method, precision, mean_std(faa), mean_std([m["fm"] for m in results]),
                    f"{sum(faa) / len(faa) - sum(base) / len(base):+.2f}",
                    mean_std([m["task_id_acc"] for m in results]),
                ]  # fmt: skip
                if args.query_precisions != ["same"]:
                    path = SHIPPED_CONFIGS / "clinc150" / f"{method}.yaml"
                    seconds = query_seconds(load_config(path, settings))
                    row[2:2] = [query, "-" if seconds is None else f"{seconds:.1f}"]
                rows.append(row)
                print(*rows[-1], file=sys.stderr, flush=True)
    header = ["method", "precision", "FAA", "FM", "FAA - first row's", "task-id acc"]
    if args.query_precisions != ["same"]:
        header[2:2] = ["query pass", "test-set query pass s"]
    seeds = " ".join(map(str, args.seeds))
    test = "" if args.test_per_class is None else f", data.test_per_class={args.test_per_class}"
    text = "\n".join([
        f"Precision and accuracy: CLINC150 `clinc150-15`, packaged MiniLM-L6, "
        f"data.train_per_class={args.train_per_class}{test}, seeds {seeds}, test split, the "
        "shipped configs with only train.precision (and train.query_precision) changed "
        "(speed: the throughput table).",
        "",
        markdown_table(header, rows),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/precision.py --data-root DATA --methods "
        f"{' '.join(args.methods)} --precisions {' '.join(args.precisions)} "
        f"--query-precisions {' '.join(args.query_precisions)} --seeds {seeds} "
        f"--train-per-class {args.train_per_class}"
        + ("" if args.test_per_class is None else f" --test-per-class {args.test_per_class}")
        + "`",
    ])  # fmt: skip
    if not args.no_readme:
        query = args.query_precisions != ["same"]
        default = "query-precision" if query else "precision-accuracy"
        update_readme_section(args.readme_section or default, text)
    print(text)


if __name__ == "__main__":
    main()
