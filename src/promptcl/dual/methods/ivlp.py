"""ivlp (independent vision-language prompting, the deep-VPT baseline of MaPLe, Khattak et al.
CVPR 2023, sec. 4): independent deep prompts in both encoders for blocks 1..J, each block's
prompts replacing the previous block's. Label side: the context vectors (block 1) then P_l;
query side: V_l, inserted after the first token."""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcl.backbones import DualEncoder, Prompts, PromptStep
from promptcl.dual.methods.base import (
    ContextConfig,
    DualMethod,
    check_depth,
    context_or_none,
    make_context,
    prompt_depth,
    random_prompts,
    register_method,
)


@dataclass
class IVLPConfig(ContextConfig):
    n_ctx_query: int = field(default=2, metadata={"help": "Prompt tokens per query-side block."})
    depth: int = field(
        default=12,
        metadata={"help": "J: label-side prompted blocks 1..J (capped at the encoder's depth)."},
    )
    query_depth: int | None = field(
        default=None, metadata={"help": "Query-side J; null: the same as depth."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_depth(self.depth)
        check_depth(self.query_depth or self.depth)
        if self.n_ctx_query < 0:
            raise ValueError(f"n_ctx_query={self.n_ctx_query} must be >= 0")


class IVLP(DualMethod):
    name = "ivlp"
    config_class = IVLPConfig
    description = "independent deep prompts in both encoders, replaced at every block"

    def __init__(
        self, config: IVLPConfig, encoder: DualEncoder, init_ids: list[int] | None
    ) -> None:
        super().__init__(config, encoder, init_ids)
        text_depth = prompt_depth(config.depth, encoder.label)
        query_depth = prompt_depth(config.query_depth or config.depth, encoder.query)
        self.ctx = make_context(encoder, config.n_ctx, init_ids)  # (n_ctx, d_word)
        self.text = random_prompts(text_depth - 1, config.n_ctx, encoder.label.dim)
        self.visual = random_prompts(query_depth, config.n_ctx_query, encoder.query.dim)

    def label_prompts(self) -> Prompts:
        steps = {block + 1: PromptStep(p) for block, p in enumerate(self.text)}
        return Prompts(ctx=context_or_none(self.ctx), steps=steps)

    def query_prompts(self) -> Prompts:
        return Prompts(steps={block: PromptStep(p) for block, p in enumerate(self.visual)})


register_method(IVLP)
