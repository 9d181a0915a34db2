"""CLINC150 (clinc150-15: 15 tasks of 10 intents) with the packaged MiniLM: every method's
config in configs/clinc150/, then a markdown table (also written into the README).

    python benchmarks/clinc150.py --data-root ../shared/data [--seeds 0 1 2] [--train-per-class N]

Finished runs under --runs are reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import REPO, machine, markdown_table, mean_std, update_readme_section
from throughput import measure

from promptcl import load_config, run
from promptcl.learner import Experiment

CONFIGS = REPO / "configs" / "clinc150"
METHODS = ["ncm", "linear", "finetune", "joint", "l2p", "dualprompt"]


def run_all(args: argparse.Namespace) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in args.seeds:
            out = args.runs / f"{method}-s{seed}"
            done = out / "metrics.json"
            if not done.is_file():
                config = load_config(CONFIGS / f"{method}.yaml", overrides(args, seed))
                run(config, out, resume=(out / "config.json").is_file())
            metrics = json.loads(done.read_text())
            results.setdefault(method, []).append(metrics)
            print(f"{method} seed {seed}: FAA {metrics['faa']:.2f}", file=sys.stderr, flush=True)
    return results


def overrides(args: argparse.Namespace, seed: int) -> list[str]:
    items = [f"data.root={args.data_root}", f"seed={seed}", "train.progress=false"]
    if args.train_per_class is not None:
        items.append(f"data.train_per_class={args.train_per_class}")
    return items


def table(results: dict[str, list[dict]]) -> str:
    rows = []
    for method, runs in results.items():
        rows.append(
            [
                method,
                mean_std([m["faa"] for m in runs]),
                mean_std([m["caa"] for m in runs]),
                mean_std([m["fm"] for m in runs]),
                mean_std([m["task_id_acc"] for m in runs]),
                f"{runs[0]['trainable_params']:,}",
                mean_std([m["train_seconds"] for m in runs], 0),
            ]
        )
    header = ["method", "FAA", "CAA", "FM", "task-id acc", "trained params", "train s"]
    return markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench-clinc150")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "clinc150.md")
    parser.add_argument("--no-readme", action="store_true", help="do not update README.md")
    args = parser.parse_args()
    if args.train_per_class is not None:
        args.runs = args.runs.with_name(f"{args.runs.name}-cap{args.train_per_class}")

    results = run_all(args)
    speed_config = load_config(CONFIGS / "dualprompt.yaml", overrides(args, 0))
    speed = measure(Experiment(speed_config), speed_config.train.batch_size)
    cap = (
        "all training data (100 per intent)"
        if args.train_per_class is None
        else (f"data.train_per_class={args.train_per_class}")
    )
    text = "\n".join(
        [
            f"CLINC150 `clinc150-15` (15 tasks x 10 intents), packaged MiniLM-L6, {cap}, "
            f"seeds {' '.join(map(str, args.seeds))}, test split. "
            "FAA/CAA/FM in %, mean ± std over seeds.",
            "",
            table(results),
            "",
            f"Training throughput (batch {speed_config.train.batch_size}, samples/s): dualprompt "
            f"{speed['method']:.0f}, floor (frozen forward + backward to the inputs) "
            f"{speed['floor']:.0f}.",
            "",
            f"Machine: {machine()}.",
            f"Command: `python benchmarks/clinc150.py --data-root DATA --seeds "
            f"{' '.join(map(str, args.seeds))}"
            + (f" --train-per-class {args.train_per_class}`" if args.train_per_class else "`"),
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    if not args.no_readme:
        update_readme_section("clinc150-results", text)
    print(text)


if __name__ == "__main__":
    main()
