"""Key matching (L2P eq. 3; DualPrompt's "Prompt ID"): per sample, the keys closest in cosine
similarity to the frozen query feature of that sample. Nothing is shared across the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, d) x (K, d) -> (B, K) cosine similarities."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def match_keys(
    query: torch.Tensor, keys: torch.Tensor, top_k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """query (B, d), keys (K, d) -> indices (B, top_k) of the closest keys, and their cosines."""
    sims = cosine(query, keys)  # (B, K)
    best = sims.topk(top_k, dim=1)
    return best.indices, best.values


def prompt_id(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """One task per sample: the index of its closest task key, (B,)."""
    return match_keys(query, keys, 1)[0].squeeze(1)
