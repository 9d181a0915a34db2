"""RanPAC (McDonnell et al., "RanPAC: Random Projections and Pre-trained Models for Continual
Learning", NeurIPS 2023): a fixed random projection with a ReLU of the frozen feature and a ridge
classifier on it, accumulated task by task as sums and finalised after each task, lambda chosen
per task on held-out training features (taskid/ridge.py, shared with the TII classifier and the
HiDe family's head of that name).
Phase 1 (``adapt``, off by default): a shared prefix and a head train on the first task with the
loop's cross-entropy, then freeze; the projection then reads the prefixed pooled features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptcl.taskid.ridge import RandomFeatureRidge
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput, uniform_
from promptcl.tuners.prompts import check_blocks, first_blocks, prefixes_from
from promptcl.tuners.ranpac.config import RanPACConfig


class RanPAC(Tuner):
    name = "ranpac"
    description = "random projection + ReLU of frozen features, incremental ridge classifier"
    config_class = RanPACConfig
    needs_query = True
    trains = False  # phase 1 (adapt) trains on the first task: set per instance

    def __init__(self, config: RanPACConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        d = backbone.dim
        self.trains = config.adapt
        self.classifier = RandomFeatureRidge(d, num_classes, config.dim, config.ridges)
        if config.adapt:
            blocks = first_blocks(config.adapt_blocks, 5, backbone)
            self.blocks = check_blocks(blocks, backbone, "adapt_blocks")
            a = config.prompt_init
            shape = (len(self.blocks), 2, config.adapt_length, d)
            self.prompt = nn.Parameter(uniform_(torch.empty(shape), -a, a))
            self.adapt_head = nn.Linear(d, num_classes)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        if task > 0:  # phase 1 is over: the adapted prefix is frozen
            for p in self.own_parameters():
                p.requires_grad_(False)

    def feature(self, batch: Batch) -> torch.Tensor:
        """(B, d): the frozen query, or the pooled feature of the adapted backbone."""
        if not self.config.adapt:
            return batch.query
        hidden, keep = self.backbone(batch.inputs, prefixes=prefixes_from(self.blocks, self.prompt))
        return self.backbone.pool(hidden, keep)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        feature = self.feature(batch)
        if self.training:  # only phase 1 trains
            return TunerOutput(self.adapt_head(feature))
        return TunerOutput(self.classifier(feature))

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        (features,) = data.map(lambda batch: (self.feature(batch),))
        self.classifier.fit_task(features, data.cat("labels"), seed=task)

    def report(self) -> dict[str, Any]:
        return self.classifier.report()
