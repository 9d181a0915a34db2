"""The loop skeleton of both protocols: epochs over a stage's samples in global batches through
the one optimisation step (promptcl.runtime), a log entry per step, and evaluation counts summed
over the ranks. A protocol passes in what differs, the way a method passes its loss terms: its
samples and how positions become batches, the loss of a batch, what a test batch counts.

Epoch e of stage s visits the samples in ``epoch_order(n, seed, s, e)``, so a run resumed at
a stage or epoch boundary repeats the unbroken run exactly.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from promptcl.data.batching import chunks_of
from promptcl.engine import Engine
from promptcl.runtime import (
    epoch_order,
    make_optimizer,
    optimisation_steps,
    progress_bar,
    set_epoch_lr,
)

Batches = Callable[[Sequence[Sequence[int]]], Iterator[Any]]  # chunks of positions -> batches


@dataclass
class Stage:
    """One stretch of training: a continual task, or base-to-novel's base shots."""

    index: int  # seeds the epoch orders (continual: the task; base-to-novel: 0)
    samples: Sequence[int]  # positions of the stage's training samples
    batches: Batches  # one batch per chunk of positions, in order
    name: str = ""  # shown before the epoch in progress bars and errors, e.g. "task 2/15"
    tags: dict[str, Any] = field(default_factory=dict)  # logged with each step, e.g. task


@dataclass
class Training:
    """The loss on the engine (a module, DDP-wrapped with several processes) and its optimiser."""

    step: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass
class Epoch:
    """What one epoch did: its learning rate and the loss terms of each step."""

    epoch: int
    lr: float
    steps: list[dict[str, float]]
    seconds: float


def mean_terms(steps: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each loss term's mean over ``steps`` (summed in step order); {} without steps."""
    sums: dict[str, float] = defaultdict(float)
    for terms in steps:
        for name, value in terms.items():
            sums[name] += value
    return {name: total / len(steps) for name, total in sums.items()}


class Loop:
    """Training and evaluation on an engine, for every protocol. ``steps`` counts optimisation
    steps over the whole run (the loggers' x axis)."""

    def __init__(self, engine: Engine, cfg: Any, seed: int) -> None:
        self.engine, self.cfg, self.seed = engine, cfg, seed
        self.steps = 0

    def setup(
        self,
        owner: nn.Module,
        loss_terms: Callable[[Any], dict[str, torch.Tensor]],
        groups: list[dict[str, Any]],
    ) -> Training | None:
        """A fresh optimiser over ``groups`` (a group's "lr_scale" multiplies train.lr) and the
        loss of ``owner``'s batches on the engine; None when nothing trains."""
        if not groups or self.cfg.epochs == 0:
            return None
        optimizer = make_optimizer(self.cfg, groups)
        return Training(*self.engine.setup(owner, loss_terms, optimizer))

    def epoch(self, stage: Stage, epoch: int, training: Training) -> Epoch:
        """One pass over the stage's samples in global batches of train.batch_size, this rank
        taking its share of each (loss terms weighted by that share)."""
        cfg, engine = self.cfg, self.engine
        start = time.perf_counter()
        lr = set_epoch_lr(training.optimizer, cfg, epoch)
        order = epoch_order(len(stage.samples), self.seed, stage.index, epoch)
        shuffled = [stage.samples[i] for i in order]
        shares = engine.global_batches(chunks_of(shuffled, cfg.batch_size))
        batches = stage.batches([chunk for chunk, _ in shares])
        items = ((b, len(chunk) / n) for b, (chunk, n) in zip(batches, shares, strict=True))
        where = f"epoch {epoch + 1}/{cfg.epochs}"
        steps = []
        for terms in optimisation_steps(
            items,
            training.step,
            training.optimizer,
            engine=engine,
            grad_clip=cfg.grad_clip,
            where=f"{stage.name} {where}" if stage.name else where,
            progress=cfg.progress,
            total=len(shares),
        ):
            steps.append(terms)
            self.steps += 1
            engine.log({**stage.tags, "epoch": epoch, "lr": lr, **terms}, self.steps)
        return Epoch(epoch, lr, steps, time.perf_counter() - start)

    @torch.no_grad()
    def evaluate(
        self,
        chunks: Sequence[Sequence[int]],
        batches: Batches,
        count: Callable[[Any], torch.Tensor],
        counts: torch.Tensor,
        desc: str,
    ) -> torch.Tensor:
        """``counts`` plus ``count(batch)`` of every test batch, the batches (chunks of
        positions) dealt round-robin to the ranks and the counts summed over them."""
        chunks = self.engine.shard(chunks)
        for batch in progress_bar(batches(chunks), len(chunks), desc, self.cfg.progress):
            counts += count(batch).to(counts.device)
        return self.engine.sum_over_ranks(counts.to(self.engine.device)).cpu()
