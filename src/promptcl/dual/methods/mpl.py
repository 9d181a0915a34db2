"""mpl: Modular Prompt Learning (seed 001; DESIGN section 5). As MaPLe on the label side; on
the query side the prompts are carried instead of replaced. Block 1 gets F_0(P_0) (n_ctx
tokens); at each block l = 2..J the n_rm NEWEST carried prompt tokens are dropped, the rest are
kept (their hidden states from block l-1), and n_add * n_ctx new tokens are appended, group a
being F_{l,a}(P_l) from its own coupling. Count entering block l (1-based):
c_1 = n_ctx, c_l = max(c_{l-1} - n_rm, 0) + n_add * n_ctx for l <= J, unchanged after J.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from promptcl.dual.encoders import DualEncoder, Prompts, PromptStep
from promptcl.dual.methods.base import (
    ContextConfig,
    DualMethod,
    check_depth,
    cloned_linears,
    context_or_none,
    make_context,
    prompt_depth,
    random_prompts,
)


@dataclass
class MPLConfig(ContextConfig):
    n_ctx: int = field(default=1, metadata={"help": "Text prompt tokens per block (MPL: 1)."})
    ctx_init: str = field(
        default="prepend",
        metadata={"help": "As for coop; MPL's code prepends its context to the template."},
    )
    n_add: int = field(
        default=2, metadata={"help": "Couplings per block: n_add * n_ctx new query tokens."}
    )
    n_rm: int = field(
        default=1, metadata={"help": "Newest carried query tokens dropped at blocks 2..J."}
    )
    depth: int = field(
        default=9,
        metadata={"help": "J: prompted blocks 1..J (capped at the encoder's depth: 6 for MiniLM)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_depth(self.depth)
        if self.n_add < 1 or self.n_rm < 0:
            raise ValueError(f"n_add={self.n_add} must be >= 1 and n_rm={self.n_rm} >= 0")
        if not self.n_rm < self.n_add * self.n_ctx + 1:
            raise ValueError(
                f"n_rm={self.n_rm} must be < n_add * n_ctx + 1 = {self.n_add * self.n_ctx + 1} "
                "(a block may not drop more prompt tokens than it adds)"
            )


def carried_counts(n_ctx: int, n_add: int, n_rm: int, depth: int, num_blocks: int) -> list[int]:
    """Query prompt tokens entering each block (0-based list over all blocks)."""
    counts = [n_ctx]
    for block in range(1, num_blocks):
        added = n_add * n_ctx if block < depth else 0
        dropped = n_rm if block < depth else 0
        counts.append(max(counts[-1] - dropped, 0) + added)
    return counts


class MPL(DualMethod):
    description = "MaPLe with modular carry: drop the n_rm newest query prompts, add n_add groups"

    def __init__(self, config: MPLConfig, encoder: DualEncoder, init_ids: list[int] | None) -> None:
        super().__init__(config, encoder, init_ids)
        self.depth = min(prompt_depth(config.depth, t) for t in (encoder.label, encoder.query))
        d_text, d_query = encoder.label.dim, encoder.query.dim
        self.ctx = make_context(encoder, config.n_ctx, init_ids)  # P_0: (n_ctx, d_word)
        self.text = random_prompts(self.depth - 1, config.n_ctx, d_text)  # P_1 .. P_{J-1}
        self.couple_input = nn.Linear(d_text, d_query)  # F_0
        # F_{l,a}: every coupling starts from one random init, as the public code clones it
        couplings = cloned_linears(config.n_add * (self.depth - 1), d_text, d_query)
        self.couple = nn.ModuleList(
            couplings[a * (self.depth - 1) : (a + 1) * (self.depth - 1)]
            for a in range(config.n_add)
        )  # [a][l - 1]

    def label_prompts(self) -> Prompts:
        steps = {block + 1: PromptStep(p) for block, p in enumerate(self.text)}
        return Prompts(ctx=context_or_none(self.ctx), steps=steps)

    def added(self) -> list[torch.Tensor]:
        """New query tokens of blocks 0..J-1: (n_ctx, d) then (n_add * n_ctx, d) each."""
        tokens = [self.couple_input(self.ctx)]
        for block, p in enumerate(self.text):
            tokens.append(torch.cat([group[block](p) for group in self.couple], dim=0))
        return tokens

    def query_prompts(self) -> Prompts:
        steps = {}
        for block, t in enumerate(self.added()):
            steps[block] = PromptStep(t, drop=None if block == 0 else self.config.n_rm)
        return Prompts(steps=steps)
