"""NoRGa (Le et al., NeurIPS 2024): HiDe-Prompt whose prefix attention scores pass through a
non-linear residual gate, s -> s + alpha * sigma(tau * s) (eq. 9), with learnable tau and
alpha per prefixed block (initialised to 1, trained on the first task, then frozen, as in the
public code)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones import Prefix, PrefixGate
from promptcl.tuners.hide.model import HiDePrompt
from promptcl.tuners.norga.config import NoRGaConfig

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu}


class NoRGa(HiDePrompt):
    name = "norga"
    description = "HiDe-Prompt with NoRGa's non-linear residual gate on prefix attention scores"
    config_class = NoRGaConfig

    def __init__(self, config: NoRGaConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        self.gate = nn.Parameter(torch.ones(len(self.blocks), 2))  # per block: (tau, alpha)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        super().begin_task(task, classes)
        self.gate.requires_grad_(task == 0)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [*super().prompt_parameters(), *([self.gate] if self.gate.requires_grad else [])]

    def prefixes(self, prompts: torch.Tensor) -> dict[int, Prefix]:
        act = ACTIVATIONS[self.config.gate_activation]
        return {
            b: Prefix(prompts[:, i, 0], prompts[:, i, 1], PrefixGate(*self.gate[i], act))
            for i, b in enumerate(self.blocks)
        }
