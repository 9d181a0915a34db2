"""coop (Zhou et al., IJCV 2022): n_ctx learned context vectors replace the template words at
the label encoder's input: g([ctx_1 .. ctx_n] + name); the query encoder is untouched."""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcl.backbones import DualEncoder, Prompts
from promptcl.dual.methods.base import (
    ContextConfig,
    DualMethod,
    context_or_none,
    make_context,
    register_method,
)


@dataclass
class CoOpConfig(ContextConfig):
    n_ctx: int = field(
        default=4, metadata={"help": "Context vectors (CoOp: 4 with 'a photo of a', 16 generic)."}
    )


class CoOp(DualMethod):
    name = "coop"
    config_class = CoOpConfig
    description = "learned context vectors at the label encoder's input (CoOp)"

    def __init__(
        self, config: CoOpConfig, encoder: DualEncoder, init_ids: list[int] | None
    ) -> None:
        super().__init__(config, encoder, init_ids)
        self.ctx = make_context(encoder, config.n_ctx, init_ids)  # (n_ctx, d_word)

    def label_prompts(self) -> Prompts:
        return Prompts(ctx=context_or_none(self.ctx))


register_method(CoOp)
