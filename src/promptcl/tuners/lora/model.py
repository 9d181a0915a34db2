"""LoRA (Hu et al., ICLR 2022) per task, as Soft-TF's baseline: task t's layer computes
x (W + (alpha / r) B_t A_t)^T + b on the same frozen layers Soft-TF masks, with the same task
inference. A_t starts as Kaiming-uniform and B_t at zero (the layer starts as the frozen one),
as in the LoRA paper and peft.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from promptcl.backbones.masked import WeightEdit, added_weight
from promptcl.tuners.edits import EditTuner
from promptcl.tuners.lora.config import LoRAConfig


class LowRank(WeightEdit):
    """W -> W + scale * B A, A (r, in), B (out, r)."""

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = scale

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        return added_weight(weight, self.scale * (self.B @ self.A))  # bf16 W: the sum in fp32


class LoRA(EditTuner):
    name = "lora"
    description = "per-task low-rank updates of frozen attention weights, over DualPrompt"
    config_class = LoRAConfig

    def make_edit(self, layer: nn.Linear) -> LowRank:
        rank = self.config.rank
        return LowRank(layer.in_features, layer.out_features, rank, self.config.alpha / rank)
