"""Image throughput of every continual method on a ViT-S/16-sized random backbone at 224 px,
next to the floor (frozen forward + backward to the inputs; frozen forward for evaluation).

    python benchmarks/vision_throughput.py --data-root ../shared/data [--batch-size 16]

Images are cifar10-mini's JPEGs resized to 224 px. Weights are random (speed does not depend on
them); the HiDe-family task-identity stages are shortened, as they do not enter the step times.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import REPO, machine, markdown_table, update_readme_section
from throughput import measure

from promptcl import load_config
from promptcl.protocols.continual import Experiment
from promptcl.tuners import TUNERS

OPTIONS = {
    "hide": ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"],
    "norga": ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"],
    "hash": ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "vision.md")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()

    rows = []
    for method in TUNERS:
        root = args.data_root / "cifar10-mini"
        config = load_config(None, [
            f"method={method}", "benchmark=imagefolder", f"data.root={root}",
            f"backbone=timm:{args.model}", "backbone_weights=random", "data.num_tasks=2",
            "data.train_per_class=4", "train.progress=false", *OPTIONS.get(method, []),
        ])  # fmt: skip
        speed = measure(Experiment(config), args.batch_size, args.repeats, evaluation=True)
        rows.append([
            method, f"{speed['method']:.1f}", f"{speed['floor']:.1f}",
            f"{speed['method'] / speed['floor']:.2f}", f"{speed['eval']:.1f}",
            f"{speed['eval_floor']:.1f}",
        ])  # fmt: skip
        print(method, speed, flush=True)
    header = ["method", "train samples/s", "train floor", "train / floor", "eval samples/s",
              "eval floor"]  # fmt: skip
    text = "\n".join([
        f"Image throughput, `{args.model}` with random weights at 224 px, batch {args.batch_size},"
        " CPU. Floor: frozen forward + backward to the inputs (training), frozen forward"
        " (evaluation). A training step includes the frozen query forward where a method needs one"
        " (augmented images are not cached); an evaluation step too (a test image's query is"
        " computed once). ncm's training step is its class-mean update. Rows are measured one"
        " after another; compare each method with the floor measured beside it.",
        "",
        markdown_table(header, rows),
        "",
        f"Machine: {machine()}.",
        "Command: `python benchmarks/vision_throughput.py --data-root DATA`",
    ])  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    if not args.no_readme:
        update_readme_section("vision-throughput", text)
    print(text)


if __name__ == "__main__":
    main()
