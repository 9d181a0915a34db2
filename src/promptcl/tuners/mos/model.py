"""MOS (Sun et al., "MOS: Model Surgery for Pre-Trained Model-Based Class-Incremental
Learning", AAAI 2025), as its public code (sun-hailong/AAAI25-MOS, models/mos.py and
backbone/vit_mos.py) runs it.

Each task t owns an AdaptFormer adapter beside the MLP of every block of ``blocks``
(tuners/adaptformer.py: the code's ffn_option "parallel", bottleneck 16, scale 0.1, dropout
0.1); task t's adapters start from task t-1's. Adapter merging: before the task's first step
and after every step, A_t <- (1 - alpha) A_t + alpha * mean_{k<t} A_k (weights and biases of
both projections); the stored A_k never move again. A linear head over all classes trains
with the adapter (old classes' logits masked, rate ``head_lr_scale``), with a contrastive term
pushing the batch's features from the old classes' means. After each task: the Gaussians of
every new class's features (with its own task's adapter), the prototypes (class means of the
features with the first adapter), and, from the second task on, the head re-aligned on
Gaussian samples of all seen classes.

Test (no task identity): the first adapter's features and the cosine prototype classifier name a
class, hence a task; then, for up to ``refine_rounds`` rounds, the head on that task's adapter
features names a class and its task, until the task no longer changes (self-refined adapter
retrieval). The prediction is softmax(head logits of the last round) + softmax(T x cosine to the
prototypes) with T the tasks seen (``ensemble``), or the head's logits alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.taskid.gaussians import ClassGaussians
from promptcl.tuners.adaptformer import adapter_edits, adapter_set
from promptcl.tuners.align import align_head, contrast_to_means
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput
from promptcl.tuners.mos.config import MOSConfig
from promptcl.tuners.prompts import check_blocks


def subset(batch: Batch, rows: torch.Tensor) -> Batch:
    """The samples ``rows`` of ``batch`` (every input is batch-first)."""
    if len(rows) == len(batch.labels):
        return batch
    inputs = {name: value[rows] for name, value in batch.inputs.items()}
    return Batch(inputs, batch.labels[rows], batch.index[rows])


class MOS(Tuner):
    name = "mos"
    description = "per-task adapters merged with the older ones, self-refined retrieval (MOS)"
    config_class = MOSConfig
    task_inference = (
        "self-refined adapter retrieval: the first adapter's prototype classifier names a task, "
        "the head on that task's adapter re-names it until it settles (MOS)"
    )

    def __init__(self, config: MOSConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        blocks = config.blocks if config.blocks is not None else range(backbone.num_blocks)
        self.blocks = check_blocks(blocks, backbone, "blocks")
        self.adapters = nn.ModuleList()  # task -> its adapters, one per block of self.blocks
        self.head = nn.Linear(backbone.dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # the code's head: timm's init
        nn.init.zeros_(self.head.bias)
        covariance = "full" if config.covariance == "full" else "diagonal"
        self.stats = ClassGaussians(num_classes, backbone.dim, covariance)
        self.register_buffer("prototypes", torch.zeros(num_classes, backbone.dim))
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        self.adapters.requires_grad_(False)  # the older adapters never train again
        new = adapter_set(self.backbone.dim, self.blocks, self.config)
        if task > 0:  # the code trains one adapter on: task t starts from task t-1's
            new.load_state_dict(self.adapters[task - 1].state_dict())
        self.adapters.append(new.to(self.class_task.device).train(self.training))
        self.merge()
        self.class_task[list(classes)] = task

    @torch.no_grad()
    def merge(self) -> None:
        """A_t <- (1 - alpha) A_t + alpha * mean_{k<t} A_k, every tensor of the current
        adapter (MOS's ``adapter_merge``; the identity for the first task)."""
        task, alpha = len(self.adapters) - 1, self.config.adapter_momentum
        if task == 0 or alpha == 0:
            return
        older = [dict(adapters.named_parameters()) for adapters in self.adapters[:task]]
        for name, p in self.adapters[task].named_parameters():
            mean = torch.stack([o[name] for o in older]).mean(dim=0)
            p.mul_(1 - alpha).add_(mean, alpha=alpha)

    def after_step(self) -> None:
        self.merge()

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {"params": list(self.adapters[-1].parameters())},
            {"params": list(self.head.parameters()), "lr_scale": self.config.head_lr_scale},
        ]

    def features(self, batch: Batch, task: torch.Tensor | int) -> torch.Tensor:
        """(B, d) pooled features with the adapters of ``task``: an int, or (B,) per sample
        (the backbone then runs once per distinct task, on that task's samples)."""
        if isinstance(task, torch.Tensor):
            order = torch.argsort(task, stable=True)
            tasks, counts = torch.unique_consecutive(task[order], return_counts=True)
            if len(tasks) > 1:
                groups = order.split(counts.tolist())
                parts = [
                    self.features(subset(batch, rows), t)
                    for rows, t in zip(groups, tasks.tolist(), strict=True)
                ]
                return torch.cat(parts)[torch.argsort(order)]  # back in batch order
            task = int(tasks[0])
        edits = adapter_edits(self.blocks, self.adapters[task])
        hidden, keep = self.backbone(batch.inputs, edits=edits)
        return self.backbone.pool(hidden, keep)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        if task is not None:
            features = self.features(batch, task)
            return TunerOutput(self.head(features), extras={"features": features})
        return self.retrieve(batch)

    def retrieve(self, batch: Batch) -> TunerOutput:
        """The self-refined adapter retrieval (MOS's ``_eval_cnn``), per sample; each round
        runs the backbone on the samples whose task has not settled yet."""
        unseen = self.class_task < 0
        cosine = F.normalize(self.features(batch, 0).float(), dim=-1)
        cosine = (cosine @ F.normalize(self.prototypes, dim=-1).T).masked_fill(unseen, -torch.inf)
        task = self.class_task[cosine.argmax(dim=1)]
        logits = torch.empty_like(cosine)
        active = torch.arange(len(task), device=task.device)  # samples still refining
        for round in range(self.config.refine_rounds):
            current = self.head(self.features(subset(batch, active), task[active]))
            logits[active] = current.float().masked_fill(unseen, -torch.inf)
            named = self.class_task[logits[active].argmax(dim=1)]
            moving = named != task[active]
            if round == self.config.refine_rounds - 1 or not bool(moving.any()):
                break
            active = active[moving]
            task[active] = named[moving]
        if self.config.ensemble:
            num_tasks = len(self.adapters)
            logits = logits.softmax(dim=1) + (num_tasks * cosine).softmax(dim=1)
        return TunerOutput(logits, task_pred=task)

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        if cfg.contrast_coeff == 0:
            return {}
        old = (self.class_task < task) & (self.class_task >= 0)
        means = self.stats.mean[old]
        contrast = contrast_to_means(means, out.extras["features"], cfg.contrast_temperature)
        return {"contrast": cfg.contrast_coeff * contrast}

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        def features_of(batch: Batch) -> tuple[torch.Tensor, ...]:
            own = self.features(batch, task)
            return (own, self.features(batch, 0)) if task > 0 else (own, own)

        own, first = data.map(features_of)
        labels = data.cat("labels").to(own.device)
        self.stats.fit(own, labels)
        for c in classes:
            self.prototypes[c] = first[labels == c].mean(dim=0)
        align = self.config.align
        if align is not None and task > 0:
            align_head(
                self.head,
                self.stats,
                (self.class_task >= 0).nonzero().squeeze(1),
                epochs=align.epochs,
                lr=align.lr,
                batch_size=align.batch_size,
                samples_per_class=align.samples_per_class,
                weight_decay=align.weight_decay,
            )

    def report(self) -> dict[str, Any]:
        per_task = sum(p.numel() for p in self.adapters[-1].parameters()) if self.adapters else 0
        return {"params_per_task": per_task}
