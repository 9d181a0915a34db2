"""cocoop: Conditional Prompt Learning (Zhou, Yang, Loy and Liu, CVPR 2022). CoOp's context
vectors v_1..v_M, each shifted by one token pi = h(x) that a meta-network computes from the
query feature (eq. 2: v_m(x) = v_m + pi); the class texts t_c(x) = [v_1(x) .. v_M(x), name_c]
are encoded for every query, so class features are (B, C, D) (eq. 3). The meta-network is the
authors' Linear(D, D / 16) - ReLU - Linear(D / 16, d_word) on the L2-normalised query feature
(KaiyangZhou/CoOp, trainers/cocoop.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from promptcl.backbones import DualEncoder, Prompts
from promptcl.dual.methods.base import Classifier, register_method
from promptcl.dual.methods.coop import CoOp, CoOpConfig


@dataclass
class CoCoOpConfig(CoOpConfig):
    reduction: int = field(
        default=16, metadata={"help": "Meta-network hidden width = D // reduction (at least 1)."}
    )
    samples_per_pass: int = field(
        default=1,
        metadata={
            "help": "Queries whose C class texts go through the label encoder in one pass "
            "(the authors' code: 1); a pass encodes samples_per_pass * C texts."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduction < 1 or self.samples_per_pass < 1:
            raise ValueError(
                f"reduction={self.reduction} and samples_per_pass={self.samples_per_pass} "
                "must be >= 1"
            )


class CoCoOp(CoOp):
    name = "cocoop"
    config_class = CoCoOpConfig
    description = "CoOp's context shifted per query by a meta-network token (CoCoOp)"

    def __init__(
        self, config: CoCoOpConfig, encoder: DualEncoder, init_ids: list[int] | None
    ) -> None:
        super().__init__(config, encoder, init_ids)
        d_query, d_word = encoder.embed_dim, self.ctx.shape[1]
        hidden = max(d_query // config.reduction, 1)
        self.meta_net = nn.Sequential(
            nn.Linear(d_query, hidden), nn.ReLU(), nn.Linear(hidden, d_word)
        )

    def conditional_context(self, queries: torch.Tensor) -> torch.Tensor:
        """Eq. 2: v_m(x) = v_m + h(x) for query features (B, D) -> (B, n_ctx, d_word)."""
        return self.ctx + self.meta_net(queries).unsqueeze(1)

    def classifier(self, encoder: DualEncoder, texts: Mapping[str, torch.Tensor]) -> Classifier:
        """Class features (B, C, D) of each query's own class texts, encoded for
        ``samples_per_pass`` queries at a time (B / samples_per_pass label-encoder passes of
        samples_per_pass * C texts). Without context vectors nothing is conditioned: the
        plain class features (C, D)."""
        if not self.ctx.shape[0]:
            return super().classifier(encoder, texts)
        n_classes = texts["input_ids"].shape[0]

        def classes(queries: torch.Tensor) -> torch.Tensor:
            features = []
            for ctx in self.conditional_context(queries).split(self.config.samples_per_pass):
                b = ctx.shape[0]
                tokens = {k: v.repeat(b, 1) for k, v in texts.items()}  # (b * C, N), by query
                per_text = ctx.repeat_interleave(n_classes, dim=0)  # (b * C, n_ctx, d_word)
                encoded = encoder.encode_labels(tokens, Prompts(ctx=per_text))
                features.append(encoded.view(b, n_classes, -1))
            return torch.cat(features)  # (B, C, D)

        return classes


register_method(CoCoOp)
