"""mpl: Modular Prompt Learning (Huang, Pedapati, Chen and Gao, "Modular Prompt Learning
Improves Vision-Language Models", ICASSP 2025). As MaPLe on the label side; on
the query side the prompts are carried instead of replaced. Block 1 gets F_0(P_0) (n_ctx
tokens); at each block l = 2..J the n_rm NEWEST carried prompt tokens are dropped, the rest are
kept (their hidden states from block l-1), and n_add * n_ctx new tokens are appended, group a
being F_{l,a}(P_l) from its own coupling (group 0 is MaPLe's F_l). Count entering block l (1-based):
c_1 = n_ctx, c_l = max(c_{l-1} - n_rm, 0) + n_add * n_ctx for l <= J, unchanged after J.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from promptcl.backbones import Prompts, PromptStep
from promptcl.dual.methods.base import cloned_linears, register_method
from promptcl.dual.methods.maple import MaPLe, MaPLeConfig


@dataclass
class MPLConfig(MaPLeConfig):
    n_ctx: int = field(default=1, metadata={"help": "Text prompt tokens per block (MPL: 1)."})
    ctx_init: str = field(
        default="prepend",
        metadata={
            "help": "As for coop; MPL's code prepends its context to the template and starts it "
            "from the embedding of 'X' (prepend; prepend-random: N(0, 0.02))."
        },
    )
    n_add: int = field(
        default=2, metadata={"help": "Couplings per block: n_add * n_ctx new query tokens."}
    )
    n_rm: int = field(
        default=1, metadata={"help": "Newest carried query tokens dropped at blocks 2..J."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_add < 1 or self.n_rm < 0:
            raise ValueError(f"n_add={self.n_add} must be >= 1 and n_rm={self.n_rm} >= 0")
        if not self.n_rm < self.n_add * self.n_ctx + 1:
            raise ValueError(
                f"n_rm={self.n_rm} must be < n_add * n_ctx + 1 = {self.n_add * self.n_ctx + 1} "
                "(a block may not drop more prompt tokens than it adds)"
            )


def carried_counts(n_ctx: int, n_add: int, n_rm: int, depth: int, num_blocks: int) -> list[int]:
    """Query prompt tokens leaving each block's prompt step (0-based list over all blocks)."""
    counts = [n_ctx]
    for block in range(1, num_blocks):
        added = n_add * n_ctx if block < depth else 0
        dropped = n_rm if block < depth else 0
        counts.append(max(counts[-1] - dropped, 0) + added)
    return counts


class MPL(MaPLe):
    """MaPLe's text side, context and couplings F_0, F_l; n_add - 1 more coupling groups."""

    name = "mpl"
    config_class = MPLConfig
    description = "MaPLe with modular carry: drop the n_rm newest query prompts, add n_add groups"

    def make_couplings(self, d_text: int, d_query: int) -> nn.ModuleList:
        """F_{l,a} for every group a: all start from one random init, as the public code clones
        it. Group 0 is MaPLe's F_l (``self.couple``); groups 1.. go to ``self.groups``, indexed
        [a - 1][l - 1]."""
        per_group = self.depth - 1
        couplings = cloned_linears(self.config.n_add * per_group, d_text, d_query)
        self.groups = nn.ModuleList(
            couplings[a * per_group : (a + 1) * per_group] for a in range(1, self.config.n_add)
        )
        return nn.ModuleList(couplings[:per_group])

    def added(self) -> list[torch.Tensor]:
        """New query tokens of blocks 0..J-1: (n_ctx, d) then (n_add * n_ctx, d) each."""
        tokens = [self.couple_input(self.ctx)]
        for block, p in enumerate(self.text):
            fs = [self.couple[block], *(group[block] for group in self.groups)]
            tokens.append(torch.cat([f(p) for f in fs], dim=0))
        return tokens

    def query_prompts(self) -> Prompts:
        """Block 0 gets its tokens; block l keeps the oldest carried tokens but the n_rm
        newest and appends its own."""
        cfg = self.config
        counts = carried_counts(cfg.n_ctx, cfg.n_add, cfg.n_rm, self.depth, self.depth)
        first, *rest = self.added()
        steps = {0: PromptStep(first)}
        for block, t in enumerate(rest, start=1):
            steps[block] = PromptStep(t, kept=max(counts[block - 1] - cfg.n_rm, 0))
        return Prompts(steps=steps)


register_method(MPL)
