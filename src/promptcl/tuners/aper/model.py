"""APER, "adapt once, then prototypes" (Zhou et al., "Revisiting Class-Incremental Learning with
Pre-Trained Models: Generalizability and Adaptivity are All You Need", IJCV 2024; ADAM in its
first version), as LAMDA-PILOT's models/aper_{adapter,vpt}.py run it.

On the first task a parameter-efficient module (``module``: AdaptFormer adapters, VPT or a
prefix; tuners/firstsession.py) trains with a cosine head, logits sigma * cos(h(x), w_c)
(``CosineLinear``: w_c ~ U(-1/sqrt(d), 1/sqrt(d)), sigma learned from 1); then the module is
frozen for good. Every class c is then the mean of the concatenated feature
z(x) = [q(x), h(x)] (q the frozen backbone's, h the adapted one's) over its training samples,
computed when its task ends, and a sample goes to argmax_c cos(z(x), mu_c) (the code's fresh
``CosineLinear`` with sigma = 1). Nothing trains after the first task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptcl.taskid import cosine
from promptcl.tuners.aper.config import APERConfig
from promptcl.tuners.base import Batch, TaskData, TunerOutput, uniform_
from promptcl.tuners.firstsession import FirstSessionTuner, first_session_blocks


class APER(FirstSessionTuner):
    name = "aper"
    description = (
        "adapts a module on the first task, then class means of [frozen, adapted] features"
    )
    config_class = APERConfig
    needs_query = True
    trains = False  # the first task trains: set per instance

    def __init__(self, config: APERConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.trains = True
        d = backbone.dim
        blocks = first_session_blocks(config.module, config.blocks, backbone, "blocks")
        self.add_first_session(config.module, blocks, d, config.length, config.prompt_init, config)
        bound = 1 / math.sqrt(d)
        self.head = nn.Parameter(uniform_(torch.empty(num_classes, d), -bound, bound))
        self.sigma = nn.Parameter(torch.ones(1))
        self.register_buffer("prototypes", torch.zeros(num_classes, 2 * d))  # mu_c of z

    def feature(self, batch: Batch) -> torch.Tensor:
        """(B, 2d) z(x) = [q(x), h(x)]."""
        return torch.cat([batch.query.float(), self.adapted_feature(batch.inputs).float()], 1)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        if self.training:  # the first task: the module and its cosine head
            return TunerOutput(self.sigma * cosine(self.adapted_feature(batch.inputs), self.head))
        return TunerOutput(cosine(self.feature(batch), self.prototypes))

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        (features,) = data.map(lambda batch: (self.feature(batch),))
        labels = data.cat("labels").to(features.device)
        for c in classes:
            self.prototypes[c] = features[labels == c].mean(0)

    def report(self) -> dict[str, Any]:
        return {"module": self.module_kind, "adapted_blocks": self.adapted_blocks}
