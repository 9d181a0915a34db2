"""The loop skeleton of both protocols: epochs over a stage's samples in global batches through
the one optimisation step (promptcl.runtime), a log entry per step, and evaluation counts summed
over the ranks. A protocol passes in what differs, the way a method passes its loss terms: its
samples and how positions become batches, the loss of a batch, what a test batch counts.

Epoch e of stage s visits the samples in ``epoch_order(n, seed, s, e)``, so a run resumed at
a stage or epoch boundary repeats the unbroken run exactly. Within a unit, every
train.checkpoint_every steps the loop calls ``checkpoint`` (set by core.run); ``tensors`` then
holds the optimiser's state and torch's random state, and a loop given them back with the
``Position`` (``resume``) skips the steps already done and continues as the unbroken run.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
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

OPTIMIZER = "optimizer."  # checkpoint tensors of the optimiser's state, not of the method
RNG = "torch_rng_state"  # checkpoint tensor of torch's random state within a unit
EPOCH_RNG = "torch_rng_state.epoch"  # and of it at the start of the epoch in progress

Batches = Callable[[Sequence[Sequence[int]]], Iterator[Any]]  # chunks of positions -> batches


@dataclass
class Stage:
    """One stretch of training: a continual task, or base-to-novel's base shots."""

    index: int  # seeds the epoch orders (continual: the task; base-to-novel: 0)
    samples: Sequence[int]  # positions of the stage's training samples
    batches: Batches  # one batch per chunk of positions, in order
    name: str = ""  # shown before the epoch in progress bars and errors, e.g. "task 2/15"
    tags: dict[str, Any] = field(default_factory=dict)  # logged with each step, e.g. task
    after_step: Callable[[], None] = lambda: None  # after each optimisation step (MOS's merge)


@dataclass
class Training:
    """The loss on the engine (a module, DDP-wrapped with several processes) and its optimiser."""

    step: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass
class Position:
    """Where training within a unit stands: the epoch in progress, the steps done in it, and
    the loss terms of every step of the unit so far."""

    epoch: int
    step: int = 0
    terms: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Trained:
    """What a unit's training did: its last epoch's learning rate, the loss terms of each of
    its steps (those before a resume included) and the seconds of this process."""

    lr: float
    steps: list[dict[str, float]]
    seconds: float


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as flat tensors ("optimizer.<index>.<slot>")."""
    return {
        f"{OPTIMIZER}{index}.{key}": torch.as_tensor(value)
        for index, slots in optimizer.state_dict()["state"].items()
        for key, value in slots.items()
    }


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Back to the state ``optimizer_tensors`` gave (the "optimizer." tensors of ``tensors``)."""
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(OPTIMIZER):
            index, key = name.removeprefix(OPTIMIZER).split(".", 1)
            slots.setdefault(int(index), {})[key] = value
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": slots, "param_groups": groups})


def method_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors without the loop's (optimiser and random state)."""
    return {
        k: v
        for k, v in tensors.items()
        if not k.startswith(OPTIMIZER) and k not in (RNG, EPOCH_RNG)
    }


def mean_terms(steps: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each loss term's mean over ``steps`` (summed in step order); {} without steps."""
    sums: dict[str, float] = defaultdict(float)
    for terms in steps:
        for name, value in terms.items():
            sums[name] += value
    return {name: total / len(steps) for name, total in sums.items()}


class Loop:
    """Training and evaluation on an engine, for every protocol. ``steps`` counts optimisation
    steps over the whole run (the loggers' x axis); ``position`` where the unit in progress
    stands (None outside its training)."""

    def __init__(self, engine: Engine, cfg: Any, seed: int) -> None:
        self.engine, self.cfg, self.seed = engine, cfg, seed
        self.steps = 0
        self.position: Position | None = None
        self.training: Training | None = None  # of the unit in progress
        self.checkpoint: Callable[[], None] | None = None  # a mid-unit checkpoint (core.run)
        # of a resumed checkpoint, for the next setup and train
        self.saved_optimizer: dict[str, torch.Tensor] = {}
        self.saved_rng: tuple[torch.Tensor, torch.Tensor] | None = None  # epoch start, step
        self.epoch_rng = torch.get_rng_state()  # at the start of the epoch in progress

    def resume(self, position: Position | None, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from a checkpoint: its optimiser state goes to the next ``setup``, and
        within a unit (``position``) its random state to the next ``train``."""
        self.position = position
        self.saved_optimizer = {k: v for k, v in tensors.items() if k.startswith(OPTIMIZER)}
        within = position is not None and RNG in tensors and EPOCH_RNG in tensors
        self.saved_rng = (tensors[EPOCH_RNG], tensors[RNG]) if within else None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The optimiser's state, and within a unit torch's random state."""
        tensors = {} if self.training is None else optimizer_tensors(self.training.optimizer)
        if self.position is not None:
            tensors[RNG] = torch.get_rng_state()
            tensors[EPOCH_RNG] = self.epoch_rng
        return tensors

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
        self.training = Training(*self.engine.setup(owner, loss_terms, optimizer))
        if self.saved_optimizer:
            load_optimizer(optimizer, self.saved_optimizer)
            self.saved_optimizer = {}
        return self.training

    def train(self, stage: Stage, epochs: range, training: Training) -> Trained:
        """A unit's epochs of the stage, continued from ``position`` after a resume within
        the unit (its random state restored, the steps it had done skipped)."""
        start = time.perf_counter()
        if self.position is None:
            self.position = Position(epochs.start)
        at, lr, resumed = self.position, 0.0, self.saved_rng
        self.saved_rng = None
        for epoch in range(at.epoch, epochs.stop):
            if epoch > at.epoch:
                at.epoch, at.step, resumed = epoch, 0, None
            lr = self.epoch(stage, at, training, resumed)
        self.position = None  # the unit's training is done
        return Trained(lr, at.terms, time.perf_counter() - start)

    def epoch(
        self,
        stage: Stage,
        at: Position,
        training: Training,
        resumed: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> float:
        """Epoch ``at.epoch`` from step ``at.step``: the stage's samples in global batches of
        train.batch_size, this rank taking its share of each (loss terms weighted by that
        share). Returns its learning rate. ``resumed`` (torch's random state at the epoch's
        start and at the step) repeats the unbroken epoch's random draws: the batches before
        the step are loaded (augmentation, loader workers) but not trained on."""
        cfg, engine, epoch = self.cfg, self.engine, at.epoch
        if resumed is not None:
            torch.set_rng_state(resumed[0])
        self.epoch_rng = torch.get_rng_state()
        lr = set_epoch_lr(training.optimizer, cfg, epoch)
        order = epoch_order(len(stage.samples), self.seed, stage.index, epoch)
        shuffled = [stage.samples[i] for i in order]
        shares = engine.global_batches(chunks_of(shuffled, cfg.batch_size))
        batches = stage.batches([chunk for chunk, _ in shares])
        items = ((b, len(chunk) / n) for b, (chunk, n) in zip(batches, shares, strict=True))
        deque(islice(items, at.step), maxlen=0)  # done before the checkpoint
        if resumed is not None:
            torch.set_rng_state(resumed[1])
        where = f"epoch {epoch + 1}/{cfg.epochs}"
        every = cfg.checkpoint_every
        for terms in optimisation_steps(
            items,
            training.step,
            training.optimizer,
            engine=engine,
            grad_clip=cfg.grad_clip,
            where=f"{stage.name} {where}" if stage.name else where,
            progress=cfg.progress,
            total=len(shares) - at.step,
            first=at.step + 1,
        ):
            stage.after_step()
            at.terms.append(terms)
            at.step += 1
            self.steps += 1
            engine.log({**stage.tags, "epoch": epoch, "lr": lr, **terms}, self.steps)
            if every is not None and self.checkpoint and len(at.terms) % every == 0:
                self.checkpoint()
        return lr

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
