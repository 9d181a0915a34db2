"""Task-identity inference (TII) of HiDe-Prompt (Wang et al., NeurIPS 2023).

A small classifier on the frozen query feature q(x) predicts the CLASS of a sample among all
seen classes; the task owning that class is the inferred task (HiDe's ``prompt_id`` =
``target_task_map[argmax]``). After each task the classifier is (a) trained on the task's real
features, logits of other classes masked, then (b) aligned on pseudo-features drawn from the
stored per-class Gaussians of q(x) of ALL seen classes (the "original model" of HiDe's code,
tii_trainer.py and engines/hide_tii_engine.py), so old classes are not forgotten although no
old sample is stored.

``TIIOptions.classifier`` chooses the classifier whose predicted class names the task: ``mlp``
(HiDe's, above), ``lda`` (class means with one shared covariance) and ``ncm`` (cosine to class
means), both from running sums of q(x) (taskid/discriminant.py), and ``ranpac`` (RanPAC's random
projection + ReLU + ridge, from running sums of h h^T and h y^T; taskid/ridge.py).
``TaskInference`` holds the chosen one with the class -> task map; HiDe's stages and the
per-task edit methods use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from promptcl.registry import Registry
from promptcl.taskid.discriminant import SHRINKAGES, DiscriminantClassifier
from promptcl.taskid.gaussians import (
    ClassGaussians,
    Covariance,
    as_index,
    train_epoch,
    train_on_gaussians,
)
from promptcl.taskid.ridge import PROJECTION_DIM, RIDGES, RandomFeatureRidge, side_generator

MAX_GRAD_NORM = 1.0  # HiDe's --clip-grad for the TII's training on real features


@dataclass
class TIIOptions:
    """Training of the TII classifier. Defaults follow HiDe-Prompt's Split-CIFAR100 scripts
    (batch 24; HiDe multiplies its lrs by batch/256 in the TII stage: the values here are the
    effective ones)."""

    epochs: int = field(
        default=20, metadata={"help": "epochs on the current task's real q(x) (HiDe: 20)"}
    )
    align_epochs: int = field(
        default=30,
        metadata={"help": "epochs on Gaussian samples of all seen classes (HiDe: crct_epochs 30)"},
    )
    lr: float = field(
        default=5e-4 * 24 / 256,
        metadata={"help": "Adam lr on real features, constant (HiDe: 0.0005 * 24/256)"},
    )
    align_lr: float = field(
        default=5e-3 * 24 / 256,
        metadata={"help": "SGD lr of the alignment, cosine-annealed (HiDe: ca_lr 0.005 * 24/256)"},
    )
    batch_size: int = field(default=24, metadata={"help": "mini-batch size (HiDe: 24)"})
    samples_per_class: int = field(
        default=24, metadata={"help": "Gaussian samples per class and epoch (HiDe: batch size)"}
    )
    weight_decay: float = field(
        default=0.0,
        metadata={
            "help": "weight decay of both stages (HiDe: 0 in effect, see train_on_gaussians)"
        },
    )
    covariance: Covariance = field(
        default="diagonal",
        metadata={"help": "statistics stored per class of q(x): 'diagonal' or 'full'"},
    )
    classifier: str = field(
        default="lda",
        metadata={
            "help": "classifier naming the task: lda (shared covariance; chosen on CLINC150's "
            "validation split), mlp (HiDe's, trained on Gaussians), ncm (class means), ranpac "
            "(random projection + ReLU + ridge, RanPAC's)"
        },
    )
    shrinkages: list[float] = field(
        default_factory=lambda: list(SHRINKAGES),
        metadata={
            "help": "lda: grid of the covariance shrinkage, chosen per task on held-out data"
        },
    )
    projection_dim: int = field(
        default=PROJECTION_DIM,
        metadata={"help": "ranpac: M, the random projection's size (RanPAC's 10000); 0: none"},
    )
    ridges: list[float] = field(
        default_factory=lambda: list(RIDGES),
        metadata={"help": "ranpac: grid of the ridge lambda, chosen per task on held-out data"},
    )

    adapt: bool = field(
        default=False,
        metadata={
            "help": "hide, norga, hash: the query is the pooled feature of the backbone with a "
            "prefix trained on the first task (with a head of its own) and frozen after, as "
            "ranpac's adapt (first-session adaptation); false: the frozen query"
        },
    )
    adapt_length: int = field(default=5, metadata={"help": "adapt: prefix length per block"})
    adapt_blocks: list[int] | None = field(
        default=None, metadata={"help": "adapt: prefixed blocks; null: 0-4, or all"}
    )

    def __post_init__(self) -> None:
        if self.adapt_length < 1:
            raise ValueError("adapt_length must be >= 1")
        for name in ("epochs", "align_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("batch_size", "samples_per_class"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.align_lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr and align_lr must be > 0, weight_decay >= 0")
        if self.covariance not in ("diagonal", "full"):
            raise ValueError(f"covariance must be 'diagonal' or 'full', not {self.covariance!r}")
        if self.classifier not in TII_CLASSIFIERS:
            raise ValueError(f"classifier must be one of {TII_CLASSIFIERS.choices()}")
        if not self.shrinkages or not all(0 < g <= 1 for g in self.shrinkages):
            raise ValueError("shrinkages must be a non-empty list of values in (0, 1]")
        if self.projection_dim < 0 or not self.ridges or not all(r > 0 for r in self.ridges):
            raise ValueError("need projection_dim >= 0 and ridges a non-empty list of values > 0")

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`TaskIdentityClassifier.fit_task`."""
        fit = ("epochs", "align_epochs", "lr", "align_lr", "batch_size", "samples_per_class",
               "weight_decay")  # fmt: skip
        return {key: value for key, value in asdict(self).items() if key in fit}


class ResidualMLP(nn.Module):
    """HiDe's ``MlpMapping`` with hidden=[2]: LayerNorm(x + fc2(GELU(fc1(x)))), d -> 2d -> d."""

    def __init__(self, dim: int, mult: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mult * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(self.act(self.fc1(x))))  # (B, d)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):  # timm's ViT init, as HiDe's model.init_weights
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def task_of_best_class(
    scores: torch.Tensor, seen_classes: Sequence[int] | torch.Tensor, class_task: torch.Tensor
) -> torch.Tensor:
    """(B,) task of the best-scoring seen class, from scores (B, C)."""
    unseen = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
    unseen[as_index(seen_classes, scores.device)] = False
    best = scores.masked_fill(unseen, float("-inf")).argmax(dim=1)
    return class_task.to(best.device)[best]


class BestClassTask:
    """A classifier over all C classes (``self(query)``, (B, C) scores) as a TII classifier:
    the task of the best seen class."""

    @torch.no_grad()
    def predict_task(
        self,
        query: torch.Tensor,
        seen_classes: Sequence[int] | torch.Tensor,
        class_task: torch.Tensor,
    ) -> torch.Tensor:
        """(B,) task of the best seen class; class_task (C,) maps class -> task."""
        return task_of_best_class(self(query), seen_classes, class_task)  # type: ignore[operator]


class TaskIdentityClassifier(BestClassTask, nn.Module):
    """MLP + linear head over all C classes of the stream, on frozen query features (B, d)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.mlp = ResidualMLP(dim)
        self.head = nn.Linear(dim, num_classes)
        self.apply(_init_linear)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(query))  # (B, C)

    def learn(self, tii: TaskInference, task: int, classes: Sequence[int], queries, labels) -> None:
        """After a task: ``fit_task`` on the Gaussians and options of ``tii``."""
        seen, options = tii.seen_classes(), tii.tii_options
        self.fit_task(queries, labels, classes, seen, tii.query_stats, **options.fit_kwargs())

    def fit_task(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        task_classes: Sequence[int] | torch.Tensor,
        seen_classes: Sequence[int] | torch.Tensor,
        gaussians: ClassGaussians,
        *,
        epochs: int,
        align_epochs: int,
        lr: float,
        align_lr: float,
        batch_size: int,
        samples_per_class: int,
        weight_decay: float = 0.0,
    ) -> None:
        """Train on one task (features (N, d), labels (N,) of its training set), then align.

        ``gaussians`` must already hold the statistics of q(x) for every seen class, the
        current ones included. Works under an outer ``torch.no_grad`` (as in ``end_task``).
        """
        device = self.head.weight.device
        task = as_index(task_classes, device)
        seen = as_index(seen_classes, device)
        if not set(task.tolist()) <= set(seen.tolist()):
            raise ValueError("task_classes must be a subset of seen_classes")
        was_training = self.training
        with torch.enable_grad():
            self._train_real(
                features.to(device), labels.to(device), task, epochs, lr, batch_size, weight_decay
            )
        has_old = bool(set(seen.tolist()) - set(task.tolist()))
        if align_epochs > 0 and has_old:
            train_on_gaussians(
                self,
                self.parameters(),
                gaussians,
                seen,
                epochs=align_epochs,
                lr=align_lr,
                batch_size=batch_size,
                samples_per_class=samples_per_class,
                weight_decay=weight_decay,
            )
        self.train(was_training)

    def _train_real(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        task: torch.Tensor,
        epochs: int,
        lr: float,
        batch_size: int,
        weight_decay: float,
    ) -> None:
        """Cross-entropy on the task's real features, logits outside the task masked (Adam)."""
        outside = torch.ones(self.head.out_features, dtype=torch.bool, device=features.device)
        outside[task] = False
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        self.train()
        features = features.detach().float()
        for _ in range(epochs):
            train_epoch(self, features, labels, outside, optimizer, batch_size, MAX_GRAD_NORM)


class DiscriminantTaskClassifier(BestClassTask, DiscriminantClassifier):
    """lda / ncm on q(x) as a TII classifier."""

    def learn(self, tii: TaskInference, task: int, classes: Sequence[int], queries, labels) -> None:
        self.fit_task(queries, labels, tii.seen_classes(), seed=task)


class RidgeTaskClassifier(BestClassTask, RandomFeatureRidge):
    """RanPAC's random-feature ridge on q(x) as a TII classifier."""

    def learn(self, tii: TaskInference, task: int, classes: Sequence[int], queries, labels) -> None:
        self.fit_task(queries, labels, seed=task)


TII_STREAM = 1  # the TII's W_rand comes from its own stream (taskid/ridge.py, side_generator)
TII_CLASSIFIERS: Registry[Any] = Registry("TII classifier")
TII_CLASSIFIERS.add(
    "mlp", lambda dim, c, o: TaskIdentityClassifier(dim, c), "HiDe's MLP, aligned on Gaussians"
)
TII_CLASSIFIERS.add(
    "lda",
    lambda dim, c, o: DiscriminantTaskClassifier(dim, c, "lda", o.shrinkages),
    "class means + one shared covariance (LDA), from sums; the default",
)
TII_CLASSIFIERS.add(
    "ncm", lambda dim, c, o: DiscriminantTaskClassifier(dim, c, "ncm"), "cosine to class means"
)
TII_CLASSIFIERS.add(
    "ranpac",
    lambda dim, c, o: RidgeTaskClassifier(
        dim, c, o.projection_dim, o.ridges, side_generator(TII_STREAM)
    ),
    "RanPAC's random projection + ReLU + ridge, from sums (tii.projection_dim, tii.ridges)",
)


class TaskInference(nn.Module):
    """The task of a sample from its frozen query q(x): the task of the class that the chosen
    TII classifier (``options.classifier``) predicts among the seen classes. ``begin_task``
    records the task's classes; ``fit`` (after the task, with its training queries) updates the
    per-class Gaussians of q(x) (used by the mlp classifier's alignment) and the classifier."""

    def __init__(self, dim: int, num_classes: int, options: TIIOptions) -> None:
        super().__init__()
        self.tii_options = options
        self.query_stats = ClassGaussians(num_classes, dim, options.covariance)
        self.classifier = TII_CLASSIFIERS[options.classifier](dim, num_classes, options)
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        self.class_task[list(classes)] = task

    def seen_classes(self) -> torch.Tensor:
        return (self.class_task >= 0).nonzero().squeeze(1)

    def infer_task(self, query: torch.Tensor) -> torch.Tensor:
        """(B,) task of each sample, from its frozen query feature."""
        return self.classifier.predict_task(query, self.seen_classes(), self.class_task)

    @torch.no_grad()
    def fit(
        self, task: int, classes: Sequence[int], queries: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """After task ``task``: its training queries (N, d) and labels (N,)."""
        self.query_stats.fit(queries, labels)
        self.classifier.learn(self, task, classes, queries, labels)
