"""Training samples/s of a method next to the floor: a bare frozen forward plus backward to the
inputs on the same batch (DESIGN section 6)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from promptcl.learner import Experiment


def samples_per_second(step: Callable[[], None], batch_size: int, repeats: int = 10) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch_size * repeats / (time.perf_counter() - start)


def floor_step(exp: Experiment, batch) -> Callable[[], None]:
    backbone = exp.backbone

    def step() -> None:
        x, keep = backbone.embed(batch.inputs)
        x = x.detach().requires_grad_()
        h = x
        for i in range(backbone.num_blocks):
            h = backbone.run_block(i, h, keep, None)
        backbone.pool(backbone.final_norm(h), keep).sum().backward()

    return step


def method_step(exp: Experiment, batch) -> Callable[[], None]:
    """One optimiser step of the method (a class-mean update for methods that do not train)."""
    tuner = exp.tuner
    classes = exp.training_tasks[0]
    tuner.begin_task(0, classes)
    if not tuner.trains:

        def update() -> None:
            refresh_query(exp, batch)
            tuner.end_task(0, classes, [batch])

        return update
    optimizer = torch.optim.Adam([p for g in tuner.param_groups() for p in g["params"]], lr=1e-9)
    tuner.train()

    def step() -> None:
        refresh_query(exp, batch)
        out = tuner(batch, task=torch.zeros_like(batch.labels))
        loss = F.cross_entropy(out.logits, batch.labels)
        loss = loss + sum(tuner.loss_terms(batch, out, 0).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def refresh_query(exp: Experiment, batch, split: str = "train") -> None:
    """Recompute the frozen query where training does (augmented inputs are not cached)."""
    if exp.tuner.needs_query and split not in exp.caches:
        batch.query = exp.backbone.features(batch.inputs)


def eval_step(exp: Experiment, batch) -> Callable[[], None]:
    """The method's evaluation of new samples: the frozen query forward where the method needs
    one (computed once per test sample), then its forward with the task inferred per sample."""

    def step() -> None:
        with torch.no_grad():
            if exp.tuner.needs_query:
                batch.query = exp.backbone.features(batch.inputs)
            exp.tuner(batch)

    return step


def eval_floor_step(exp: Experiment, batch) -> Callable[[], None]:
    def step() -> None:
        exp.backbone.features(batch.inputs)

    return step


def measure(
    exp: Experiment, batch_size: int, repeats: int = 10, evaluation: bool = False
) -> dict[str, float]:
    """Samples/s of the method's training step and of the floor, on the same training batch;
    with ``evaluation``, also of its evaluation forward and of a bare frozen forward."""
    indices = exp.indices_of("train", exp.training_tasks[0])[:batch_size]
    batch = next(exp.batches("train", indices, batch_size))
    speed = {
        "method": samples_per_second(method_step(exp, batch), batch_size, repeats),
        "floor": samples_per_second(floor_step(exp, batch), batch_size, repeats),
    }
    if evaluation:
        exp.tuner.eval()
        classes = exp.training_tasks[0]
        exp.tuner.end_task(0, classes, exp.batches("train", indices, batch_size))
        speed["eval"] = samples_per_second(eval_step(exp, batch), batch_size, repeats)
        speed["eval_floor"] = samples_per_second(eval_floor_step(exp, batch), batch_size, repeats)
    return speed
