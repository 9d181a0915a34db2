"""NCM on frozen features (SimpleCIL, Zhou et al. 2023): each class is the mean of its frozen
pooled training features (taskid/discriminant.py's ``ClassSums``, in the means' dtype); a
sample goes to the class of highest cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from promptcl.taskid import cosine
from promptcl.taskid.discriminant import ClassSums
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput
from promptcl.tuners.ncm.config import NCMConfig


class NCM(Tuner):
    name = "ncm"
    description = "class means of frozen features, cosine classifier (no training)"
    config_class = NCMConfig
    needs_query = True
    trains = False

    def __init__(self, config: NCMConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.register_buffer("class_means", torch.zeros(num_classes, backbone.dim))

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        return TunerOutput(self.config.scale * cosine(batch.query, self.class_means))

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        means = self.class_means
        sums = ClassSums(*means.shape, dtype=means.dtype).to(means.device)
        for batch in data:
            sums.accumulate(batch.query, batch.labels)
        idx = torch.as_tensor(list(classes), device=means.device)
        self.class_means[idx] = sums.means(idx)
