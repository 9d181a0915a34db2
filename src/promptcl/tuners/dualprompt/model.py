"""DualPrompt (Wang et al., ECCV 2022) with prefix tuning.

A shared G-prompt sits in the early blocks; task t owns an E-prompt (later blocks) and a key
k_t. Training uses the true task's E-prompt and pulls k_t to the frozen queries q(x) of its
samples (eq. 5: L = CE + lambda * (1 - cos(q(x), k_t))). At evaluation each sample picks its
own E-prompt by key matching, argmax_t cos(q(x), k_t) ("Prompt ID"), among the seen tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from promptcl.backbones.base import Trunk
from promptcl.backbones.masked import BlockEdits
from promptcl.taskid import TaskKeys
from promptcl.tuners.base import Batch, Tuner, TunerOutput, uniform_
from promptcl.tuners.dualprompt.config import DualPromptConfig
from promptcl.tuners.prompts import check_blocks, merge_prefixes, prefixes_from


class DualPrompt(Tuner):
    name = "dualprompt"
    description = "G-prompt + per-task E-prompts (prefix), per-sample Prompt ID at test"
    config_class = DualPromptConfig
    needs_query = True
    task_inference = "Prompt ID: per-sample key matching of the frozen query"

    def __init__(self, config: DualPromptConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        g_blocks, e_blocks = config.blocks(backbone.num_blocks)
        self.g_blocks = check_blocks(g_blocks, backbone, "g_blocks")
        self.e_blocks = check_blocks(e_blocks, backbone, "e_blocks")
        a = config.prompt_init
        g_shape = (len(self.g_blocks), 2, config.g_length, backbone.dim)
        self.g_prompt = nn.Parameter(uniform_(torch.empty(g_shape), -a, a))
        self.e_prompts = nn.ParameterList()  # task t -> (n_e_blocks, 2, e_length, d)
        self.keys = self.new_task_keys()  # task t -> (d,)
        self.head = nn.Linear(backbone.dim, num_classes)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        a = self.config.prompt_init
        shape = (len(self.e_blocks), 2, self.config.e_length, self.backbone.dim)
        if task > 0 and self.config.init_from_previous:
            e_prompt = self.e_prompts[task - 1].detach().clone()
        else:
            e_prompt = uniform_(torch.empty(shape), -a, a)
        device = self.head.weight.device
        self.e_prompts.append(nn.Parameter(e_prompt.to(device)))
        self.keys.add_task(device)
        for old in range(task):
            self.e_prompts[old].requires_grad_(False)

    def forward(
        self,
        batch: Batch,
        task: torch.Tensor | None = None,
        *,
        edits: Mapping[int, BlockEdits] | None = None,
        trunk: Trunk | None = None,
    ) -> TunerOutput:
        """task: (B,) E-prompt per sample, or (B, T) weights of a superposition of the seen
        tasks' E-prompts (Gradient ID of Soft-TF); None: Prompt ID. edits, trunk: passed to the
        backbone (per-task edits on top, tuners/edits.py)."""
        task_pred = None
        if task is None:
            task = task_pred = self.infer_task(batch)
        e_prompts = torch.stack(list(self.e_prompts))  # (T, n_e_blocks, 2, L_e, d)
        if task.is_floating_point():
            e = torch.einsum("bt,t...->b...", task, e_prompts)
        else:
            e = e_prompts[task]  # (B, n_e_blocks, 2, L_e, d)
        prefixes = merge_prefixes(
            prefixes_from(self.g_blocks, self.g_prompt),
            prefixes_from(self.e_blocks, e),
            batch=e.shape[0],
        )
        hidden, keep = self.backbone(batch.inputs, prefixes=prefixes, edits=edits, trunk=trunk)
        return TunerOutput(self.head(self.backbone.pool(hidden, keep)), task_pred)

    def infer_task(self, batch: Batch) -> torch.Tensor:
        """(B,) Prompt ID: each sample's closest task key."""
        return self.keys.match(batch.query)

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        return {"pull": self.config.pull_coeff * self.keys.pull(batch.query, task)}

    # the EditBase protocol (tuners/edits.py): what per-task edits need from their base

    def task_blocks(self) -> list[int]:
        """The E-prompts' blocks: the first task-dependent computation."""
        return self.e_blocks

    def own_task_keys(self) -> TaskKeys:
        """Its own task keys: added in begin_task, pulled in loss_terms."""
        return self.keys

    def new_task_keys(self) -> TaskKeys:
        """Empty task keys, started as U(-a, a) like the prompts."""
        return TaskKeys(self.backbone.dim, self.config.prompt_init)

    def report(self) -> dict[str, int]:
        """Parameters each task adds: its E-prompt and key."""
        return {
            "params_per_task": (len(self.e_blocks) * 2 * self.config.e_length + 1)
            * self.backbone.dim
        }
