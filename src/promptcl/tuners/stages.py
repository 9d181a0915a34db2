"""HiDe-Prompt's two stages after a task, shared by hide, norga and hash.

TII: Gaussians of the frozen query q(x) per class, and a classifier over q(x) trained on the
task's real features and then aligned on samples of every seen class's Gaussian; at test it
names each sample's task. TAP: Gaussians of the prompted features h(x) (taken with the true
task's parameters) per class; the head is re-aligned on samples of all seen classes.

The head at test (``head``, HEADS): the linear head trained with the prompts and aligned by TAP
(the papers'), or a second-order classifier over the prompted features (``lda``, ``ranpac``),
whose per-class sums grow after each task with that task's training samples prompted by that
task's own parameters; an old class's sums are never touched again and no sample is stored.
The linear head trains (and TAP runs) whatever the choice, so the prompts train alike and the
choice changes the evaluation only.

With ``tii.adapt`` (first-session adaptation of the query, ``AdaptedQuery``) q(x) is not the
frozen feature but the pooled feature of the backbone with a prefix trained on the first task,
beside that task's prompts, with a head of its own (cross-entropy over the task's classes), and
frozen from the second task on: ranpac's adapt, as the TII's query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones import Backbone
from promptcl.registry import Registry
from promptcl.taskid.gaussians import ClassGaussians
from promptcl.taskid.ridge import side_generator
from promptcl.taskid.tii import (
    DiscriminantTaskClassifier,
    RidgeTaskClassifier,
    TaskInference,
    TIIOptions,
)
from promptcl.tuners.align import TAPOptions, align_head, contrast_to_means
from promptcl.tuners.base import Batch, TaskData
from promptcl.tuners.firstsession import FirstSession, first_session_blocks

HEAD_STREAM = 2  # the ranpac head's W_rand comes from its own stream (side_generator)
ADAPT_STREAM = 3  # so do the adapted query's prefix and head (tii.adapt)
HEADS: Registry[Any] = Registry("head")
HEADS.add("linear", None, "the linear head trained with the prompts, TAP-aligned (the papers')")
HEADS.add(
    "lda",
    lambda dim, c, o: DiscriminantTaskClassifier(dim, c, "lda", o.shrinkages),
    "LDA on the prompted features, from per-class sums (grid: tuner.tii.shrinkages)",
)
HEADS.add(
    "ranpac",
    lambda dim, c, o: RidgeTaskClassifier(
        dim, c, o.projection_dim, o.ridges, side_generator(HEAD_STREAM)
    ),
    "RanPAC's random-feature ridge on the prompted features, from sums (M, grid: tuner.tii.*)",
)


def head_option() -> Any:
    """The ``head`` field of the configs of hide, norga and hash."""
    return field(
        default="linear",
        metadata={
            "help": "Classifier at test over the prompted features: linear (the paper's, TAP-"
            "aligned), lda or ranpac (second-order, from per-class sums built as each task "
            "ends, with its own prompts; docs/METHODS.md). The linear head trains either way."
        },
    )


def check_head(name: str) -> None:
    if name not in HEADS:
        raise ValueError(f"head must be one of {HEADS.choices()}")


class AdaptedQuery(FirstSession, nn.Module):
    """The TII's query with ``tii.adapt``: a prefix (tuners/firstsession.py, U(-1, 1) at the
    start) and a linear head that train on the first task only."""

    def __init__(self, backbone: Backbone, num_classes: int, tii: TIIOptions) -> None:
        super().__init__()
        blocks = first_session_blocks("prefix", tii.adapt_blocks, backbone, "tii.adapt_blocks")
        self.add_first_session("prefix", blocks, backbone.dim, tii.adapt_length)
        self.head = nn.Linear(backbone.dim, num_classes)


class HiDeStages(TaskInference):
    def __init__(
        self,
        dim: int,
        num_classes: int,
        tii: TIIOptions,
        tap: TAPOptions | None,
        head: str = "linear",
        backbone: Backbone | None = None,
    ) -> None:
        """``backbone``: the tuner's, needed with ``tii.adapt`` (not held)."""
        super().__init__(dim, num_classes, tii)
        self.tap_options = tap
        self.feature_stats = ClassGaussians(num_classes, dim, tii.covariance)
        build = HEADS[head]
        self.second_head = None if build is None else build(dim, num_classes, tii)
        self.adapted = None
        if tii.adapt:
            if backbone is None:
                raise ValueError("tii.adapt needs the backbone")
            with torch.random.fork_rng(devices=[]):  # the prompts start as without it
                torch.manual_seed(torch.initial_seed() + ADAPT_STREAM)
                self.adapted = AdaptedQuery(backbone, num_classes, tii)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        if self.adapted is not None:  # the first session is over from task 1 on
            self.adapted.requires_grad_(task == 0)

    def trainable(self) -> list[nn.Parameter]:
        """The adapted query's prefix and head while the first task trains; else none."""
        if self.adapted is None:
            return []
        return [p for p in self.adapted.parameters() if p.requires_grad]

    def query(self, batch: Batch, backbone: Backbone) -> torch.Tensor:
        """(B, d) q(x): the frozen query, or with ``tii.adapt`` the adapted feature."""
        if self.adapted is None:
            return batch.query
        return self.adapted.first_session_feature(backbone, batch.inputs).float()

    def task_of(self, batch: Batch, backbone: Backbone) -> torch.Tensor:
        """(B,) the inferred task of each sample."""
        return self.infer_task(self.query(batch, backbone))

    def loss_terms(self, batch: Batch, backbone: Backbone, task: int) -> dict[str, torch.Tensor]:
        """With ``tii.adapt``, on the first task: the adapted query head's cross-entropy over
        the task's classes (as the run's own with train.mask_logits)."""
        if self.adapted is None or task > 0:
            return {}
        classes = (self.class_task == task).nonzero().squeeze(1)
        logits = self.adapted.head(self.query(batch, backbone))[:, classes]
        return {"tii_adapt": F.cross_entropy(logits, torch.searchsorted(classes, batch.labels))}

    def logits(self, features: torch.Tensor, head: nn.Linear) -> torch.Tensor:
        """(B, C): the linear ``head``'s logits in training and with head=linear; at test
        otherwise, the second-order head's scores over the prompted features (B, d)."""
        if self.training or self.second_head is None:
            return head(features)
        return self.second_head(features)

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
        backbone: Backbone | None = None,
    ) -> None:
        """data: the task's training data; features (n, d): their prompted pooled features;
        ``backbone`` runs the adapted query (``tii.adapt``)."""
        labels = data.cat("labels")
        if self.adapted is None:
            queries = data.cat("query")
        else:
            (queries,) = data.map(lambda batch: (self.query(batch, backbone),))
        self.fit(task, classes, queries, labels)
        seen = self.seen_classes()
        self.feature_stats.fit(features.float(), labels)
        if self.second_head is not None:  # this task's classes' sums, with its own prompts
            self.second_head.learn(self, task, classes, features.float(), labels)
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
