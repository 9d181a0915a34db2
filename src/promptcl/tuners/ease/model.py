"""EASE, expandable subspace ensemble (Zhou et al., "Expandable Subspace Ensemble for
Pre-Trained Model-Based Class-Incremental Learning", CVPR 2024), as LAMDA-PILOT's
models/ease.py, backbone/vit_ease.py and backbone/linears.py (``EaseCosineLinear``) run it.

- Task t trains its own AdaptFormer adapters (every block; tuners/adaptformer.py) with a
  fresh cosine head over its classes only, logits sigma * cos(f_t(x), w_c) (w_c ~
  U(-1/sqrt(d), 1/sqrt(d)), sigma from 1); then they are frozen. f_i(x) is the pooled feature
  of the backbone with task i's adapters: subspace i.
- After task t, each of its classes c gets its prototype P_{c,i} (the mean of f_i over its
  training samples) in every subspace i <= t. An old class c (of task k < t) has real
  prototypes in subspaces 0..k; in a later subspace j it gets a synthesised one (the semantic-
  guided prototype complement): with N_j the classes of tasks j..t,
      P_{c,j} = sum_{n in N_j} softmax_n(cos(P_{c,k}, P_{n,k})) P_{n,j},
  the similarity taken in c's own subspace k, where both have real prototypes (softmax at
  temperature 1). ``recalc_sim`` (the code's default) redoes this for every j in k+1..t
  after each task; otherwise only j = t is filled, with N_t = the classes of task t.
- At test every subspace runs (T forward passes); with ``reweight``
  logit_c = sum_i w_{c,i} cos(f_i(x), P_{c,i}), w_{c,i} = 1 in c's own subspace and
  alpha / (T - 1) in the others (``forward_reweight``); else cos([f_0 .. f_{T-1}], P_c).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.taskid import cosine
from promptcl.tuners.adaptformer import adapter_edits, adapter_set
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput, uniform_
from promptcl.tuners.ease.config import EASEConfig
from promptcl.tuners.prompts import check_blocks


class EASE(Tuner):
    name = "ease"
    description = "an adapter subspace per task, old prototypes synthesised, reweighted cosine"
    config_class = EASEConfig

    def __init__(self, config: EASEConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        blocks = config.blocks if config.blocks is not None else range(backbone.num_blocks)
        self.blocks = check_blocks(blocks, backbone, "blocks")
        self.adapters = nn.ModuleList()  # task -> its adapters, one per block
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))
        # P (C, T, d): class c's prototype in subspace i
        self.register_buffer("prototypes", torch.zeros(num_classes, 0, backbone.dim))
        self.proxy = nn.Parameter(torch.zeros(0, backbone.dim))  # the task's head, its classes
        self.sigma = nn.Parameter(torch.ones(1))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        """Freeze the old adapters; a new subspace's adapters and a fresh head."""
        device, d = self.class_task.device, self.backbone.dim
        self.adapters.requires_grad_(False)
        self.adapters.append(adapter_set(d, self.blocks, self.config).to(device))
        self.class_task[list(classes)] = task
        grown = self.prototypes.new_zeros(self.num_classes, 1, d)
        self.prototypes = torch.cat([self.prototypes, grown], dim=1)
        bound = 1 / math.sqrt(d)
        self.proxy = nn.Parameter(uniform_(torch.empty(len(classes), d), -bound, bound).to(device))
        self.sigma = nn.Parameter(torch.ones(1, device=device))

    def subspace(self, inputs: Mapping[str, torch.Tensor], i: int) -> torch.Tensor:
        """(B, d) f_i(x): the pooled feature with task i's adapters."""
        hidden, keep = self.backbone(inputs, edits=adapter_edits(self.blocks, self.adapters[i]))
        return self.backbone.pool(hidden, keep)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        if task is None:
            return TunerOutput(self.scores(batch.inputs))
        current = len(self.adapters) - 1  # training: the new subspace, its classes only
        own = (self.class_task == current).nonzero().squeeze(1)
        feature = self.subspace(batch.inputs, current).float()
        logits = feature.new_full((feature.shape[0], self.num_classes), float("-inf"))
        logits[:, own] = self.sigma * cosine(feature, self.proxy)
        return TunerOutput(logits)

    def scores(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) the prototype classifier over every subspace."""
        num = len(self.adapters)
        features = torch.stack([self.subspace(inputs, i).float() for i in range(num)], dim=1)
        if not self.config.reweight:
            return cosine(features.flatten(1), self.prototypes.flatten(1))
        cosines = torch.einsum(
            "bid,cid->bci", F.normalize(features, dim=-1), F.normalize(self.prototypes, dim=-1)
        )  # (B, C, T)
        return (cosines * self.subspace_weights()).sum(-1)

    def subspace_weights(self) -> torch.Tensor:
        """(C, T) w_{c,i}: 1 in class c's own subspace, alpha / (T - 1) in the others."""
        num = self.prototypes.shape[1]
        own = F.one_hot(self.class_task.clamp_min(0), num).bool()
        other = self.config.alpha / (num - 1) if num > 1 else 0.0
        return torch.where(own, 1.0, other)

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """The task's classes in every subspace so far; then the old classes completed."""
        labels = data.cat("labels").to(self.prototypes.device)
        for i in range(task + 1):
            (features,) = data.map(lambda batch, i=i: (self.subspace(batch.inputs, i),))
            for c in classes:
                self.prototypes[c, i] = features[labels == c].mean(0)
        self.complement(task)

    def complement(self, task: int) -> None:
        """Old classes' prototypes in the subspaces after their own (see the module docstring)."""
        P, owner = self.prototypes, self.class_task
        for k in range(task):
            old = (owner == k).nonzero().squeeze(1)
            for j in range(k + 1, task + 1) if self.config.recalc_sim else [task]:
                newer = (owner >= j).nonzero().squeeze(1)  # the classes of tasks j..task
                similarity = torch.softmax(cosine(P[old, k], P[newer, k]), dim=1)
                P[old, j] = similarity @ P[newer, j]

    def report(self) -> dict[str, Any]:
        per_task = sum(p.numel() for p in self.adapters[-1].parameters()) if self.adapters else 0
        return {"adapter_params_per_task": per_task, "blocks": self.blocks}
