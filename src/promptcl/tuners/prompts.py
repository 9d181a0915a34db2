"""Pieces shared by prompt methods: prefix tensors to per-block ``Prefix`` maps, block checks
and defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from promptcl.backbones import Backbone, Prefix
from promptcl.errors import UsageError


def check_blocks(blocks: Sequence[int], backbone: Backbone, key: str) -> list[int]:
    """Validate block indices against the backbone (0-based)."""
    blocks = list(blocks)
    bad = [b for b in blocks if not 0 <= b < backbone.num_blocks]
    if bad or len(set(blocks)) != len(blocks):
        raise UsageError(
            f"tuner.{key}={blocks} is not a list of distinct blocks in 0..{backbone.num_blocks - 1}"
        )
    return blocks


def first_blocks(blocks: Sequence[int] | None, count: int, backbone: Backbone) -> list[int]:
    """``blocks`` if given, else blocks 0..count-1, or all blocks of a shallower backbone."""
    return list(blocks) if blocks is not None else list(range(min(count, backbone.num_blocks)))


def prefixes_from(blocks: Sequence[int], prompts: torch.Tensor) -> dict[int, Prefix]:
    """prompts: (n_blocks, 2, L, d) shared by the batch, or (B, n_blocks, 2, L, d) per sample;
    index 0 of the pair dimension holds the key prefix, index 1 the value prefix."""
    if prompts.dim() == 4:
        return {b: Prefix(prompts[i, 0], prompts[i, 1]) for i, b in enumerate(blocks)}
    return {b: Prefix(prompts[:, i, 0], prompts[:, i, 1]) for i, b in enumerate(blocks)}


def merge_prefixes(*maps: Mapping[int, Prefix], batch: int) -> dict[int, Prefix]:
    """Union of prefix maps; where two give the same block, their prefixes are concatenated."""
    merged: dict[int, Prefix] = {}
    for prefixes in maps:
        for block, prefix in prefixes.items():
            if block not in merged:
                merged[block] = prefix
                continue
            old = merged[block]
            merged[block] = Prefix(
                torch.cat([_batched(old.key, batch), _batched(prefix.key, batch)], dim=1),
                torch.cat([_batched(old.value, batch), _batched(prefix.value, batch)], dim=1),
            )
    return merged


def _batched(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t.unsqueeze(0).expand(batch, -1, -1) if t.dim() == 2 else t
