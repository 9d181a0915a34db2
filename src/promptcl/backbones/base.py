"""The backbone interface shared by text and image encoders.

A backbone is frozen and always runs in eval mode. It exposes its blocks one by one so that
tuners can inject prefixes (per block), prepend prompt tokens (at the input), or replace
linear layers, and it gives the pooled feature of the un-prompted input (the query of L2P,
DualPrompt and task-identity classifiers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from promptcl.backbones.attention import Prefix, PrefixAttention
from promptcl.errors import UsageError

# a prefix computed from the hidden states entering its block (B, N, d) and their keep mask
PrefixFn = Callable[[torch.Tensor, torch.Tensor | None], Prefix]


@dataclass
class _Trunk:
    """Hidden states entering block ``depth`` for one inputs mapping (Backbone.shared_trunk)."""

    depth: int
    inputs: Mapping[str, torch.Tensor] | None = None
    x: torch.Tensor | None = None
    keep: torch.Tensor | None = None


class Backbone(nn.Module):
    """Subclasses set the attributes below and implement embed, run_block, final_norm, pool."""

    modality: str  # "text" or "image"
    dim: int
    num_heads: int
    num_blocks: int
    num_prefix_tokens: int  # tokens before the content ([CLS], register tokens): prompts go after
    attentions: nn.ModuleList  # PrefixAttention per block
    _trunk: _Trunk | None = None  # set by shared_trunk

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs -> token embeddings (B, N, d) and keep mask (B, N) (None: all tokens real)."""
        raise NotImplementedError

    def run_block(
        self, index: int, x: torch.Tensor, keep: torch.Tensor | None, prefix: Prefix | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Normed hidden states (B, N, d) -> the backbone's own pooled feature (B, d)."""
        raise NotImplementedError

    def linear_paths(self, index: int, mlp: bool = False) -> dict[str, str]:
        """Short name -> submodule path of block ``index``'s attention projections (and, with
        ``mlp``, its MLP linears): the layers that weight masks wrap."""
        raise UsageError(f"masked linears are not wired for {type(self).__name__} backbones")

    def train(self, mode: bool = True) -> Backbone:
        """The frozen backbone stays in eval mode: no dropout, deterministic features."""
        return super().train(False)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        prompts: torch.Tensor | None = None,
        prefixes: Mapping[int, Prefix | PrefixFn] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states after the final norm (B, N', d) and their keep mask.

        prompts: (B, L, d) tokens inserted after the prefix tokens (L2P); N' = N + L.
        prefixes: block index -> prefix keys/values for that block's attention, or a function
        that computes them from the hidden states entering the block (routing, as in Hash).
        """
        trunk, start = self._trunk, 0
        if trunk is not None and trunk.inputs is inputs:
            x, keep, start = trunk.x, trunk.keep, trunk.depth
        else:
            x, keep = self.embed(inputs)
            if prompts is not None:
                x, keep = insert_prompts(x, keep, prompts, self.num_prefix_tokens)
        prefixes = prefixes or {}
        for i in range(start, self.num_blocks):
            if trunk is not None and i == trunk.depth:
                trunk.inputs, trunk.x, trunk.keep = inputs, x.detach(), keep
            prefix = prefixes.get(i)
            if callable(prefix):
                prefix = prefix(x, keep)
            x = self.run_block(i, x, keep, prefix)
        return self.final_norm(x), keep

    @contextmanager
    def shared_trunk(self, depth: int) -> Iterator[None]:
        """Forwards inside the context share the hidden states entering block ``depth``: the
        first forward on an inputs mapping stores them (detached), later forwards on the same
        mapping object start there. For callers whose forwards differ only from block ``depth``
        on (same prompts, same prefixes below it), e.g. Gradient ID's superposed and final
        passes."""
        if not 0 <= depth < self.num_blocks:
            raise ValueError(f"trunk depth must be in [0, {self.num_blocks}), got {depth}")
        self._trunk = _Trunk(depth)
        try:
            yield
        finally:
            self._trunk = None

    @torch.no_grad()
    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled feature of the un-prompted input (B, d), without gradients."""
        x, keep = self(inputs)
        return self.pool(x, keep)


def insert_prompts(
    x: torch.Tensor, keep: torch.Tensor | None, prompts: torch.Tensor, at: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Insert prompts (B, L, d) into x (B, N, d) at position ``at``."""
    x = torch.cat([x[:, :at], prompts.to(x.dtype), x[:, at:]], dim=1)
    if keep is not None:
        ones = keep.new_ones(keep.shape[0], prompts.shape[1])
        keep = torch.cat([keep[:, :at], ones, keep[:, at:]], dim=1)
    return x, keep


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()


__all__ = ["Backbone", "Prefix", "PrefixAttention", "PrefixFn", "freeze", "insert_prompts"]
