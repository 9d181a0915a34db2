"""InfLoRA's subspace arithmetic, per block, on C = the mean of x x^T over a task's input tokens
x (d) of the block's key/value projections (Liang and Li, CVPR 2024, eq. 9-11; the authors'
methods/inflora.py: ``_train`` and ``update_DualGPM``).

The protected subspace of the old tasks is kept as an orthonormal basis M (d, k). The authors'
code stores M until k > d/2 and from then on its orthogonal complement F ("retain"), projecting
with F F^T instead of I - M M^T; the two are the same projection (up to rounding) and grow by
the same rule, so only M is kept here.
"""

from __future__ import annotations

import math

import torch


def design_down_projection(C: torch.Tensor, basis: torch.Tensor, rank: int) -> torch.Tensor:
    """A_t (rank, d) = U[:, :rank]^T / sqrt(3), U the left singular vectors of (I - M M^T) C:
    the directions the new task's inputs take outside the old tasks' subspace (eq. 10-11; the
    1/sqrt(3) is the code's). At the first task M is empty and C is decomposed as it is."""
    residual = C - basis @ (basis.T @ C)
    U = torch.linalg.svd(residual, full_matrices=False).U
    return U[:, :rank].T / math.sqrt(3)


def grow_basis(basis: torch.Tensor, C: torch.Tensor, threshold: float) -> torch.Tensor:
    """DualGPM's update of M (d, k) -> (d, k') with a task's C at its end (GPM, Saha et al. 2021,
    eq. 5, 8, 9, as the code computes it).

    First task: M = the first max(r, 1) left singular vectors of C, r = how many of the
    cumulative energy shares sigma_i^2 / sum sigma^2 stay below ``threshold``. Later tasks: the
    residual C - M M^T C is decomposed; starting from the energy share already inside M,
    (||C||^2 - ||residual||^2) / ||C||^2, its singular vectors are appended one by one (each
    adding its sigma_i^2 / ||C||^2) while the share is below ``threshold``; at most d columns."""
    d = C.shape[0]
    if basis.shape[1] == 0:
        U, S, _ = torch.linalg.svd(C, full_matrices=False)
        share = (S**2).cumsum(0) / (S**2).sum()
        r = int((share < threshold).sum())
        return U[:, : max(r, 1)]
    total = (torch.linalg.svdvals(C) ** 2).sum()
    residual = C - basis @ (basis.T @ C)
    U, S, _ = torch.linalg.svd(residual, full_matrices=False)
    accumulated = float((total - (S**2).sum()) / total)
    r = 0
    for energy in (S**2 / total).tolist():
        if accumulated >= threshold:
            break
        accumulated += energy
        r += 1
    return torch.cat([basis, U[:, :r]], dim=1)[:, :d]


__all__ = ["design_down_projection", "grow_basis"]
