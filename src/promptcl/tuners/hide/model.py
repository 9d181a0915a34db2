"""HiDe-Prompt (Wang et al., NeurIPS 2023): hierarchical decomposition of the CIL objective.

Within-task prediction: task t owns a prefix prompt on ``blocks``, trained with the true task's
prompt; the prompt mixes in a share m of the old prompts' mean, e_t <- (1-m) e_t + m mean(e_<t)
(``prompt_momentum``), and a contrastive term (weight ``contrast_coeff``) pushes the batch's
prompted features away from the stored means of old classes:
L_c = CE(M M^T / T, I) with M = [old class means; batch features].
Task-identity inference (TII) and task-adaptive prediction (TAP) run after each task
(``HiDeStages``): at test the TII classifier on the frozen query picks each sample's prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptcl.backbones import Prefix
from promptcl.tuners.base import Batch, TaskData, Tuner, TunerOutput, uniform_
from promptcl.tuners.hide.config import HiDeConfig
from promptcl.tuners.prompts import check_blocks, first_blocks
from promptcl.tuners.stages import HiDeStages


class HiDePrompt(Tuner):
    name = "hide"
    description = "per-task prefix prompts, TII on frozen features, TAP head alignment (HiDe)"
    config_class = HiDeConfig
    needs_query = True
    task_inference = "TII: a classifier on the frozen or first-session adapted query (tuner.tii.*)"

    def __init__(self, config: HiDeConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.blocks = check_blocks(first_blocks(config.blocks, 5, backbone), backbone, "blocks")
        self.prompts = nn.ParameterList()  # task t -> (n_blocks, 2, L, d)
        self.head = nn.Linear(backbone.dim, num_classes)
        self.stages = HiDeStages(
            backbone.dim, num_classes, config.tii, config.tap, config.head, backbone
        )
        self.needs_query = not config.tii.adapt

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        a = self.config.prompt_init
        if task > 0:  # as the public code's shared pool: start from the previous prompt
            prompt = self.prompts[task - 1].detach().clone()
        else:
            shape = (len(self.blocks), 2, self.config.length, self.backbone.dim)
            prompt = uniform_(torch.empty(shape), -a, a).to(self.head.weight.device)
        self.prompts.append(nn.Parameter(prompt))
        for old in range(task):
            self.prompts[old].requires_grad_(False)
        self.stages.begin_task(task, classes)

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [
            {"params": self.prompt_parameters()},
            {"params": list(self.head.parameters()), "lr_scale": self.config.head_lr_scale},
        ]
        if adapted := self.stages.trainable():
            groups.append({"params": adapted})
        return groups

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.prompts[-1]]

    def task_prompts(self, task: torch.Tensor) -> torch.Tensor:
        """(B, n_blocks, 2, L, d); in training task t > 0 mixes in the old prompts' mean."""
        prompts = torch.stack(list(self.prompts))
        current = len(self.prompts) - 1
        m = self.config.prompt_momentum
        if self.training and current > 0 and m > 0:
            mixed = (1 - m) * prompts[current] + m * prompts[:current].detach().mean(dim=0)
            prompts = torch.cat([prompts[:current], mixed[None]])
        return prompts[task]

    def prefixes(self, prompts: torch.Tensor) -> dict[int, Prefix]:
        return {b: Prefix(prompts[:, i, 0], prompts[:, i, 1]) for i, b in enumerate(self.blocks)}

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        task_pred = None
        if task is None:
            task = task_pred = self.stages.task_of(batch, self.backbone)
        hidden, keep = self.backbone(batch.inputs, prefixes=self.prefixes(self.task_prompts(task)))
        features = self.backbone.pool(hidden, keep)
        logits = self.stages.logits(features, self.head)
        return TunerOutput(logits, task_pred, extras={"features": features})

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        terms = self.stages.loss_terms(batch, self.backbone, task)
        if cfg.contrast_coeff > 0:
            contrast = self.stages.contrast(out.extras["features"], task, cfg.contrast_temperature)
            terms["contrast"] = cfg.contrast_coeff * contrast
        return terms

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        m = self.config.prompt_momentum
        if task > 0 and m > 0:  # bake the momentum mix into the stored prompt
            old_mean = torch.stack(list(self.prompts)[:task]).mean(dim=0)
            self.prompts[task].mul_(1 - m).add_(m * old_mean)
        (features,) = data.map(
            lambda batch: (
                self(batch, task=torch.full_like(batch.labels, task)).extras["features"],
            )
        )
        self.stages.end_task(task, classes, data, features, self.head, self.backbone)
