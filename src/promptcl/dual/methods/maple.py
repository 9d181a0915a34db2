"""maple (Khattak et al., CVPR 2023, eq. 5-7): deep text prompts P_0..P_{J-1} (P_0 = the
context vectors at the label encoder's input); the query side's prompts at block l are
F_l(P_l), a linear coupling per block; both sides replace their prompts at every block."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from promptcl.backbones import DualEncoder, Prompts, PromptStep
from promptcl.dual.methods.base import (
    ContextConfig,
    DualMethod,
    check_depth,
    cloned_linears,
    context_or_none,
    make_context,
    prompt_depth,
    random_prompts,
    register_method,
)


@dataclass
class MaPLeConfig(ContextConfig):
    depth: int = field(
        default=9,
        metadata={"help": "J: prompted blocks 1..J on both sides (capped at the encoder's depth)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_depth(self.depth)


class MaPLe(DualMethod):
    name = "maple"
    config_class = MaPLeConfig
    description = "deep text prompts, query prompts = per-block linear coupling of them"

    def __init__(
        self, config: MaPLeConfig, encoder: DualEncoder, init_ids: list[int] | None
    ) -> None:
        super().__init__(config, encoder, init_ids)
        self.depth = min(prompt_depth(config.depth, t) for t in (encoder.label, encoder.query))
        d_text, d_query = encoder.label.dim, encoder.query.dim
        self.ctx = make_context(encoder, config.n_ctx, init_ids)  # P_0: (n_ctx, d_word)
        self.text = random_prompts(self.depth - 1, config.n_ctx, d_text)  # P_1 .. P_{J-1}
        self.couple_input = nn.Linear(d_text, d_query)  # F_0
        self.couple = self.make_couplings(d_text, d_query)

    def make_couplings(self, d_text: int, d_query: int) -> nn.ModuleList:
        """F_1 .. F_{J-1}."""
        return cloned_linears(self.depth - 1, d_text, d_query)

    def label_prompts(self) -> Prompts:
        steps = {block + 1: PromptStep(p) for block, p in enumerate(self.text)}
        return Prompts(ctx=context_or_none(self.ctx), steps=steps)

    def coupled(self) -> list[torch.Tensor]:
        """Query prompts of blocks 0..J-1, each (n_ctx, d_query)."""
        return [self.couple_input(self.ctx)] + [
            f(p) for f, p in zip(self.couple, self.text, strict=True)
        ]

    def query_prompts(self) -> Prompts:
        return Prompts(steps={block: PromptStep(t) for block, t in enumerate(self.coupled())})


register_method(MaPLe)
