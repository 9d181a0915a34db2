"""One training run scored on the validation and on the test split after every task.

    python benchmarks/val_and_test.py --config clinc150/hash --out runs/NAME
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

from promptcl import load_config
from promptcl.config import config_differences, to_dict
from promptcl.core.checkpoint import RunState, load_checkpoint, save_checkpoint
from promptcl.core.run import prepare
from promptcl.errors import UsageError
from promptcl.metrics import average_accuracy
from promptcl.protocols.continual import Experiment

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
        dirs[split] = prepare(Experiment, out, resume=args.resume)
        exps[split] = Experiment(config)
    trainer, scored = exps["val"], exps["test"]
    scored.tuner = trainer.tuner  # one model, scored on both splits
    for split, exp in exps.items():
        if not args.resume:
            dirs[split].create(exp.kind, exp.config_dict(), exp.classes_file, exp.classes())
        states[split] = RunState(fingerprint=dirs[split].fingerprint(exp.classes()))
    if args.resume:
        resume(exps, dirs, states)
    for task in range(states["val"].units_done, trainer.num_units()):
        val = trainer.run_unit(task, states["val"])  # trains the shared tuner, scores val
        start = time.perf_counter()
        result = scored.evaluate(task + 1)
        test, state = states["test"], states["val"]
        test.eval_seconds += time.perf_counter() - start
        test.train_seconds, test.samples_seen, test.steps = (
            state.train_seconds, state.samples_seen, state.steps
        )  # fmt: skip
        trained = {k: val[k] for k in ("train_samples", "epochs", "samples_seen", "losses")}
        rows = {"val": val, "test": {"task": task, **trained, **result}}
        rows["test"]["avg_acc"] = average_accuracy(result["acc"])
        for split in SPLITS:
            states[split].log.append(rows[split])
            states[split].units_done = task + 1
            save_checkpoint(dirs[split].checkpoint, trainer.trained_state(), states[split])
            dirs[split].write_log(states[split].log)
    for split, exp in exps.items():
        summary = exp.finish(states[split])
        dirs[split].write_metrics(summary)
        exp.plot(dirs[split].path, summary)
        print(f"{split}: FAA {summary['faa']:.2f} CAA {summary['caa']:.2f} FM {summary['fm']:.2f}")


def resume(exps: dict, dirs: dict, states: dict) -> None:
    """Restore the shared tuner after the last task both directories hold; the states are cut
    to that task."""
    saved = {split: load_checkpoint(dirs[split].checkpoint) for split in SPLITS}
    for split in SPLITS:
        made = to_dict(Experiment.saved_config(dirs[split]))
        diffs = config_differences(made, exps[split].config_dict())
        if diffs:  # the check of ``promptcl run --resume``
            raise UsageError(
                f"{dirs[split].path} was made with another config (differs in "
                f"{', '.join(diffs)}); pass the same --config and --set"
            )
        if saved[split] is None:
            raise UsageError(f"{dirs[split].path} has no finished task; start it again")
    done = min(state.units_done for _, state in saved.values())
    tensors = next(t for t, state in saved.values() if state.units_done == done)
    for split in SPLITS:
        state = saved[split][1]
        state.log, state.units_done = state.log[:done], done
        state.fingerprint = states[split].fingerprint
        states[split] = state
    exps["val"].restore(tensors, states["val"])


if __name__ == "__main__":
    main()
