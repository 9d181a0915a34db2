"""Cost as tasks grow: trained parameters, checkpoint size and inference ms/sample against the
number of tasks T, on a synthetic stream (2 classes per task) over any text backbone (default
the 2-block random tiny-bert; minilm-l6 for the packaged MiniLM).

    python benchmarks/task_growth.py [--tasks 1 5 10 20 50] [--backbone minilm-l6]

Each method sees T tasks through its own begin_task / end_task (one batch of random token ids
per task, so the end-of-task statistics exist); nothing is trained, as none of the three costs
depends on the trained values. Inference: the evaluation forward with the task inferred per
sample (the frozen query forward included where a method needs one), batch 32, 16 tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import REPO, machine, markdown_table, update_readme_section
from safetensors.torch import save_file

from promptcl.backbones import build_backbone
from promptcl.config import build_dataclass
from promptcl.report.plots import plot_lines
from promptcl.tuners import Batch, TaskData, get_tuner

METHODS = {
    "dualprompt": {},
    "coda": {},
    "hide": {"tii": {"epochs": 1, "align_epochs": 1}, "tap": {"epochs": 1}},
    "hash": {"tii": {"epochs": 1, "align_epochs": 1}, "tap": {"epochs": 1}},
    "softtf (Prompt ID)": {"task_id": "prompt"},
    "softtf (Gradient ID)": {"task_id": "gradient"},
    "inflora": {},
    "sdlora": {},
    "mos": {"align": {"epochs": 1}},
    "aper": {},
    "ease": {},
}


def random_batch(backbone, labels: list[int], length: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (len(labels), length), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return Batch(inputs, torch.tensor(labels), torch.arange(len(labels)), None)


def costs(name: str, options: dict, backbone, num_tasks: int, repeats: int) -> dict[str, float]:
    method = name.split()[0]
    cls = get_tuner(method)
    torch.manual_seed(0)
    num_classes = 2 * num_tasks
    tuner = cls(build_dataclass(cls.config_class, options, method), backbone, num_classes)
    tuner.eval()
    for task in range(num_tasks):
        classes = [2 * task, 2 * task + 1]
        tuner.begin_task(task, classes)
        batch = random_batch(backbone, classes * 8, seed=task)
        batch.query = backbone.features(batch.inputs)
        tuner.end_task(task, classes, TaskData([batch]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tuner.safetensors"
        save_file({k: v.contiguous() for k, v in tuner.trained_state().items()}, path)
        size = path.stat().st_size
    test = random_batch(backbone, [c % num_classes for c in range(32)], seed=10_000)

    def infer() -> None:
        with torch.no_grad():
            if tuner.needs_query:
                test.query = backbone.features(test.inputs)
            tuner(test)

    infer()
    start = time.perf_counter()
    for _ in range(repeats):
        infer()
    ms = 1000 * (time.perf_counter() - start) / (repeats * 32)
    return {"params": tuner.num_trained_parameters(), "kib": size / 1024, "ms": ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 5, 10, 20, 50])
    parser.add_argument("--backbone", default="tiny-bert")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    backbone = build_backbone(args.backbone, None)
    results = {name: [] for name in METHODS}
    for name, options in METHODS.items():
        for T in args.tasks:
            results[name].append(costs(name, options, backbone, T, args.repeats))
            print(name, T, results[name][-1], flush=True)
    docs = REPO / "docs"
    for key, label in (("params", "trained parameters"), ("kib", "checkpoint KiB"),
                       ("ms", "inference ms / sample")):  # fmt: skip
        curves = {name: [r[key] for r in rows] for name, rows in results.items()}
        plot_lines(curves, args.tasks, docs / f"task_growth_{key}.png", "tasks T", label)
    header = ["method", *[f"T={T}: params / KiB / ms" for T in args.tasks]]
    rows = [
        [name, *[f"{r['params']:,} / {r['kib']:.0f} / {r['ms']:.2f}" for r in results[name]]]
        for name in METHODS
    ]
    text = "\n".join([
        f"Cost as tasks grow ({args.backbone}, synthetic stream of 2 classes per task): trained"
        " parameters, checkpoint size (KiB) and inference ms per sample (batch 32, 16 tokens,"
        " task inferred per sample). Plots: docs/task_growth_{params,kib,ms}.png.",
        "",
        markdown_table(header, rows),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/task_growth.py {' '.join(sys.argv[1:])}`",
    ])  # fmt: skip
    if not args.no_readme:
        update_readme_section("task-growth", text)
    print(text)


if __name__ == "__main__":
    main()
