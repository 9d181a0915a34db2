"""Task-identity accuracy of each TII classifier (mlp, lda, ncm, ranpac; taskid/tii.py) on
clinc150-15 (or text4) with the packaged MiniLM's frozen features: after each task the classifier
is fitted on that task's training queries, as inside hash, hide, norga and the edit methods with
task_id=tii; the task of a test sample is the task of the class it predicts among the seen ones.
Prompts play no part, so one pass over the frozen features serves every classifier. Also the
class accuracy over all seen classes (union, after the last task): for lda, ncm and ranpac that
is the method of that name (ranpac with --projection-dim as its tuner.dim).

    python benchmarks/tii.py --data-root ../shared/data [--seeds 0 1 2] [--train-per-class N]
        [--eval-split val|test] [--classifiers mlp lda ncm ranpac] [--projection-dim M]

Writes benchmarks/results/tii-BENCHMARK[-capN][-testN][-mM][-val].md, and the docs section of
that name for the test split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import REPO, machine, markdown_table, mean_std, section_files, update_readme_section

from promptcl import load_config
from promptcl.protocols.continual import Experiment
from promptcl.runtime import task_seed
from promptcl.taskid.ridge import PROJECTION_DIM
from promptcl.taskid.tii import TaskInference, TIIOptions


def measure(exp: Experiment, classifier: str, projection_dim: int) -> dict[str, float]:
    """Task-identity and class accuracy (%) over all test samples after the last task."""
    size = exp.config.train.eval_batch_size
    T = exp.stream.num_tasks
    options = TIIOptions(classifier=classifier, projection_dim=projection_dim)
    tii = TaskInference(exp.backbone.dim, exp.stream.num_classes, options)
    for task in range(T):
        torch.manual_seed(task_seed(exp.config.seed, task))
        classes = exp.training_tasks[task]
        tii.begin_task(task, classes)
        batches = list(exp.batches("train", exp.indices_of("train", [task]), size))
        queries = torch.cat([b.query for b in batches]).cpu()
        tii.fit(task, classes, queries, torch.cat([b.labels for b in batches]).cpu())
    right_task = right_class = total = 0
    truth = torch.tensor(exp.sample_tasks["test"])
    seen = tii.seen_classes()
    for batch in exp.batches("test", exp.indices_of("test", range(T)), size):
        query = batch.query.cpu()
        right_task += (tii.infer_task(query) == truth[batch.index.cpu()]).sum().item()
        scores = tii.classifier(query)[:, seen]
        right_class += (seen[scores.argmax(dim=1)] == batch.labels.cpu()).sum().item()
        total += len(batch.labels)
    return {"task_id_acc": 100 * right_task / total, "class_acc": 100 * right_class / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--eval-split", default="test", choices=["test", "val"])
    parser.add_argument("--classifiers", nargs="+", default=["mlp", "lda", "ncm", "ranpac"])
    parser.add_argument("--projection-dim", type=int, default=PROJECTION_DIM, help="ranpac's M")
    parser.add_argument("--benchmark", default="clinc150-15", choices=["clinc150-15", "text4"])
    parser.add_argument("--test-per-class", type=int, default=None)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {c: [] for c in args.classifiers}
    for seed in args.seeds:
        items = [f"data.root={args.data_root}", f"seed={seed}", "train.progress=false"]
        if args.train_per_class is not None:
            items.append(f"data.train_per_class={args.train_per_class}")
        items.append(f"data.eval_split={args.eval_split}")
        items.append(f"benchmark={args.benchmark}")
        if args.test_per_class is not None:
            items.append(f"data.test_per_class={args.test_per_class}")
        exp = Experiment(load_config("clinc150/ncm", items))
        for classifier in args.classifiers:
            results[classifier].append(measure(exp, classifier, args.projection_dim))
            print(seed, classifier, results[classifier][-1], flush=True)
    cap = f"data.train_per_class={args.train_per_class}" if args.train_per_class else "all data"
    if args.test_per_class is not None:
        cap += f", data.test_per_class={args.test_per_class}"
    seeds = " ".join(map(str, args.seeds))
    rows = [
        [
            f"ranpac (M = {args.projection_dim})" if c == "ranpac" else c,
            mean_std([r["task_id_acc"] for r in runs]),
            mean_std([r["class_acc"] for r in runs]),
        ]
        for c, runs in results.items()
    ]
    command = (
        f"python benchmarks/tii.py --data-root DATA --benchmark {args.benchmark} --seeds {seeds} "
        f"--eval-split {args.eval_split}"
    )
    if args.train_per_class:
        command += f" --train-per-class {args.train_per_class}"
    if args.test_per_class is not None:
        command += f" --test-per-class {args.test_per_class}"
    if args.classifiers != ["mlp", "lda", "ncm", "ranpac"]:
        command += f" --classifiers {' '.join(args.classifiers)}"
    if args.projection_dim != PROJECTION_DIM:
        command += f" --projection-dim {args.projection_dim}"
    text = "\n".join(
        [
            f"TII classifiers on frozen MiniLM-L6 features, `{args.benchmark}`, {cap}, "
            f"seeds {seeds}, {args.eval_split} split, after the last task (%, mean ± std over "
            "seeds).",
            "",
            markdown_table(["TII classifier", "task-id acc", "class acc (all seen)"], rows),
            "",
            f"Machine: {machine()}.",
            f"Command: `{command}`",
        ]
    )
    name = f"tii-{args.benchmark}"
    name += f"-cap{args.train_per_class}" if args.train_per_class else ""
    name += f"-test{args.test_per_class}" if args.test_per_class is not None else ""
    name += f"-m{args.projection_dim}" if args.projection_dim != PROJECTION_DIM else ""
    name += "-val" if args.eval_split == "val" else ""
    out = REPO / "benchmarks" / "results" / f"{name}.md"
    out.write_text(text + "\n", encoding="utf-8")
    if args.eval_split == "test" and section_files(name):
        update_readme_section(name, text)
    print(text)


if __name__ == "__main__":
    main()
