"""The tuner interface: what a method contributes to the shared loop.

A tuner owns every trainable tensor of its method (prompts, keys, routers, heads, masks) and
keeps none of them inside the frozen backbone, so ``trained_state`` is all a checkpoint needs.
Per-call inputs (the true task in training, the frozen query feature) are arguments of
``forward``; ``forward`` never writes state onto the module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from promptcl.backbones import Backbone
from promptcl.errors import UsageError


@dataclass
class TunerOutput:
    logits: torch.Tensor  # (B, C) over every class of the stream; the loop masks unseen ones
    task_pred: torch.Tensor | None = None  # (B,) inferred task ids at evaluation
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # inputs of loss_terms


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor  # (B,)
    index: torch.Tensor  # (B,) positions in the split
    query: torch.Tensor | None = None  # (B, d) frozen pooled feature, when the tuner needs it


class TaskData:
    """A task's training data for ``Tuner.end_task``: its batches in order (iterate, index,
    ``len``), and ``map`` for the per-sample forward passes that statistics are taken from.

    With several processes every rank holds every batch (their frozen queries included), and
    ``map`` computes each batch on one rank and sums the results (zeros on the other ranks),
    so every rank ends with exactly the tensors one process computes, at 1/world_size of the
    cost. ``shard`` picks this rank's share of the batch positions, ``total`` sums a tensor
    over ranks (``Engine.shard`` / ``Engine.sum_over_ranks``; the identity in one process).

    ``map`` runs ``fn`` under ``autocast`` (``Engine.autocast``: the run's precision, as the
    evaluation's forward passes); everything else in ``end_task`` runs in fp32: class means,
    covariances, Gaussian sampling, head alignment and solves lose too much in bf16."""

    def __init__(
        self,
        batches: Iterable[Batch],
        shard: Callable[[Sequence[int]], Sequence[int]] = lambda positions: positions,
        total: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.batches = list(batches)
        self.shard, self.total, self.autocast = shard, total, autocast

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, position: int) -> Batch:
        return self.batches[position]

    def cat(self, name: str) -> torch.Tensor:
        """A batch field over the whole task, e.g. ``cat("labels")``, ``cat("query")``."""
        return torch.cat([getattr(b, name) for b in self.batches])

    def map(self, fn: Callable[[Batch], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """``fn(batch)`` gives per-sample tensors (first dimension: the batch's size); returns
        each concatenated over the task's batches in order, floating ones in float32. A rank
        with no batch of its own computes the first one only to learn the shapes."""
        positions = list(self.shard(range(len(self.batches))))
        with self.autocast():
            results = {i: fn(self.batches[i]) for i in positions or [0]}
        sizes = [len(b.labels) for b in self.batches]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        outputs = []
        for k, first in enumerate(next(iter(results.values()))):
            dtype = torch.float32 if first.is_floating_point() else first.dtype
            out = first.new_zeros((sum(sizes), *first.shape[1:]), dtype=dtype)
            for i in positions:
                out[starts[i] : starts[i] + sizes[i]] = results[i][k]
            outputs.append(self.total(out))
        return tuple(outputs)


class Tuner(nn.Module):
    """Base class of every method. Subclasses set ``name`` and ``config_class``."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type]
    needs_query: ClassVar[bool] = False  # wants Batch.query (the un-prompted pooled feature)
    trains: ClassVar[bool] = True  # False: no gradient steps (e.g. class means)
    prepares: ClassVar[bool] = False  # True: prepare_task sees the task's data before training
    # how the task of a test sample is named (``promptcl list``); a config field ``task_id``
    # (the per-task edit methods) lists choices instead
    task_inference: ClassVar[str] = "none needed (one classifier over all seen classes)"
    # what the checkpoint holds where it grows with an option or the number of tasks T
    # (``promptcl list``); None: a size fixed by the backbone and the classes
    checkpoint_size: ClassVar[str | None] = None

    def __init__(self, config: Any, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.num_classes = num_classes

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        """Create the task's parameters and freeze those that must not move any more."""

    @torch.no_grad()
    def prepare_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """With ``prepares``: called after begin_task and before training task ``task``, with its
        training data (un-shuffled, as end_task's), e.g. to set parameters from its statistics."""

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        """task: (B,) true task ids in training; None at evaluation (the tuner infers it)."""
        raise NotImplementedError

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        """Extra training losses added to the cross-entropy, by name."""
        return {}

    def after_step(self) -> None:
        """Called after every optimisation step of a task's training (MOS merges its adapter
        with the older ones here); changes made here are in the next step's checkpoint."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; an optional "lr_scale" key multiplies the run's learning rate."""
        params = [p for p in self.own_parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """Called once after training task ``task``, with its training data (un-shuffled);
        forward passes over it go through ``data.map``, which shares them out over ranks."""

    def report(self) -> dict[str, Any]:
        """Method-specific figures for metrics.json (JSON-serialisable)."""
        return {}

    def heatmaps(self) -> dict[str, dict[str, Any]]:
        """name -> {"matrix", "row_label", "col_label", ...}: keyword arguments of
        ``report.plots.plot_heatmap``, drawn into the run directory as name.png."""
        return {}

    @property
    def resume_only(self) -> tuple[str, ...]:
        """Tensors only a further task reads (sums it adds to): a finished run's checkpoint
        drops them, as nothing can resume it; load, predict and eval do without them. Each
        submodule names its own (``resume_only_buffers``), so RanPAC's ridge sums leave
        wherever the ridge sits: ranpac's classifier, the HiDe family's TII classifier and
        head."""
        return tuple(
            f"{prefix}.{name}" if prefix else name
            for prefix, module in self.named_modules()
            if not in_backbone(prefix)
            for name in getattr(module, "resume_only_buffers", ())
        )

    @property
    def leaks_task_identity(self) -> bool:
        """True for modes that infer one task per (task-pure) batch: their results are flagged."""
        return False

    def own_parameters(self) -> Iterable[nn.Parameter]:
        return (p for n, p in self.named_parameters() if not in_backbone(n))

    def trained_state(self, finished: bool = False) -> dict[str, torch.Tensor]:
        """Every tensor the method learned or accumulated, without the frozen backbone; with
        ``finished`` (after the last task) without ``resume_only`` either."""
        dropped = self.resume_only if finished else ()
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not in_backbone(k) and k not in dropped
        }

    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None:
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
            needed = [k for k in missing if not in_backbone(k) and k not in self.resume_only]
            wrong = needed + list(unexpected)
        except RuntimeError as err:  # tensors of other shapes
            wrong = [str(err).splitlines()[-1].strip()]
        if wrong:
            raise UsageError(
                f"the checkpoint does not fit {self.name} as the config builds it ({wrong[0]}); "
                "use the config that made it"
            )

    def num_trained_parameters(self) -> int:
        return sum(p.numel() for p in self.own_parameters())

    def train(self, mode: bool = True) -> Tuner:
        super().train(mode)
        self.backbone.train(False)
        return self


def in_backbone(name: str) -> bool:
    """Whether a parameter or buffer name lies in the frozen backbone (also when a tuner runs
    another tuner as a submodule: ``base.backbone.*``)."""
    return "backbone" in name.split(".")


def uniform_(tensor: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return nn.init.uniform_(tensor, low, high)
