"""Key matching (L2P eq. 3; DualPrompt's "Prompt ID"): per sample, the keys closest in cosine
similarity to the frozen query feature of that sample. Nothing is shared across the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class TaskKeys(nn.ParameterList):
    """One key k_t per task, for Prompt ID (DualPrompt, Wang et al., ECCV 2022, eq. 5): a new
    task's key starts as U(-a, a) and is pulled to its samples' queries by
    1 - cos(q(x), k_t); the keys of finished tasks are frozen."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.dim, self.init = dim, init

    def add_task(self, device: torch.device) -> None:
        """Freeze the old keys and append the new task's."""
        for old in self:
            old.requires_grad_(False)
        key = nn.init.uniform_(torch.empty(self.dim), -self.init, self.init)
        self.append(nn.Parameter(key.to(device)))

    def match(self, query: torch.Tensor) -> torch.Tensor:
        """(B,) each sample's closest task key among the seen tasks'."""
        return prompt_id(query, torch.stack(list(self)))

    def pull(self, query: torch.Tensor, task: int) -> torch.Tensor:
        """mean_x (1 - cos(q(x), k_task)): the loss pulling the task's key to its queries."""
        similarity = cosine(query, self[task].unsqueeze(0))  # (B, 1)
        return (1 - similarity).mean()
