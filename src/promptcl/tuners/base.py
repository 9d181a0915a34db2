"""The tuner interface: what a method contributes to the shared loop.

A tuner owns every trainable tensor of its method (prompts, keys, routers, heads, masks) and
keeps none of them inside the frozen backbone, so ``trained_state`` is all a checkpoint needs.
Per-call inputs (the true task in training, the frozen query feature) are arguments of
``forward``; ``forward`` never writes state onto the module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


class Tuner(nn.Module):
    """Base class of every method. Subclasses set ``name`` and ``config_class``."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type]
    needs_query: ClassVar[bool] = False  # wants Batch.query (the un-prompted pooled feature)
    trains: ClassVar[bool] = True  # False: no gradient steps (e.g. class means)
    # how the task of a test sample is named (``promptcl list``); a config field ``task_id``
    # (the per-task edit methods) lists choices instead
    task_inference: ClassVar[str] = "none needed (one classifier over all seen classes)"

    def __init__(self, config: Any, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.num_classes = num_classes

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        """Create the task's parameters and freeze those that must not move any more."""

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        """task: (B,) true task ids in training; None at evaluation (the tuner infers it)."""
        raise NotImplementedError

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        """Extra training losses added to the cross-entropy, by name."""
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; an optional "lr_scale" key multiplies the run's learning rate."""
        params = [p for p in self.own_parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], batches: Iterable[Batch]) -> None:
        """Called once after training task ``task``, with its training data (un-shuffled)."""

    def report(self) -> dict[str, Any]:
        """Method-specific figures for metrics.json (JSON-serialisable)."""
        return {}

    def heatmaps(self) -> dict[str, dict[str, Any]]:
        """name -> {"matrix", "row_label", "col_label", ...}: keyword arguments of
        ``report.plots.plot_heatmap``, drawn into the run directory as name.png."""
        return {}

    @property
    def leaks_task_identity(self) -> bool:
        """True for modes that infer one task per (task-pure) batch: their results are flagged."""
        return False

    def own_parameters(self) -> Iterable[nn.Parameter]:
        return (p for n, p in self.named_parameters() if not in_backbone(n))

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Every tensor the method learned or accumulated, without the frozen backbone."""
        return {
            k: v.detach().cpu().contiguous()
            for k, v in self.state_dict().items()
            if not in_backbone(k)
        }

    def load_trained_state(self, state: Mapping[str, torch.Tensor]) -> None:
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
            wrong = [k for k in missing if not in_backbone(k)] + list(unexpected)
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
