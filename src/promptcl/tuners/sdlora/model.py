"""SD-LoRA (Wu et al., "SD-LoRA: Scalable Decoupled Low-Rank Adaptation for Class Incremental
Learning", ICLR 2025), as the authors' code (github.com/WuYichen-97/SD-Lora-CL, backbone/lora.py
``_LoRA_qkv_timm_train``, models/sdlora.py) computes it.

In each block of ``blocks`` (default: all), task t owns a branch on the query and value
projections. While task t trains, a projection's weight is

    W + sum_{i<t} alpha_i B_i A_i / (||B_i||_F ||A_i||_F) + alpha_t B_t A_t,

the old tasks' directions frozen (normalised by the product of the two Frobenius norms, as the
code does, not by ||B_i A_i||_F), their magnitudes alpha_i trained with the new branch (A_t and
B_t) and its magnitude alpha_t. The magnitudes are t+1 scalars shared by every block and both
projections; every one of them starts at ``magnitude_init`` (0.8) at the start of each task
(the code builds a fresh model per task, and the values learned in the previous task are not
carried over). Test uses the same sum over every seen task: nothing is inferred.

The head is one linear over all classes (the code's ``SimpleLinear``: Kaiming-uniform for a
linear layer, bias zero), training masking the logits of other tasks' classes
(train.mask_logits), as the code's cross-entropy over ``logits[:, known:]``.

SD-LoRA-RR (rank reduction for later tasks) is ``ranks``, as the commented-out schedule of the
code's ``update_network``. The code ships no SD-LoRA-KD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptcl.tuners.lowrank import LowRankPair, SummedBranches
from promptcl.tuners.sdlora.config import SDLoRAConfig


def inverse_norm(pair: LowRankPair, part: str) -> torch.Tensor:
    """1 / (||B||_F ||A||_F), the normalisation of an old direction B A (finite when B is still
    zero: such a branch adds zero)."""
    norm = pair.B[part].norm() * pair.A[part].norm()
    return 1 / norm.clamp_min(torch.finfo(norm.dtype).tiny)


class SDLoRA(SummedBranches):
    name = "sdlora"
    description = "per-task LoRA of queries/values: old directions frozen, magnitudes trained"
    config_class = SDLoRAConfig
    parts = ("query", "value")

    def __init__(self, config: SDLoRAConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.magnitude = nn.Parameter(torch.empty(0))  # alpha_i, i <= t
        nn.init.kaiming_uniform_(self.head.weight, nonlinearity="linear")
        nn.init.zeros_(self.head.bias)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        self.add_branch(self.config.rank_of(task))
        self.magnitude = nn.Parameter(
            torch.full((task + 1,), self.config.magnitude_init, device=self.head.weight.device)
        )

    def updates(self) -> list[dict[str, torch.Tensor]]:
        """Per block and part: one product of the concatenated, scaled B's (d, sum of ranks)
        and the concatenated A's."""
        alpha = self.magnitude
        updates = []
        for k in range(len(self.blocks)):
            pairs = [branch[k] for branch in self.branches]
            updates.append({})
            for p in self.parts:
                scales = [alpha[i] * inverse_norm(pair, p) for i, pair in enumerate(pairs[:-1])]
                scales.append(alpha[-1])  # the new branch: not normalised
                B = torch.cat([s * pair.B[p] for s, pair in zip(scales, pairs, strict=True)], 1)
                updates[-1][p] = B @ torch.cat([pair.A[p] for pair in pairs])
        return updates

    def report(self) -> dict[str, Any]:
        return {
            **super().report(),
            "magnitudes": self.magnitude.tolist(),
            "ranks": [b[0].A[self.parts[0]].shape[0] for b in self.branches],
        }


__all__ = ["SDLoRA", "inverse_norm"]
