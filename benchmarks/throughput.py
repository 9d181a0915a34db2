"""Training samples/s of a method next to the floor: a bare frozen forward plus backward to the
inputs on the same batch (DESIGN section 6)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from promptcl.protocols.continual import Experiment
from promptcl.runtime import optimisation_steps


def samples_per_second(step: Callable[[], None], batch_size: int, repeats: int = 10) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch_size * repeats / (time.perf_counter() - start)


def floor_step(exp: Experiment, batch) -> Callable[[], None]:
    """The frozen forward + backward to the inputs, under the run's precision."""
    backbone = exp.backbone

    def step() -> None:
        with exp.engine.autocast():
            x, keep = backbone.embed(batch.inputs)
            x = x.detach().requires_grad_()
            h = x
            for i in range(backbone.num_blocks):
                h = backbone.run_block(i, h, keep, None)
            loss = backbone.pool(backbone.final_norm(h), keep).float().sum()
        loss.backward()

    return step


def method_step(exp: Experiment, batch) -> Callable[[], None]:
    """The continual protocol's own training step on task 0 (Experiment.setup_training: logit
    mask, the method's loss terms, the engine's precision and backward, clipping, the configured
    optimiser and lr), after the frozen query forward where training computes one; a class-mean
    update for methods that do not train."""
    tuner, cfg = exp.tuner, exp.config.train
    classes = exp.training_tasks[0]
    tuner.begin_task(0, classes)
    trainer = exp.setup_training(0)
    if trainer is None:

        def update() -> None:
            refresh_query(exp, batch)
            tuner.end_task(0, classes, exp.task_data([batch]))

        return update
    loss_module, optimizer = trainer.step, trainer.optimizer
    tuner.train()

    def step() -> None:
        refresh_query(exp, batch)
        steps = optimisation_steps(
            [(batch, 1.0)], loss_module, optimizer, engine=exp.engine, grad_clip=cfg.grad_clip
        )
        next(steps)

    return step


def refresh_query(exp: Experiment, batch, split: str = "train") -> None:
    """Recompute the frozen query where training does (augmented inputs are not cached)."""
    if exp.tuner.needs_query and split not in exp.caches:
        with exp.engine.autocast():
            batch.query = exp.backbone.features(batch.inputs).float()


def eval_step(exp: Experiment, batch) -> Callable[[], None]:
    """The method's evaluation of new samples: the frozen query forward where the method needs
    one (computed once per test sample), then its forward with the task inferred per sample."""

    def step() -> None:
        with torch.no_grad(), exp.engine.autocast():
            if exp.tuner.needs_query:
                batch.query = exp.backbone.features(batch.inputs).float()
            exp.tuner(batch)

    return step


def eval_floor_step(exp: Experiment, batch) -> Callable[[], None]:
    def step() -> None:
        with exp.engine.autocast():
            exp.backbone.features(batch.inputs)

    return step


def measure(
    exp: Experiment, batch_size: int, repeats: int = 10, evaluation: bool = False
) -> dict[str, float]:
    """Samples/s of the method's training step and of the floor, on the same training batch;
    with ``evaluation``, also of its evaluation forward and of a bare frozen forward."""
    indices = exp.indices_of("train", [0])[:batch_size]  # task 0's samples
    batch = next(exp.batches("train", indices, batch_size))
    speed = {
        "method": samples_per_second(method_step(exp, batch), batch_size, repeats),
        "floor": samples_per_second(floor_step(exp, batch), batch_size, repeats),
    }
    if exp.tuner.needs_query and "train" not in exp.caches:  # augmented: a query pass per step
        speed["query"] = samples_per_second(lambda: refresh_query(exp, batch), batch_size, repeats)
    if evaluation:
        exp.tuner.eval()
        classes = exp.training_tasks[0]
        batches = exp.batches("train", indices, batch_size)
        exp.tuner.end_task(0, classes, exp.task_data(batches))
        speed["eval"] = samples_per_second(eval_step(exp, batch), batch_size, repeats)
        speed["eval_floor"] = samples_per_second(eval_floor_step(exp, batch), batch_size, repeats)
    return speed


def without_query(speed: dict[str, float]) -> str:
    """The training step without its frozen query forward, relative to the floor: where the
    inputs are augmented (images), every step computes the query again, a forward pass that the
    floor (forward + backward to the inputs, about two forward passes with frozen weights) does
    not have. '-' where the query comes from the cache."""
    if "query" not in speed:
        return "-"
    step = 1 / speed["method"] - 1 / speed["query"]  # seconds per sample
    return f"{1 / step / speed['floor']:.2f}"


VARIANTS = {
    "fp32": ["train.precision=32-true"],
    "bf16-mixed": ["train.precision=bf16-mixed"],
    "bf16-true": ["train.precision=bf16-true"],
    "fp32 compiled": ["train.precision=32-true", "train.compile=true"],
    "bf16-true compiled": ["train.precision=bf16-true", "train.compile=true"],
}
FAST_STAGES = ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"]
SETTINGS = {  # the benchmark's batch for each modality
    "text": lambda root: [
        "backbone=minilm-l6", "benchmark=clinc150", f"data.root={root}", "train.batch_size=32",
    ],
    "image": lambda root: [
        "backbone=timm:vit_small_patch16_224", "backbone_weights=random",
        "benchmark=imagefolder", f"data.root={root / 'cifar10-mini'}", "data.num_tasks=2",
        "train.batch_size=16",
    ],
}  # fmt: skip


def main() -> None:
    import argparse
    from pathlib import Path

    from common import machine, markdown_table, update_readme_section

    from promptcl import load_config

    parser = argparse.ArgumentParser(description="Samples/s of the real training step by precision")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--methods", default="dualprompt,l2p,hide,hash,softtf")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--modalities", default="text,image")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    options = [
        f"--{name.replace('_', '-')} {value if ' ' not in str(value) else repr(value)}"
        for name, value in vars(args).items()
        if name in ("methods", "variants", "modalities", "repeats")
        and value != parser.get_default(name)
    ]
    rows = []
    for modality in args.modalities.split(","):
        for method in args.methods.split(","):
            for variant in args.variants.split(","):
                fast = FAST_STAGES if method in ("hide", "norga", "hash") else []
                config = load_config(None, [
                    *SETTINGS[modality](args.data_root), f"method={method}",
                    "data.train_per_class=32", "train.progress=false", *fast, *VARIANTS[variant],
                ])  # fmt: skip
                exp = Experiment(config)
                speed = measure(exp, config.train.batch_size, args.repeats)
                rows.append([
                    modality, method, variant, f"{speed['method']:.1f}", f"{speed['floor']:.1f}",
                    f"{speed['method'] / speed['floor']:.2f}", without_query(speed),
                ])  # fmt: skip
                print(*rows[-1], flush=True)
    header = [
        "data", "method", "variant", "train samples/s", "floor samples/s", "train / floor",
        "train without the query pass / floor",
    ]  # fmt: skip
    text = "\n".join([
        "Training throughput of the continual protocol's real step "
        "(`Experiment.setup_training`: logit mask, the method's loss terms, the engine's "
        "precision, backward, clipping, Adam at the configured lr), after the frozen query "
        "forward where the method computes one, next to the floor measured beside it under the "
        "same precision (frozen forward + backward to the inputs). Text: minilm-l6 on CLINC150 "
        "batches of 32, the frozen queries cached (text is not augmented); images: ViT-S/16 "
        "with random weights at 224 px, batch 16, the query computed in every step (augmented "
        "images). Rows are measured one after another; 2 threads; compiled: torch.compile "
        "(inductor) of each block, timed after its warm-up.",
        markdown_table(header, rows),
        "",
        f"Machine: {machine()}.",
        f"Command: `python benchmarks/throughput.py --data-root DATA {' '.join(options)}`",
    ])  # fmt: skip
    if not args.no_readme:
        update_readme_section("throughput", text)
    print(text)


if __name__ == "__main__":
    main()
