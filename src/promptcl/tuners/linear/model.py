"""Linear probe grown task by task: frozen pooled features, one head over all classes, trained on
each task's data with the other classes' logits masked."""

from __future__ import annotations

import torch
from torch import nn

from promptcl.tuners.base import Batch, Tuner, TunerOutput
from promptcl.tuners.linear.config import LinearConfig


class LinearProbe(Tuner):
    name = "linear"
    description = "frozen features + incremental linear head"
    config_class = LinearConfig
    needs_query = True

    def __init__(self, config: LinearConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.head = nn.Linear(backbone.dim, num_classes)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        return TunerOutput(self.head(batch.query))
