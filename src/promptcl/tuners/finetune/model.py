"""Sequential fine-tuning of one shared prefix set and the head, task after task, with no
protection against forgetting: the lower bound of the prefix methods."""

from __future__ import annotations

import torch
from torch import nn

from promptcl.tuners.base import Batch, Tuner, TunerOutput, uniform_
from promptcl.tuners.finetune.config import FinetuneConfig
from promptcl.tuners.prompts import check_blocks, first_blocks, prefixes_from


class SequentialFinetune(Tuner):
    name = "finetune"
    description = "one shared prefix set trained task after task (lower bound)"
    config_class = FinetuneConfig

    def __init__(self, config: FinetuneConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.blocks = check_blocks(first_blocks(config.blocks, 5, backbone), backbone, "blocks")
        shape = (len(self.blocks), 2, config.length, backbone.dim)
        self.prompt = nn.Parameter(
            uniform_(torch.empty(shape), -config.prompt_init, config.prompt_init)
        )
        self.head = nn.Linear(backbone.dim, num_classes)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        hidden, keep = self.backbone(batch.inputs, prefixes=prefixes_from(self.blocks, self.prompt))
        return TunerOutput(self.head(self.backbone.pool(hidden, keep)))
