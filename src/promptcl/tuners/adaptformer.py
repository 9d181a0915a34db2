"""AdaptFormer's parallel adapter (Chen et al., NeurIPS 2022), as the LAMDA-PILOT code of APER,
EASE and MOS builds it (backbone/vit_adapter.py, ``Adapter`` with ffn_option "parallel",
layer norm "none", init "lora", scalar 0.1, dropout 0.1): beside the MLP of a block, reading
the MLP sublayer's input x,

    a(x) = s * up(dropout(relu(down(x)))),

added to the MLP's output (backbones/masked.py, ``BESIDE_MLP``). ``down`` keeps nn.Linear's
Kaiming-uniform weight with a zero bias, ``up`` starts at zero: a new adapter is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from promptcl.backbones.masked import BESIDE_MLP, BlockEdits


@dataclass
class AdapterOptions:
    """AdaptFormer's options, shared by the configs of the methods that use it."""

    bottleneck: int = field(default=64, metadata={"help": "Adapter hidden size (ffn_num)."})
    adapter_scale: float = field(default=0.1, metadata={"help": "Adapter s of s * up(...)."})
    adapter_dropout: float = field(
        default=0.1, metadata={"help": "Dropout on the adapter's hidden units in training."}
    )

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError("bottleneck must be >= 1")
        if not 0 <= self.adapter_dropout < 1:
            raise ValueError("adapter_dropout must be in [0, 1)")


class AdaptFormer(nn.Module):
    def __init__(self, dim: int, bottleneck: int, scale: float, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, d): what the block adds beside its MLP."""
        return self.scale * self.up(self.dropout(torch.relu(self.down(x))))


def adapter_set(dim: int, blocks: Sequence[int], options: AdapterOptions) -> nn.ModuleList:
    """One adapter per block of ``blocks``, in that order."""
    o = options
    return nn.ModuleList(
        AdaptFormer(dim, o.bottleneck, o.adapter_scale, o.adapter_dropout) for _ in blocks
    )


def adapter_edits(blocks: Sequence[int], adapters: nn.ModuleList) -> dict[int, BlockEdits]:
    """``Backbone.forward(edits=)`` putting ``adapters[i]`` beside the MLP of ``blocks[i]``."""
    return {block: {BESIDE_MLP: adapter} for block, adapter in zip(blocks, adapters, strict=True)}
