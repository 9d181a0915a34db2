"""One training run scored on the validation and on the test split after every task.

    python benchmarks/val_and_test.py --config configs/clinc150/hash.yaml --out runs/NAME
        [--set key=value ...] [--resume]

Writes runs/NAME-val and runs/NAME-test, each the run directory that ``promptcl run`` writes with
data.eval_split=val or test (config.json, log.jsonl, metrics.json, plots, checkpoint). The
model trains once: both splits share the training data (CLINC150's val split is its own list),
every task starts from the same seed as in ``promptcl run``, and evaluation draws no random
numbers from torch, so each directory holds the figures the single-split run would give, at
the cost of one training run. Choose on the -val directory; report the -test one. --resume
continues an interrupted pair from its last finished task (its rows equal an unbroken run's).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from promptcl import load_config
from promptcl.config import config_differences
from promptcl.core.checkpoint import load_checkpoint, save_checkpoint
from promptcl.errors import UsageError
from promptcl.protocols.continual import Experiment, prepare_run_dir, saved_config, summary_metrics
from promptcl.runtime import task_seed

SPLITS = ("val", "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="prefix of the two run dirs")
    parser.add_argument("--set", dest="items", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue the pair at --out")
    args = parser.parse_args()
    exps, dirs, states = {}, {}, {}
    for split in SPLITS:
        config = load_config(args.config, [*args.items, f"data.eval_split={split}"])
        out = args.out.with_name(f"{args.out.name}-{split}")
        dirs[split] = prepare_run_dir(out, config, resume=args.resume)
        exps[split] = Experiment(config)
        states[split] = {"acc_rows": [], "log": [], "train_seconds": 0.0, "eval_seconds": 0.0}
    trainer = exps[SPLITS[0]]
    for split in SPLITS:
        exps[split].tuner = trainer.tuner  # one model, scored on both splits
        if not args.resume:
            dirs[split].create(exps[split].config_dict(), exps[split].stream.describe())
    start_task, samples = resume(exps, dirs, states) if args.resume else (0, 0)
    for task in range(start_task, len(trainer.training_tasks)):
        torch.manual_seed(task_seed(trainer.config.seed, task))
        start = time.perf_counter()
        trainer.tuner.begin_task(task, trainer.training_tasks[task])
        trained = trainer.train_task(task)
        seconds = time.perf_counter() - start
        samples += trained["train_samples"]
        for split in SPLITS:
            exp, state = exps[split], states[split]
            start = time.perf_counter()
            result = exp.evaluate(task + 1)
            state["eval_seconds"] += time.perf_counter() - start
            state["train_seconds"] += seconds
            state["train_samples"] = samples
            state["acc_rows"].append(result["acc"])
            state["union_acc"], state["task_id_acc"] = result["union_acc"], result["task_id_acc"]
            avg = sum(result["acc"]) / len(result["acc"])
            state["log"].append({"task": task, **trained, **result, "avg_acc": avg})
            state["tasks_done"] = task + 1
            save_checkpoint(dirs[split].checkpoint, exp.tuner.trained_state(), state)
            dirs[split].write_log(state["log"])
    for split in SPLITS:
        summary = summary_metrics(exps[split], states[split])
        dirs[split].write_results(summary, exps[split].tuner.heatmaps())
        print(f"{split}: FAA {summary['faa']:.2f} CAA {summary['caa']:.2f} FM {summary['fm']:.2f}")


def resume(exps: dict, dirs: dict, states: dict) -> tuple[int, int]:
    """Restore the shared tuner after the last task both directories hold; (that task count,
    training samples so far). The states are cut to that task."""
    saved = {split: load_checkpoint(dirs[split].checkpoint) for split in SPLITS}
    for split in SPLITS:
        diffs = config_differences(saved_config(dirs[split]), exps[split].config_dict())
        if diffs:  # the check of ``promptcl run --resume``
            raise UsageError(
                f"{dirs[split].path} was made with another config (differs in "
                f"{', '.join(diffs)}); pass the same --config and --set"
            )
        if saved[split] is None:
            raise UsageError(f"{dirs[split].path} has no finished task; start it again")
    done = min(state["tasks_done"] for _, state in saved.values())
    for split in SPLITS:
        state = saved[split][1]
        for key in ("acc_rows", "log"):
            state[key] = state[key][:done]
        states[split] = state
    tensors = next(t for t, state in saved.values() if state["tasks_done"] == done)
    exps[SPLITS[0]].restore(tensors, done)
    return done, sum(row["train_samples"] for row in states[SPLITS[0]]["log"])


if __name__ == "__main__":
    main()
