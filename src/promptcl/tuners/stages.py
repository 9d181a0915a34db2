"""HiDe-Prompt's two stages after a task, shared by hide, norga and hash.

TII: Gaussians of the frozen query q(x) per class, and a classifier over q(x) trained on the
task's real features and then aligned on samples of every seen class's Gaussian; at test it
names each sample's task. TAP: Gaussians of the prompted features h(x) (taken with the true
task's parameters) per class; the head is re-aligned on samples of all seen classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from promptcl.taskid.gaussians import ClassGaussians
from promptcl.taskid.tii import TaskInference, TIIOptions
from promptcl.tuners.align import TAPOptions, align_head, contrast_to_means
from promptcl.tuners.base import TaskData


class HiDeStages(TaskInference):
    def __init__(self, dim: int, num_classes: int, tii: TIIOptions, tap: TAPOptions | None) -> None:
        super().__init__(dim, num_classes, tii)
        self.tap_options = tap
        self.feature_stats = ClassGaussians(num_classes, dim, tii.covariance)

    def contrast(self, features: torch.Tensor, task: int, temperature: float) -> torch.Tensor:
        """HiDe-Prompt's contrastive term (``contrast_to_means``) against the stored means of
        the prompted features of earlier tasks' classes."""
        old = (self.class_task < task) & (self.class_task >= 0)
        return contrast_to_means(self.feature_stats.mean[old], features, temperature)

    @torch.no_grad()
    def end_task(
        self,
        task: int,
        classes: Sequence[int],
        data: TaskData,
        features: torch.Tensor,
        head: nn.Linear,
    ) -> None:
        """data: the task's training data; features (n, d): their prompted pooled features."""
        labels = data.cat("labels")
        self.fit(task, classes, data.cat("query"), labels)
        seen = self.seen_classes()
        self.feature_stats.fit(features.float(), labels)
        if self.tap_options is not None and task > 0:
            tap = self.tap_options
            align_head(
                head,
                self.feature_stats,
                seen,
                epochs=tap.epochs,
                lr=tap.lr,
                batch_size=tap.batch_size,
                samples_per_class=tap.samples_per_class,
                weight_decay=tap.weight_decay,
            )
