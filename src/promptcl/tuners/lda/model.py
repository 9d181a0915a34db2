"""Linear discriminant analysis on frozen features: class means with one shared covariance,
updated task by task from running sums (taskid/discriminant.py), shrinkage chosen per task on
held-out training data. logits_c = mu_c^T Sigma^{-1} q(x) - 1/2 mu_c^T Sigma^{-1} mu_c."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from promptcl.taskid.discriminant import DiscriminantClassifier
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput
from promptcl.tuners.lda.config import LDAConfig


class LDA(Tuner):
    name = "lda"
    description = "class means + one shared covariance of frozen features (LDA, no training)"
    config_class = LDAConfig
    needs_query = True
    trains = False

    def __init__(self, config: LDAConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.classifier = DiscriminantClassifier(
            backbone.dim, num_classes, "lda", config.shrinkages
        )
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        self.seen[list(classes)] = True

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        return TunerOutput(self.classifier(batch.query).float())

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        self.classifier.fit_task(
            data.cat("query"), data.cat("labels"), self.seen.nonzero().squeeze(1), seed=task
        )

    def report(self) -> dict[str, Any]:
        return self.classifier.report()
