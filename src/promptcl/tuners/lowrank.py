"""Low-rank updates of the attention's query/key/value projections, one branch per task and
every seen task's branch in every forward (no task is chosen at test): the shared machinery of
InfLoRA (``inflora``) and SD-LoRA (``sdlora``).

A block's update of projection ``part`` (query, key or value) is a (d, d) matrix added to that
projection's frozen weight; on a fused qkv linear (timm) it fills the part's third of the rows
(``Backbone.attention_projection``). Updates reach the backbone as edits (backbones/masked.py),
formed per call as temporaries: the backbone holds nothing and is not modified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.base import Backbone
from promptcl.backbones.masked import BlockEdits, added_weight
from promptcl.tuners.base import Batch, Tuner, TunerOutput
from promptcl.tuners.prompts import check_blocks


class LowRankPair(nn.Module):
    """One block's branch of one task: per part an A (r, d) and a B (d, r), the part's update
    being B A. A starts Kaiming-uniform and B at zero (the layer starts as the frozen one), as
    in LoRA (and both authors' codes)."""

    def __init__(self, parts: Sequence[str], dim: int, rank: int) -> None:
        super().__init__()
        self.A = nn.ParameterDict({p: nn.Parameter(torch.empty(rank, dim)) for p in parts})
        self.B = nn.ParameterDict({p: nn.Parameter(torch.zeros(dim, rank)) for p in parts})
        for a in self.A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def product(self, part: str) -> torch.Tensor:
        return self.B[part] @ self.A[part]


class AddedWeight(NamedTuple):
    """An edit adding ``delta`` (out, in) to a frozen linear's weight."""

    delta: torch.Tensor

    def __call__(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, added_weight(layer.weight, self.delta), layer.bias)


def projection_edits(
    backbone: Backbone, blocks: Sequence[int], updates: Sequence[Mapping[str, torch.Tensor]]
) -> dict[int, BlockEdits]:
    """Edits for ``Backbone.forward(edits=)``: ``updates[k]`` maps a part to its (d, d) update
    in block ``blocks[k]``; parts sharing a fused linear share one edit (zeros elsewhere)."""
    edits: dict[int, BlockEdits] = {}
    for block, parts in zip(blocks, updates, strict=True):
        rows: dict[str, dict[int, torch.Tensor]] = {}
        groups: dict[str, int] = {}
        for part, update in parts.items():
            name, group, groups[name] = backbone.attention_projection(part)
            rows.setdefault(name, {})[group] = update
        edits[block] = {
            name: AddedWeight(
                torch.cat([by_group.get(g, zeros_like(by_group)) for g in range(groups[name])])
            )
            for name, by_group in rows.items()
        }
    return edits


class SummedBranches(Tuner):
    """Base of inflora and sdlora: in each block of ``config.blocks`` (null: all), one branch per
    seen task on the projections ``parts``; every forward applies ``updates()`` (the subclass
    combines the branches) and one head over all classes scores the pooled feature."""

    parts: ClassVar[tuple[str, ...]]
    task_inference = "none inferred (every seen task's branch is summed; one head)"

    def __init__(self, config: Any, backbone: Backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        blocks = config.blocks if config.blocks is not None else range(backbone.num_blocks)
        self.blocks = check_blocks(blocks, backbone, "blocks")
        self.branches = nn.ModuleList()  # task -> block -> LowRankPair
        self.head = nn.Linear(backbone.dim, num_classes)

    def add_branch(self, rank: int) -> nn.ModuleList:
        """Freeze every older branch and append the new task's."""
        self.branches.requires_grad_(False)
        branch = nn.ModuleList(
            LowRankPair(self.parts, self.backbone.dim, rank) for _ in self.blocks
        )
        self.branches.append(branch.to(self.head.weight.device))
        return branch

    def updates(self) -> list[dict[str, torch.Tensor]]:
        """Per edited block, part -> its (d, d) update."""
        raise NotImplementedError

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        edits = projection_edits(self.backbone, self.blocks, self.updates())
        hidden, keep = self.backbone(batch.inputs, edits=edits)
        return TunerOutput(self.head(self.backbone.pool(hidden, keep)))

    def report(self) -> dict[str, Any]:
        return {"params_per_task": sum(p.numel() for p in self.branches[-1].parameters())}


def zeros_like(by_group: Mapping[int, torch.Tensor]) -> torch.Tensor:
    return torch.zeros_like(next(iter(by_group.values())))


__all__ = ["AddedWeight", "LowRankPair", "SummedBranches", "projection_edits"]
