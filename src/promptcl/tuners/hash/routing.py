"""Hash's history-aware pieces as pluggable functions (Hash, "Is Parameter Isolation Better for
Prompt-Based Continual Learning?", CVPR 2026: HDR and HGM).

H (n_blocks, K): training samples routed to each expert, summed over the tasks so far.
A (n_blocks, K) bool: the M most-used experts at the start of the current task.

HDR: s~_e = s_e - phi(H)_e, applied before top-k.   HGM: the update of expert e is scaled by
psi(H)_e in (0, 1] (a per-expert learning rate, see docs/METHODS.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from promptcl.registry import Registry

HistoryFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
# phi(H, A, delta) -> (n_blocks, K) penalty subtracted from the routing scores
PENALTIES: Registry[HistoryFn] = Registry("HDR penalty")
# psi(H, A, beta) -> (n_blocks, K) multiplier of each expert's learning rate
MODULATIONS: Registry[HistoryFn] = Registry("HGM modulation")


def penalty(name: str, description: str = "") -> Callable[[HistoryFn], HistoryFn]:
    return PENALTIES.register(name, description)


def modulation(name: str, description: str = "") -> Callable[[HistoryFn], HistoryFn]:
    return MODULATIONS.register(name, description)


@penalty("constant")
def constant_penalty(history: torch.Tensor, protected: torch.Tensor, delta: float) -> torch.Tensor:
    """The paper's default: delta for the experts in A, 0 elsewhere."""
    return delta * protected.to(history.dtype)


@penalty("proportional")
def proportional_penalty(
    history: torch.Tensor, protected: torch.Tensor, delta: float
) -> torch.Tensor:
    """delta * H_e / max_e H_e for the experts in A: heavier for the more used."""
    peak = history.amax(dim=-1, keepdim=True).clamp_min(1)
    return delta * protected.to(history.dtype) * history / peak


@modulation("constant")
def constant_modulation(
    history: torch.Tensor, protected: torch.Tensor, beta: float
) -> torch.Tensor:
    """The paper's default: beta for the experts in A, 1 elsewhere."""
    return torch.where(protected, torch.full_like(history, beta), torch.ones_like(history))


@modulation("proportional")
def proportional_modulation(
    history: torch.Tensor, protected: torch.Tensor, beta: float
) -> torch.Tensor:
    """From 1 down to beta for the experts in A, in proportion to H_e / max_e H_e."""
    peak = history.amax(dim=-1, keepdim=True).clamp_min(1)
    scale = 1 - (1 - beta) * history / peak
    return torch.where(protected, scale, torch.ones_like(history))


def most_used(history: torch.Tensor, m: int) -> torch.Tensor:
    """A: per block, the m experts with the largest history among those ever used."""
    protected = torch.zeros_like(history, dtype=torch.bool)
    if m == 0:
        return protected
    top = history.topk(min(m, history.shape[-1]), dim=-1).indices
    protected.scatter_(-1, top, True)
    return protected & (history > 0)


def routing_entropy(weights: torch.Tensor) -> torch.Tensor:
    """H(w) = -sum_k w_k log w_k per sample, for weights (B, k)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(dim=-1)
