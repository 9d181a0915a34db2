"""The lambda each random-feature ridge of a run chose after each task (taskid/ridge.py: ranpac's
classifier, the HiDe family's TII classifier and head), beside the change of the average accuracy
over the seen tasks at that task (log.jsonl). Reads finished or unfinished run directories; no
data, no backbone.

    python benchmarks/ridge_lambdas.py RUN_DIR... [--small 1]

Prints one line per run and ridge (log10 of lambda per task), then, over every run given, the
mean change of the average accuracy at the task ends whose head lambda (the classifier's for
ranpac) was at most --small, and at the others.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from safetensors.torch import load_file

HEADS = ("classifier.ridge", "stages.second_head.ridge")  # the ridge that scores the classes


def lambdas(run: Path) -> dict[str, list[float]]:
    """The per-task lambdas of every ridge in the run's checkpoint, by tensor name."""
    tensors = load_file(run / "checkpoint" / "tuner.safetensors")
    return {name: t.tolist() for name, t in tensors.items() if name.endswith(".ridge")}


def average_accuracy(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line]
    return [row["avg_acc"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--small", type=float, default=1.0, help="a lambda this small or less")
    args = parser.parse_args()
    changes: dict[bool, list[float]] = {True: [], False: []}
    for run in args.runs:
        chosen, acc = lambdas(run), average_accuracy(run)
        for name, values in chosen.items():
            logs = " ".join(f"{round(math.log10(v)):+d}" for v in values)
            print(f"{run.name}  {name}  log10 lambda per task: {logs}")
        head = next((chosen[k] for k in HEADS if k in chosen), None)
        if head is None:
            continue
        # an unfinished run's checkpoint may hold one task more than its log
        pairs = zip(acc, acc[1:], head[1:], strict=False)
        steps = [(later - earlier, lam) for earlier, later, lam in pairs]
        deltas = " ".join(f"{step:+.2f}" for step, _ in steps)
        print(f"{run.name}  average accuracy change per task from task 1: {deltas}")
        for step, lam in steps:
            changes[lam <= args.small].append(step)
    for small, values in changes.items():
        if values:
            which = f"<= {args.small:g}" if small else f"> {args.small:g}"
            mean = sum(values) / len(values)
            print(f"head lambda {which}: {len(values)} task ends, mean change {mean:+.2f} points")


if __name__ == "__main__":
    main()
