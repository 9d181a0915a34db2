"""InfLoRA (Liang and Li, "InfLoRA: Interference-Free Low-Rank Adaptation for Continual
Learning", CVPR 2024), as the authors' code (github.com/liangyanshuo/InfLoRA, methods/inflora.py,
models/vit_inflora.py, models/sinet_inflora.py) computes it.

In each block of ``blocks`` (default: all), task t owns a branch on the key and value
projections: k = x W_k^T + x (B_t^k A_t)^T, v likewise with B_t^v, the same A_t for both.
Every seen task's branch is summed in every forward (W_k + sum_{i<=t} B_i^k A_i), so nothing
is inferred at test.

- Before training task t (``prepare_task``), A_t is designed from the task's inputs x of the
  block's key/value projections (eq. 10-11): with C = mean x x^T over the task's tokens (taken
  with the old branches in place) and M the old tasks' basis, A_t = (top-r left singular vectors
  of (I - M M^T) C)^T / sqrt(3) (inflora/subspace.py).
- Only the B's of task t train, with the head; A_t and every older branch are frozen.
- After task t (``end_task``), C is taken again with the trained branches and M grows by
  DualGPM with threshold lamb + (lame - lamb) * t / T (the code's, with T tasks), here
  lamb + (lame - lamb) * (classes seen before t) / (all classes), the same for equal tasks.
- Head: the code's one linear (with bias) per task, logits concatenated at test, is one linear
  over all classes here; training masks the logits of other tasks' classes (train.mask_logits),
  as the code's cross-entropy over the current task's head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from promptcl.backbones.masked import MaskSpec, edited_linear
from promptcl.tuners.base import TaskData
from promptcl.tuners.inflora.config import InfLoRAConfig
from promptcl.tuners.inflora.subspace import design_down_projection, grow_basis
from promptcl.tuners.lowrank import SummedBranches, projection_edits


class Recording(NamedTuple):
    """An edit that adds x x^T summed over the call's real tokens to ``sums[slot]`` (and their
    count to ``counts[slot]``) before computing the layer with ``edit``."""

    edit: MaskSpec | None
    keep: torch.Tensor | None  # (B, N) real tokens, None: all
    sums: torch.Tensor  # (L, d, d)
    counts: torch.Tensor  # (L,)
    slot: int

    def __call__(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        tokens = x.float().reshape(-1, x.shape[-1]) if self.keep is None else x.float()[self.keep]
        with torch.autocast(x.device.type, enabled=False):  # the statistics in fp32
            self.sums[self.slot] += tokens.T @ tokens
        self.counts[self.slot] += tokens.shape[0]
        return edited_linear(layer, x, self.edit)


class InfLoRA(SummedBranches):
    name = "inflora"
    description = "per-task LoRA of keys/values, A designed orthogonal to old tasks' inputs"
    config_class = InfLoRAConfig
    parts = ("key", "value")
    prepares = True

    def __init__(self, config: InfLoRAConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        d = backbone.dim
        # block k's basis M_k: the first basis_size[k] columns of basis[k]
        self.register_buffer("basis", torch.zeros(len(self.blocks), d, d))
        self.register_buffer("basis_size", torch.zeros(len(self.blocks), dtype=torch.long))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        for pair in self.add_branch(self.config.rank):
            pair.A.requires_grad_(False)  # designed in prepare_task, never trained

    def bases(self) -> list[torch.Tensor]:
        return [b[:, :n] for b, n in zip(self.basis, self.basis_size.tolist(), strict=True)]

    def updates(self) -> list[dict[str, torch.Tensor]]:
        """Per block, part -> sum over the seen tasks of B_i A_i, as one product of the
        concatenated B's (d, t r) and A's (t r, d)."""
        return [
            {
                p: torch.cat([b[k].B[p] for b in self.branches], 1)
                @ torch.cat([b[k].A[p] for b in self.branches])
                for p in self.parts
            }
            for k in range(len(self.blocks))
        ]

    def input_covariances(self, data: TaskData) -> torch.Tensor:
        """(L, d, d): per edited block, the mean of x x^T over the task's real tokens x entering
        its key/value projections, with the branches as they are."""
        d = self.backbone.dim
        sums = self.basis.new_zeros(len(self.blocks), d, d)
        counts = self.basis.new_zeros(len(self.blocks))
        name = self.backbone.attention_projection("key")[0]
        with data.autocast():
            for position in data.shard(range(len(data))):
                inputs = data[position].inputs
                keep = inputs["attention_mask"].bool() if "attention_mask" in inputs else None
                edits = projection_edits(self.backbone, self.blocks, self.updates())
                for slot, block in enumerate(self.blocks):
                    record = Recording(edits[block].get(name), keep, sums, counts, slot)
                    edits[block] = {**edits[block], name: record}
                self.backbone(inputs, edits=edits)
        return data.total(sums) / data.total(counts).view(-1, 1, 1)

    @torch.no_grad()
    def prepare_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """A_t of every block from the task's inputs projected off the old tasks' bases."""
        covariances = self.input_covariances(data)
        for k, (C, basis) in enumerate(zip(covariances, self.bases(), strict=True)):
            A = design_down_projection(C, basis, self.config.rank)
            for part in self.parts:
                self.branches[task][k].A[part].copy_(A)

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        """DualGPM: every block's basis grows with the task's inputs through the trained model."""
        cfg = self.config
        before = float(self.seen.sum()) / self.num_classes
        threshold = cfg.threshold + (cfg.threshold_end - cfg.threshold) * before
        covariances = self.input_covariances(data)
        for k, (C, basis) in enumerate(zip(covariances, self.bases(), strict=True)):
            grown = grow_basis(basis, C, threshold)
            self.basis[k, :, : grown.shape[1]] = grown
            self.basis_size[k] = grown.shape[1]
        self.seen[list(classes)] = True

    def report(self) -> dict[str, Any]:
        return {**super().report(), "basis_size": self.basis_size.tolist()}
