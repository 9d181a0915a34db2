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
from promptcl.taskid.tii import TaskIdentityClassifier, TIIOptions
from promptcl.tuners.align import TAPOptions, align_head
from promptcl.tuners.base import Batch


class HiDeStages(nn.Module):
    def __init__(self, dim: int, num_classes: int, tii: TIIOptions, tap: TAPOptions | None) -> None:
        super().__init__()
        self.tii_options = tii
        self.tap_options = tap
        self.query_stats = ClassGaussians(num_classes, dim, tii.covariance)
        self.feature_stats = ClassGaussians(num_classes, dim, tii.covariance)
        self.classifier = TaskIdentityClassifier(dim, num_classes)
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        self.class_task[list(classes)] = task

    def seen_classes(self) -> torch.Tensor:
        return (self.class_task >= 0).nonzero().squeeze(1)

    def infer_task(self, query: torch.Tensor) -> torch.Tensor:
        """(B,) task of each sample, from its frozen query feature."""
        return self.classifier.predict_task(query, self.seen_classes(), self.class_task)

    @torch.no_grad()
    def end_task(
        self,
        task: int,
        classes: Sequence[int],
        batches: Sequence[Batch],
        features: Sequence[torch.Tensor],
        head: nn.Linear,
    ) -> None:
        """batches: the task's training data; features: their prompted pooled features."""
        labels = torch.cat([b.labels for b in batches])
        queries = torch.cat([b.query for b in batches])
        seen = self.seen_classes()
        self.query_stats.fit(queries, labels)
        self.classifier.fit_task(
            queries, labels, classes, seen, self.query_stats, **self.tii_options.fit_kwargs()
        )
        self.feature_stats.fit(torch.cat(list(features)).float(), labels)
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
