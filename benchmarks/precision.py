"""Accuracy of each precision on clinc150-15: the same shipped configs run to the end with
train.precision = each of --precisions, everything else equal.

    python benchmarks/precision.py --data-root DATA [--methods dualprompt hash]
        [--precisions 32-true bf16-mixed bf16-true] [--seeds 0] [--train-per-class 10]

The speed of the training step by precision is benchmarks/throughput.py's, measured on a quiet
machine; this script checks what a precision does to the results (FAA within 0.5 of fp32 is the
bar, docs/results.md "Speed"). Its runs may share the machine with other jobs, so their times
are not compared. Runs go to runs/bench-precision-capN/METHOD-PRECISION-sSEED and are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import REPO, machine, markdown_table, mean_std, update_readme_section

from promptcl import load_config, run
from promptcl.config import SHIPPED_CONFIGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", default=["dualprompt", "hash"])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed", "bf16-true"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    runs = REPO / "runs" / f"bench-precision-cap{args.train_per_class}"
    rows = []
    for method in args.methods:
        base = None
        for precision in args.precisions:
            results = []
            for seed in args.seeds:
                out = runs / f"{method}-{precision}-s{seed}"
                if not (out / "metrics.json").is_file():
                    config = load_config(SHIPPED_CONFIGS / "clinc150" / f"{method}.yaml", [
                        f"data.root={args.data_root}", f"seed={seed}", "train.progress=false",
                        f"data.train_per_class={args.train_per_class}",
                        f"train.precision={precision}",
                    ])  # fmt: skip
                    run(config, out, resume=(out / "config.json").is_file())
                results.append(json.loads((out / "metrics.json").read_text()))
            faa = [m["faa"] for m in results]
            base = base or faa
            rows.append([
                method, precision, mean_std(faa), mean_std([m["fm"] for m in results]),
                f"{sum(faa) / len(faa) - sum(base) / len(base):+.2f}",
                mean_std([m["task_id_acc"] for m in results]),
            ])  # fmt: skip
            print(*rows[-1], file=sys.stderr, flush=True)
    header = ["method", "precision", "FAA", "FM", "FAA - first row's", "task-id acc"]
    seeds = " ".join(map(str, args.seeds))
    text = "\n".join([
        f"Precision and accuracy: CLINC150 `clinc150-15`, packaged MiniLM-L6, "
        f"data.train_per_class={args.train_per_class}, seeds {seeds}, test split, the shipped "
        "configs with only train.precision changed (speed: the throughput table).",
        "",
        markdown_table(header, rows),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/precision.py --data-root DATA --methods "
        f"{' '.join(args.methods)} --precisions {' '.join(args.precisions)} --seeds {seeds} "
        f"--train-per-class {args.train_per_class}`",
    ])  # fmt: skip
    if not args.no_readme:
        update_readme_section("precision-accuracy", text)
    print(text)


if __name__ == "__main__":
    main()
