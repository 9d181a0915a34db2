"""Soft-TransFormers (Kang et al.): per-task real-valued masks over frozen weights, on top of
DualPrompt (default) or L2P.

In each block of ``blocks`` (default: the last 3), task t owns masks M_t of the shapes of the
frozen attention projections (timm: qkv, proj; BERT: query, key, value, attention output) and,
with ``mlp``, of the MLP's fc1 and fc2; a masked layer computes x (W * M_t)^T + b (eq. 3 and 6;
the bias is not masked). Masks start at 1 (``mask_init=ones``) or U(a, b) (``uniform``; the
public code uses U(0.99, 1)). The loss is the base method's (DualPrompt: eq. 7,
CE + lambda (1 - cos(q(x), k_t))). Only the current task's masks train; older ones are frozen,
and masks exist for seen tasks only.

Task identity ("Prompt ID"): per sample, t = argmax_t cos(q(x), k_t) over the seen tasks' keys
picks that task's masks (and, on DualPrompt, its E-prompt). L2P's shared prompt pool names no
task, so on L2P Soft-TF adds one key per task, pulled to its task's queries as DualPrompt's key
is (weight ``key_pull_coeff``). Gradient ID is not implemented here.

Structure: constructing the registered ``SoftTF`` builds ``SoftDualPrompt`` or ``SoftL2P``,
subclasses of SoftTF and of the base tuner. The base's methods run unchanged on the base's own
config (``self.config``); the masks' options are ``self.soft_config``. ``forward`` runs the
base's forward inside ``self.masks.use(task)`` (backbones/masked.py: how masks reach layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from promptcl.backbones.masked import TaskMaskBank, install_masked_linears
from promptcl.taskid import cosine, prompt_id
from promptcl.tuners.base import Batch, Tuner, TunerOutput, uniform_
from promptcl.tuners.dualprompt.model import DualPrompt
from promptcl.tuners.l2p.model import L2P
from promptcl.tuners.prompts import check_blocks
from promptcl.tuners.softtf.config import SoftTFConfig


class SoftTF(Tuner):
    name = "softtf"
    description = "per-task soft masks on frozen attention weights over DualPrompt or L2P"
    config_class = SoftTFConfig
    needs_query = True

    def __new__(cls, *args: Any, **kwargs: Any) -> SoftTF:
        if cls is SoftTF:  # pick the subclass for config.base
            config = args[0] if args else kwargs["config"]
            cls = SoftL2P if config.base == "l2p" else SoftDualPrompt
        return super().__new__(cls)

    def __init__(self, config: SoftTFConfig, backbone, num_classes: int) -> None:
        super().__init__(getattr(config, config.base), backbone, num_classes)
        self.soft_config = config
        n = backbone.num_blocks
        blocks = config.blocks if config.blocks is not None else list(range(max(0, n - 3), n))
        self.mask_blocks = check_blocks(blocks, backbone, "blocks")
        self.masks = TaskMaskBank(install_masked_linears(backbone, self.mask_blocks, config.mlp))

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.masks.add_task(self.init_mask)

    def init_mask(self, mask: torch.Tensor) -> torch.Tensor:
        if self.soft_config.mask_init == "ones":
            return nn.init.ones_(mask)
        low, high = self.soft_config.uniform_range
        return nn.init.uniform_(mask, low, high)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        task_pred = None
        if task is None:  # infer_task: the base's (DualPrompt) or SoftL2P's task keys
            task = task_pred = self.infer_task(batch)
        with self.masks.use(task):
            out = super().forward(batch, task)
        return out if task_pred is None else replace(out, task_pred=task_pred)

    def prompt_params_per_task(self) -> int:
        """Parameters the base method adds per task (E-prompt, key)."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        masks = self.masks.params_per_task()
        return {
            **super().report(),
            "params_per_task": masks + self.prompt_params_per_task(),
            "mask_params_per_task": masks,
            "mask_blocks": self.mask_blocks,
        }


class SoftDualPrompt(SoftTF, DualPrompt):
    """Soft-TF on DualPrompt: the task key picks each sample's E-prompt and masks
    (DualPrompt.infer_task)."""

    def prompt_params_per_task(self) -> int:
        return (len(self.e_blocks) * 2 * self.config.e_length + 1) * self.backbone.dim


class SoftL2P(SoftTF, L2P):
    """Soft-TF on L2P: the shared pool as in L2P, plus a key per task that picks the masks."""

    def __init__(self, config: SoftTFConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.task_keys = nn.ParameterList()  # task t -> (d,)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        for old in self.task_keys:
            old.requires_grad_(False)
        a, device = self.config.prompt_init, self.head.weight.device
        key = uniform_(torch.empty(self.backbone.dim), -a, a).to(device)
        self.task_keys.append(nn.Parameter(key))

    def infer_task(self, batch: Batch) -> torch.Tensor:
        return prompt_id(batch.query, torch.stack(list(self.task_keys)))

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        similarity = cosine(batch.query, self.task_keys[task].unsqueeze(0))  # (B, 1)
        return {
            **super().loss_terms(batch, out, task),
            "task_pull": self.soft_config.key_pull_coeff * (1 - similarity).mean(),
        }

    def prompt_params_per_task(self) -> int:
        return self.backbone.dim
