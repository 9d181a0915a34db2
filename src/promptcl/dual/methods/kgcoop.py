"""kgcoop: Knowledge-guided Context Optimization (Yao, Zhang and Xu, CVPR 2023). CoOp's context
vectors, trained with L = L_ce + lambda * L_kg (eq. 4), where L_kg pulls the learned class
embeddings w_c = g([ctx] + name) toward the frozen encoder's hand-crafted ones w_c^clip =
g(template.format(name)). Eq. 3 writes L_kg = 1/C sum_c ||w_c - w_c^clip||^2; the authors'
code (htyao89/KgCoOp, trainers/kgcoop.py) computes 1 - 1/C sum_c cos(w_c, w_c^clip), which for
unit vectors is half of it, and its lambda = 8 was tuned for that form: promptcl follows the
code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from promptcl.backbones import DualEncoder
from promptcl.dual.methods.base import TrainStep, frozen_class_features, register_method
from promptcl.dual.methods.coop import CoOp, CoOpConfig


@dataclass
class KgCoOpConfig(CoOpConfig):
    weight: float = field(
        default=8.0,
        metadata={"help": "lambda: weight of 1 - mean cos(learned, hand-crafted class text)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight < 0:
            raise ValueError(f"weight={self.weight} must be >= 0")


def knowledge_gap(learned: torch.Tensor, handcrafted: torch.Tensor) -> torch.Tensor:
    """L_kg as the authors' code computes it: 1 - mean_c cos(w_c, w_c^clip), both (C, D)."""
    return 1.0 - F.cosine_similarity(learned, handcrafted, dim=-1, eps=1e-7).mean()


class KgCoOp(CoOp):
    name = "kgcoop"
    config_class = KgCoOpConfig
    description = "CoOp pulled toward the hand-crafted class-text embeddings (KgCoOp)"

    def begin_training(self, encoder: DualEncoder, names: Sequence[str], template: str) -> None:
        """w^clip: the frozen label encoder's features of the run's template (not saved)."""
        features = frozen_class_features(encoder, names, [template])
        self.register_buffer("handcrafted", features, persistent=False)

    def loss_terms(self, step: TrainStep) -> dict[str, torch.Tensor]:
        return {"kg": self.config.weight * knowledge_gap(step.classes.float(), self.handcrafted)}


register_method(KgCoOp)
