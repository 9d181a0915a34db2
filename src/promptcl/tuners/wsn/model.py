"""WSN (Kang et al., ICML 2022, "Forget-free continual learning with winning subnetworks") as
Soft-TF's baseline: per task, a binary mask over each frozen weight, the top-c share of the
task's learned scores, trained with a straight-through estimator (the mask's gradient is passed
to the scores unchanged). Here the pretrained weights stay frozen (only scores train), as in
Soft-TF's DualPrompt-WSN rows. Scores start at |W|, so a new task starts from magnitude pruning
of the pretrained layer (the public code's score initialisation is not documented).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from promptcl.backbones.masked import WeightEdit, masked_weight
from promptcl.tuners.edits import EditTuner
from promptcl.tuners.wsn.config import WSNConfig


class TopShare(torch.autograd.Function):
    """Forward: 1 for the ``keep`` share of largest scores, else 0. Backward: identity (STE)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, keep: float) -> torch.Tensor:
        drop = math.floor((1 - keep) * scores.numel())
        if drop == 0:
            return torch.ones_like(scores)
        threshold = scores.flatten().kthvalue(drop).values
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class BinaryMask(WeightEdit):
    """W -> W * 1[s in the top-c share], s learned scores of W's shape."""

    def __init__(self, scores: torch.Tensor, keep: float) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)
        self.keep = keep

    def mask(self) -> torch.Tensor:
        return TopShare.apply(self.scores, self.keep)

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        return masked_weight(weight, self.mask())


class WSN(EditTuner):
    name = "wsn"
    description = (
        "per-task binary top-c masks of frozen weights (straight-through), over DualPrompt"
    )
    checkpoint_size = "grows with T: a mask per masked weight per task (7 MB a task on MiniLM-L6)"
    config_class = WSNConfig

    def make_edit(self, layer: nn.Linear) -> BinaryMask:
        return BinaryMask(layer.weight.detach().abs().float().clone(), self.config.keep)
