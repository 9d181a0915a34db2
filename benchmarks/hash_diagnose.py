"""Where a finished Hash run (or HiDe-Prompt, NoRGa: the methods with TII and TAP) loses its old
tasks: the final checkpoint evaluated four ways.

    python benchmarks/hash_diagnose.py RUN_DIR [--eval-split val|test] [--fit-per-class N]
        [--out FILE]

Per task j, on the run's evaluation split (or --eval-split; the default output is
RUN_DIR/diagnosis-SPLIT.json), after the last task:
  tii       task inferred per sample (what the run reports; equals the last row of acc_matrix),
  oracle    the true task's router / prompt (TII errors removed), all seen classes compete,
  within    the true task's router / prompt, only task j's classes compete (no cross-task head
            bias),
  refreshed TII, with the head re-aligned by TAP on Gaussians refitted to the CURRENT prompted
            features of every task's training data (a diagnostic only: it reads old data),
and the drift of the prompted features of each task's training data since its Gaussians were
stored (on the first N training samples per class with --fit-per-class; the refreshed
Gaussians are fitted on those too): mean over classes of ||mu_now - mu_stored||, next to the
mean distance between a stored class mean and its nearest other class mean (the scale at which
drift starts to confuse).
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict
from pathlib import Path

import torch

from promptcl.core.checkpoint import load_checkpoint
from promptcl.protocols.continual import Experiment, load_run_config
from promptcl.tuners.align import align_head


@torch.no_grad()
def features_and_logits(exp: Experiment, split: str, indices: list[int], task_of):
    """Prompted pooled features (true task's router), logits of the true and inferred task."""
    tuner = exp.tuner
    feats, labels, oracle, inferred, task_pred = [], [], [], [], []
    for batch in exp.batches(split, indices, exp.config.train.eval_batch_size):
        true = torch.tensor([task_of[i] for i in batch.index.tolist()], device=exp.device)
        given = tuner(batch, task=true)
        feats.append(given.extras["features"])
        oracle.append(given.logits)
        out = tuner(batch)
        inferred.append(out.logits)
        task_pred.append(out.task_pred)
        labels.append(batch.labels)
    cat = torch.cat
    return cat(feats), cat(labels), cat(oracle), cat(inferred), cat(task_pred)


def per_task(correct: torch.Tensor, tasks: torch.Tensor, T: int) -> list[float]:
    return [100 * correct[tasks == t].float().mean().item() for t in range(T)]


def diagnose(run_dir: Path, split: str | None = None, per_class: int | None = None) -> dict:
    config = load_run_config(run_dir / "config.json")
    config.data.eval_split = split or config.data.eval_split
    config.train.progress = False
    exp = Experiment(config)
    tensors, state = load_checkpoint(run_dir / "checkpoint")
    T = state.units_done
    exp.restore(tensors, state)
    exp.tuner.eval()
    stages, classes = exp.tuner.stages, exp.training_tasks
    seen = torch.tensor([c for cs in classes[:T] for c in cs])
    unseen = torch.ones(exp.stream.num_classes, dtype=torch.bool)
    unseen[seen] = False

    train_idx = exp.indices_of("train", range(T))
    if per_class is not None:  # the first samples of each class, for a cheaper diagnosis
        taken: dict[int, int] = {}
        labels_of = exp.labels["train"]
        keep = []
        for i in train_idx:
            taken[labels_of[i]] = taken.get(labels_of[i], 0) + 1
            if taken[labels_of[i]] <= per_class:
                keep.append(i)
        train_idx = keep
    train_task = exp.sample_tasks["train"]
    feats, labels, *_ = features_and_logits(exp, "train", train_idx, train_task)
    stored = stages.feature_stats.mean.clone()
    now = copy.deepcopy(stages.feature_stats)
    now.fit(feats.float(), labels)
    shift, gap = [], []
    for t in range(T):
        cs = torch.tensor(classes[t])
        shift.append((now.mean[cs] - stored[cs]).norm(dim=-1).mean().item())
        dist = torch.cdist(stored[cs], stored[seen])
        dist[dist == 0] = float("inf")
        gap.append(dist.min(dim=-1).values.mean().item())

    test_task = exp.sample_tasks["test"]
    test_idx = exp.indices_of("test", range(T))
    _, y, oracle, inferred, task_pred = features_and_logits(exp, "test", test_idx, test_task)
    tasks = torch.tensor([test_task[i] for i in test_idx])
    within_mask = torch.ones_like(oracle, dtype=torch.bool)
    for t in range(T):
        rows = (tasks == t).nonzero()  # (n, 1)
        within_mask[rows, torch.tensor(classes[t])[None]] = False
    result = {
        "tii": per_task(inferred.masked_fill(unseen, -torch.inf).argmax(1) == y, tasks, T),
        "oracle": per_task(oracle.masked_fill(unseen, -torch.inf).argmax(1) == y, tasks, T),
        "within": per_task(oracle.masked_fill(within_mask, -torch.inf).argmax(1) == y, tasks, T),
        "task_id": per_task(task_pred.cpu() == tasks, tasks, T),
        "feature_shift": shift,
        "nearest_class_gap": gap,
    }
    # the head re-aligned on Gaussians of the current features (reads old data: diagnostic only)
    tap = exp.tuner.config.tap
    if tap is not None:
        torch.manual_seed(0)
        align_head(exp.tuner.head, now, seen, **asdict(tap))  # TAPOptions = its kwargs
        _, _, oracle, inferred, _ = features_and_logits(exp, "test", test_idx, test_task)
        result["refreshed"] = per_task(
            inferred.masked_fill(unseen, -torch.inf).argmax(1) == y, tasks, T
        )
        result["refreshed_oracle"] = per_task(
            oracle.masked_fill(unseen, -torch.inf).argmax(1) == y, tasks, T
        )
    result["diagonal"] = [state.log[t]["acc"][t] for t in range(T)]
    result["mean"] = {k: sum(v) / len(v) for k, v in result.items() if isinstance(v, list)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--eval-split", choices=["val", "test"])
    parser.add_argument("--fit-per-class", type=int, help="training samples per class read")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = diagnose(args.run_dir, args.eval_split, args.fit_per_class)
    split = (
        args.eval_split
        or json.loads((args.run_dir / "config.json").read_text())["data"]["eval_split"]
    )
    out = args.out or args.run_dir / f"diagnosis-{split}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for key, values in result.items():
        if isinstance(values, list):
            print(f"{key:18s}", " ".join(f"{v:5.1f}" for v in values))
    print(json.dumps(result["mean"], indent=1))


if __name__ == "__main__":
    main()
