"""Soft-TransFormers (Kang et al.): per-task real-valued masks over frozen weights, on top of
DualPrompt (default) or L2P.

In each block of ``blocks`` (default: the last 3), task t owns masks M_t of the shapes of the
frozen attention projections (timm: qkv, proj; BERT: query, key, value, attention output) and,
with ``mlp``, of the MLP's fc1 and fc2; a masked layer computes x (W * M_t)^T + b (eq. 3 and 6;
the bias is not masked; the public code multiplies it by an uninitialised ``ones_bias``, a
defect docs/METHODS.md records). Masks start at 1 (``mask_init=ones``) or U(a, b)
(``uniform``; the public code uses U(0.99, 1)). The loss is the base method's (DualPrompt: eq. 7,
CE + lambda (1 - cos(q(x), k_t))). Task identity: Prompt ID or Gradient ID (tuners/edits.py).
"""

from __future__ import annotations

import torch
from torch import nn

from promptcl.backbones.masked import WeightEdit, masked_weight
from promptcl.tuners.edits import EditTuner
from promptcl.tuners.softtf.config import SoftTFConfig


class SoftMask(WeightEdit):
    """W -> W * M, M real-valued of W's shape."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = nn.Parameter(mask)

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        return masked_weight(weight, self.mask)


class SoftTF(EditTuner):
    name = "softtf"
    description = "per-task soft masks on frozen attention weights over DualPrompt or L2P"
    checkpoint_size = "grows with T: a mask per masked weight per task (7 MB a task on MiniLM-L6)"
    config_class = SoftTFConfig

    def make_edit(self, layer: nn.Linear) -> SoftMask:
        mask = torch.empty(layer.weight.shape, dtype=torch.float32)
        if self.config.mask_init == "ones":
            return SoftMask(nn.init.ones_(mask))
        low, high = self.config.uniform_range
        return SoftMask(nn.init.uniform_(mask, low, high))
