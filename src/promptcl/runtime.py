"""What every training command shares: the device, the seeds, the optimiser and its schedule,
and the one optimisation step (continual training, base-to-novel training, and the Gaussian
stages of HiDe-Prompt's TII and TAP all go through ``optimisation_steps``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from promptcl.errors import UsageError

if TYPE_CHECKING:
    from promptcl.engine import Engine

B = TypeVar("B")


class NonFiniteLoss(UsageError):
    """A training loss became NaN or infinite: the run stops instead of training on garbage."""


def task_seed(seed: int, task: int) -> int:
    """Task t of a run starts from torch.manual_seed(task_seed(seed, t)) (b2n: one task, 0)."""
    return seed * 100_003 + task


def epoch_order(n: int, seed: int, task: int, epoch: int) -> list[int]:
    """The shuffled order of n training samples in epoch ``epoch`` of task ``task``."""
    generator = torch.Generator().manual_seed(task_seed(seed, task) + epoch + 1)
    return torch.randperm(n, generator=generator).tolist()


def make_optimizer(cfg: Any, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``train.optimizer`` over parameter groups; a group's "lr_scale" multiplies train.lr."""
    groups = [{**g, "lr": cfg.lr * g.get("lr_scale", 1.0)} for g in groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_lr(cfg: Any, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based): train.lr (constant), or Dassl's schedule as
    CoOp, MaPLe and MPL train: warmup_lr for the warmup epochs, then
    lr * (1 + cos(pi * k / epochs)) / 2 with k counting epochs since the warmup (cosine)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return cosine_lr(cfg.lr, epoch - cfg.warmup_epochs, cfg.epochs)


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """The cosine schedule, lr * (1 + cos(pi * step / steps)) / 2: ``lr`` at step 0, one
    value per epoch in Dassl (``epoch_lr``) and HiDe (``train_on_gaussians``)."""
    return 0.5 * lr * (1 + math.cos(math.pi * step / steps))


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: Any, epoch: int) -> float:
    """Apply ``epoch_lr`` to every group (times its lr_scale); constant schedules touch nothing."""
    lr = epoch_lr(cfg, epoch)
    if cfg.schedule != "constant":
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def progress_bar(iterable: Iterable[B], total: int | None, desc: str, show: bool) -> Iterable[B]:
    """The one progress bar of promptcl: on a terminal when ``show`` (``train.progress``),
    cleared when done."""
    return tqdm(iterable, total=total, desc=desc, disable=None if show else True, leave=False)


def optimisation_steps(
    batches: Iterable[B],
    loss_terms: Callable[[B], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    engine: Engine | None = None,
    grad_clip: float | None = None,
    where: str = "training",
    fix: str = "lower train.lr or set train.grad_clip, in a new --out",
    progress: bool = False,
    total: int | None = None,
    first: int = 1,
) -> Iterator[dict[str, float]]:
    """One optimisation step per batch: loss = sum of ``loss_terms(batch)``, a finite check,
    zero_grad, backward, gradient-norm clipping over the optimiser's parameters, step (an
    update that overflows counts as a non-finite loss). Yields each step's loss terms as
    floats (summed over ranks on an ``engine`` with several: each rank's terms are weighted by
    its share of the global batch). ``where`` names the stage in the progress bar and in the
    error raised at the first non-finite loss (on every rank), with the step's number counted
    from ``first`` (a resumed epoch's), ``fix`` the likely fix."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = progress_bar(batches, total, where, progress)
    for step, batch in enumerate(bar, start=first):
        terms = loss_terms(batch)
        loss = sum(terms.values())
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])
        if engine is not None:
            values = engine.sum_over_ranks(values)
        value, *parts = values.tolist()
        if not math.isfinite(value):
            bad = ", ".join(f"{k}={v:.4g}" for k, v in zip(terms, parts, strict=True))
            raise NonFiniteLoss(f"non-finite loss ({bad}) in {where}, step {step}; {fix}")
        optimizer.zero_grad(set_to_none=True)
        if engine is None:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
        else:
            engine.backward(loss)
            if grad_clip is not None:
                engine.clip(optimizer, grad_clip)
        try:
            optimizer.step()
        except RuntimeError as err:  # an update beyond float range, e.g. Adam's lr / (1 - beta1)
            if "overflow" not in str(err):
                raise
            raise NonFiniteLoss(
                f"non-finite loss (the optimiser's update overflowed at loss {value:.4g}) in "
                f"{where}, step {step}; {fix}"
            ) from None
        bar.set_postfix(loss=f"{value:.3f}")
        yield dict(zip(terms, parts, strict=True))
