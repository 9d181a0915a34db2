"""Hash's history-aware pieces as pluggable functions ("Is Parameter Isolation Better for
Prompt-Based Continual Learning?", CVPR 2026: HDR and HGM).

H (n_blocks, K): training samples routed to each expert, summed over the tasks so far.
A (n_blocks, K) bool: the protected experts at the start of the current task; the paper's rule
is the M most used ("top"); "share" protects every expert whose share of H passes a threshold.

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
# A(H, M, share) -> (n_blocks, K) bool: the experts protected while the next task trains
PROTECTIONS: Registry[Callable[[torch.Tensor, int, float], torch.Tensor]] = Registry(
    "protection rule"
)


def penalty(name: str, description: str = "") -> Callable[[HistoryFn], HistoryFn]:
    return PENALTIES.register(name, description)


def modulation(name: str, description: str = "") -> Callable[[HistoryFn], HistoryFn]:
    return MODULATIONS.register(name, description)


def protection(name: str, description: str = "") -> Callable:
    return PROTECTIONS.register(name, description)


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


@protection("top")
def most_used(history: torch.Tensor, m: int, share: float = 0.0) -> torch.Tensor:
    """The paper's A: per block, the m experts with the largest history among those ever used
    (``share`` is not read)."""
    protected = torch.zeros_like(history, dtype=torch.bool)
    if m == 0:
        return protected
    top = history.topk(min(m, history.shape[-1]), dim=-1).indices
    protected.scatter_(-1, top, True)
    return protected & (history > 0)


@protection("share")
def shared_enough(history: torch.Tensor, m: int, share: float) -> torch.Tensor:
    """A = every expert whose share H_e / sum_e H_e of its block's routed samples is at least
    ``share`` (> 0; an expert never routed to is never protected; ``m`` is not read). phi and
    psi depend on H only through A, as in the paper's piecewise-constant defaults."""
    total = history.sum(dim=-1, keepdim=True)
    return (history > 0) & (history >= share * total)


def routing_entropy(weights: torch.Tensor) -> torch.Tensor:
    """H(w) = -sum_k w_k log w_k per sample, for weights (B, k)."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(dim=-1)


def usage_share(usage: torch.Tensor) -> torch.Tensor:
    """(T, n_blocks, K) routed samples -> each task's share of its routed mass per expert."""
    return usage / usage.sum(dim=-1, keepdim=True).clamp_min(1)


def protected_share(usage: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """(T, T, n_blocks): [j, t, l] = the share of task j's routed mass at block l that lies on
    experts of A_{t,l}, i.e. that is protected while task t trains (meaningful for t > j)."""
    return torch.einsum("jle,tle->jtl", usage_share(usage), protected.to(usage.dtype))


def routed_drift(usage: torch.Tensor, drift: torch.Tensor) -> torch.Tensor:
    """(T, T, n_blocks): [j, t, l] = sum_e share_{j,l,e} ||p_{l,e} moved during task t||, how far
    task j's experts (weighted by its routing) moved while task t trained."""
    return torch.einsum("jle,tle->jtl", usage_share(usage), drift)


def later_tasks(matrix: torch.Tensor) -> list[list[float | None]]:
    """(T, T) -> rows j with None where t <= j (only later tasks can disturb task j)."""
    T = matrix.shape[0]
    return [[matrix[j, t].item() if t > j else None for t in range(T)] for j in range(T)]
