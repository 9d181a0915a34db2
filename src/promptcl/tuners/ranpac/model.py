"""RanPAC (McDonnell et al., "RanPAC: Random Projections and Pre-trained Models for Continual
Learning", NeurIPS 2023): a fixed random projection with a ReLU of the frozen feature and a ridge
classifier on it, accumulated task by task as sums and finalised after each task, lambda chosen
per task on held-out training features (taskid/ridge.py, shared with the TII classifier and the
HiDe family's head of that name).
A finished run's checkpoint keeps W_rand and W_o only (``resume_only``): G and Q serve a
further task, and at M = 10000 G alone is 800 MB.
Phase 1 (``adapt``, off by default): a shared prefix (tuners/firstsession.py) and a head train
on the first task with the loop's cross-entropy, then freeze; the projection then reads the
prefixed pooled features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptcl.taskid.ridge import RandomFeatureRidge
from promptcl.tuners.base import Batch, TaskData, TunerOutput
from promptcl.tuners.firstsession import FirstSessionTuner, first_session_blocks
from promptcl.tuners.ranpac.config import RanPACConfig


class RanPAC(FirstSessionTuner):
    name = "ranpac"
    description = "random projection + ReLU of frozen features, incremental ridge classifier"
    checkpoint_size = (
        "grows with M (tuner.dim): 8 M^2 bytes (the float64 Gram matrix, 800 MB at M = 10000) "
        "until the last task; a finished run keeps 4 M (d + C) bytes (projection, W_o)"
    )
    config_class = RanPACConfig
    needs_query = True
    trains = False  # phase 1 (adapt) trains on the first task: set per instance

    def __init__(self, config: RanPACConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        d = backbone.dim
        self.trains = config.adapt
        self.classifier = RandomFeatureRidge(d, num_classes, config.dim, config.ridges)
        if config.adapt:  # the prefix of tuners/firstsession.py
            blocks = first_session_blocks("prefix", config.adapt_blocks, backbone, "adapt_blocks")
            self.add_first_session("prefix", blocks, d, config.adapt_length, config.prompt_init)
            self.adapt_head = nn.Linear(d, num_classes)

    def feature(self, batch: Batch) -> torch.Tensor:
        """(B, d): the frozen query, or the pooled feature of the adapted backbone."""
        return self.adapted_feature(batch.inputs) if self.config.adapt else batch.query

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
