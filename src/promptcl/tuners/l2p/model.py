"""L2P (Wang et al., CVPR 2022): a pool of prompts with keys shared by all tasks.

Per sample, the top-N keys by cosine similarity to the frozen query q(x) choose N prompts,
which are inserted after the [CLS] token of the input (prompt tuning). The head reads the mean
of the prompt tokens' outputs. Loss (eq. 5): CE + lambda * sum_{selected i} (1 - cos(q(x), k_i)).
Selection is per sample at training and evaluation (no batch-wise vote). The pool's keys name
no task, so under per-task edits (tuners/edits.py) the edit method keeps task keys of its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from promptcl.backbones.base import Trunk, input_prompts
from promptcl.backbones.masked import BlockEdits
from promptcl.taskid import TaskKeys, match_keys
from promptcl.tuners.base import Batch, Tuner, TunerOutput, uniform_
from promptcl.tuners.l2p.config import L2PConfig


class L2P(Tuner):
    name = "l2p"
    description = "prompt pool with keys, per-sample top-N prompts prepended to the input"
    config_class = L2PConfig
    needs_query = True
    task_inference = "none needed (prompts picked per sample from a shared pool by key matching)"

    def __init__(self, config: L2PConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        a, d = config.prompt_init, backbone.dim
        self.prompts = nn.Parameter(
            uniform_(torch.empty(config.pool_size, config.length, d), -a, a)
        )
        self.keys = nn.Parameter(uniform_(torch.empty(config.pool_size, d), -a, a))
        self.head = nn.Linear(d, num_classes)

    def forward(
        self,
        batch: Batch,
        task: torch.Tensor | None = None,
        *,
        edits: Mapping[int, BlockEdits] | None = None,
        trunk: Trunk | None = None,
    ) -> TunerOutput:
        """task: unused (the pool names no task); edits, trunk: passed to the backbone."""
        chosen, similarity = match_keys(batch.query, self.keys, self.config.top_k)  # (B, N)
        B = chosen.shape[0]
        prompts = self.prompts[chosen].reshape(B, -1, self.backbone.dim)  # (B, N * L, d)
        hidden, _ = self.backbone(batch.inputs, input_prompts(prompts), edits=edits, trunk=trunk)
        start = self.backbone.num_prefix_tokens
        pooled = hidden[:, start : start + prompts.shape[1]].mean(dim=1)
        return TunerOutput(self.head(pooled), extras={"similarity": similarity})

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        surrogate = (1 - out.extras["similarity"]).sum(dim=1).mean()
        return {"pull": self.config.pull_coeff * surrogate}

    # the EditBase protocol (tuners/edits.py): what per-task edits need from their base

    def task_blocks(self) -> list[int]:
        """[]: the prompts are chosen by the frozen query, whatever the task."""
        return []

    def own_task_keys(self) -> None:
        """None: no key of the pool belongs to a task."""
        return None

    def new_task_keys(self) -> TaskKeys:
        """Empty task keys, started as U(-a, a) like the pool."""
        return TaskKeys(self.backbone.dim, self.config.prompt_init)
