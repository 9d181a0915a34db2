"""Task-adaptive prediction (TAP) of HiDe-Prompt (Wang et al., NeurIPS 2023).

After each task, the output head is re-trained on pseudo-features drawn from the per-class
Gaussians of PROMPTED features of all seen classes (each class's statistics taken with its own
task's prompt), logits restricted to the seen classes. This removes the head's bias towards the
latest task's classes without storing old samples. Tuners fill the Gaussians in ``end_task``,
then call :func:`align_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.taskid.gaussians import ClassGaussians, train_on_gaussians


@dataclass
class TAPOptions:
    """Head alignment on Gaussian samples. Defaults are HiDe-Prompt's (its TAP lr is not
    scaled by the batch size, unlike its TII stage)."""

    epochs: int = field(
        default=30, metadata={"help": "alignment epochs, 0 to switch TAP off (HiDe: 30)"}
    )
    lr: float = field(
        default=0.005,
        metadata={"help": "SGD lr (momentum 0.9), cosine-annealed over the epochs (HiDe: 0.005)"},
    )
    batch_size: int = field(
        default=120, metadata={"help": "mini-batch size (HiDe: 5 x its batch of 24 = 120)"}
    )
    samples_per_class: int = field(
        default=120, metadata={"help": "Gaussian samples per class and epoch (HiDe: 120)"}
    )
    weight_decay: float = field(
        default=0.0,
        metadata={"help": "SGD weight decay (HiDe: 0 in effect, see train_on_gaussians)"},
    )

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError("epochs must be >= 0")
        if self.batch_size < 1 or self.samples_per_class < 1:
            raise ValueError("batch_size and samples_per_class must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")


def align_head(
    head: nn.Linear,
    gaussians: ClassGaussians,
    seen_classes: Sequence[int] | torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    samples_per_class: int,
    weight_decay: float = 0.0,
) -> None:
    """TAP: re-train ``head`` (d -> C) on samples of the Gaussians of all ``seen_classes``.

    Only the head's parameters move; works under an outer ``torch.no_grad``.
    """
    params = [p for p in head.parameters() if p.requires_grad]
    train_on_gaussians(
        head,
        params,
        gaussians,
        seen_classes,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        samples_per_class=samples_per_class,
        weight_decay=weight_decay,
    )


def contrast_to_means(
    means: torch.Tensor, features: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The contrastive term of HiDe-Prompt's and MOS's public code (``orth_loss``): with
    M = [old classes' feature means (k, d); the batch's features (B, d)],
    CE(M M^T / temperature, I), which pushes the batch's features away from the old classes'
    means (and from each other)."""
    M = torch.cat([means, features])
    similarity = M @ M.T / temperature
    return F.cross_entropy(similarity, torch.arange(len(M), device=M.device))
