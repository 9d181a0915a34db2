"""promptsrc: Self-regulating Prompts (Khattak, Wasim, Naseer, Khan, Yang and Khan, ICCV 2023).
IVLP's deep prompts on both sides, trained with L = L_ce + L_SCL, where the prompted features
agree with the frozen model's (mutual agreement maximisation):

    L_SCL-image  = lambda_1 * mean |f_p(x) - f(x)|                (query features, L1)
    L_SCL-text   = lambda_2 * mean |g_p(t_c) - g~(c)|             (class features, L1)
    L_SCL-logits = KL(softmax(z~) || softmax(z_p)), summed and divided by B * C

f, g the frozen encoders, g~(c) the mean of the frozen class features over several hand-written
templates (textual diversity), renormalised, z~ = tau f(x) g~^T the frozen model's logits and
z_p the prompted ones. After each epoch t of T the prompts are accumulated with the weight
w_t = N(t; mu, sigma^2) / sum_s N(s; mu, sigma^2) (Gaussian weighted prompt aggregation); after
the last epoch the prompts are replaced by P = sum_t w_t P_t. Reductions and defaults follow the
authors' code (muzairkhattak/PromptSRC, trainers/promptsrc.py and
configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from promptcl.backbones import DualEncoder
from promptcl.dual.methods.base import TrainStep, frozen_class_features, register_method
from promptcl.dual.methods.ivlp import IVLP, IVLPConfig


@dataclass
class PromptSRCConfig(IVLPConfig):
    n_ctx: int = field(default=4, metadata={"help": "Text prompt tokens per block (PromptSRC: 4)."})
    n_ctx_query: int = field(
        default=4, metadata={"help": "Query prompt tokens per block (PromptSRC: 4)."}
    )
    depth: int = field(
        default=9,
        metadata={"help": "J: prompted blocks 1..J on both sides (capped at the encoder's depth)."},
    )
    image_weight: float = field(
        default=10.0, metadata={"help": "lambda_1: weight of the L1 between query features."}
    )
    text_weight: float = field(
        default=25.0, metadata={"help": "lambda_2: weight of the L1 between class features."}
    )
    logit_weight: float = field(
        default=1.0, metadata={"help": "Weight of the KL between frozen and prompted logits."}
    )
    gpa_mean: float = field(
        default=15.0, metadata={"help": "mu: the epoch (1-based) of the largest GPA weight."}
    )
    gpa_std: float = field(default=1.0, metadata={"help": "sigma of the GPA weights, in epochs."})
    templates: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Hand-written templates whose frozen class features are averaged for the "
            "text and logit terms (the authors: CLIP's ImageNet templates); empty: the run's."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        weights = (self.image_weight, self.text_weight, self.logit_weight)
        if min(weights) < 0:
            raise ValueError(f"image_weight, text_weight, logit_weight={weights} must be >= 0")
        if self.gpa_std <= 0:
            raise ValueError(f"gpa_std={self.gpa_std} must be > 0")
        if any(t.count("{}") != 1 for t in self.templates):
            raise ValueError(f"templates={self.templates} must each hold one {{}}")


def gpa_weights(mean: float, std: float, epochs: int) -> torch.Tensor:
    """w_t = N(t; mean, std^2) / sum_s N(s; mean, std^2) for epochs t = 1..epochs (float64; the
    normal's constant cancels, so a softmax of the log-densities, safe far from the mean)."""
    t = torch.arange(1, epochs + 1, dtype=torch.float64)
    return torch.softmax(-0.5 * ((t - mean) / std) ** 2, dim=0)


class PromptSRC(IVLP):
    name = "promptsrc"
    config_class = PromptSRCConfig
    description = "IVLP prompts regulated toward the frozen model, Gaussian-aggregated (PromptSRC)"

    def __init__(
        self, config: PromptSRCConfig, encoder: DualEncoder, init_ids: list[int] | None
    ) -> None:
        super().__init__(config, encoder, init_ids)
        # running sum_t w_t P_t of every prompt: saved, so a resumed run aggregates the same
        self.aggregated = [name for name, p in self.named_parameters() if p.requires_grad]
        for index, name in enumerate(self.aggregated):
            self.register_buffer(f"gpa_{index}", torch.zeros_like(self.get_parameter(name)))

    def begin_training(self, encoder: DualEncoder, names: Sequence[str], template: str) -> None:
        """g~: the frozen class features averaged over the templates (not saved)."""
        templates = self.config.templates or [template]
        features = frozen_class_features(encoder, names, templates)
        self.register_buffer("frozen_classes", features, persistent=False)

    def loss_terms(self, step: TrainStep) -> dict[str, torch.Tensor]:
        cfg, encoder = self.config, step.encoder
        with torch.no_grad():
            frozen_queries = encoder.encode_queries(step.inputs).float()  # (B, D)
            frozen_logits = encoder.scores(frozen_queries, self.frozen_classes)  # (B, C)
        kl = F.kl_div(
            F.log_softmax(step.logits, dim=1),
            F.log_softmax(frozen_logits, dim=1),
            reduction="sum",
            log_target=True,
        )
        return {
            "scl_image": cfg.image_weight * F.l1_loss(step.queries.float(), frozen_queries),
            "scl_text": cfg.text_weight * F.l1_loss(step.classes.float(), self.frozen_classes),
            "scl_logits": cfg.logit_weight * kl / step.logits.numel(),
        }

    @torch.no_grad()
    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Adds w_t P_t (t = epoch + 1); after the last epoch the prompts become the sum."""
        weight = gpa_weights(self.config.gpa_mean, self.config.gpa_std, epochs)[epoch].item()
        for index, name in enumerate(self.aggregated):
            total = self.get_buffer(f"gpa_{index}")
            total.add_(self.get_parameter(name), alpha=weight)
            if epoch == epochs - 1:
                self.get_parameter(name).copy_(total)


register_method(PromptSRC)
