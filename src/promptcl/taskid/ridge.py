"""The random-feature ridge classifier of RanPAC (McDonnell et al., "RanPAC: Random Projections
and Pre-trained Models for Continual Learning", NeurIPS 2023), one implementation for the
``ranpac`` method (tuners/ranpac), the TII classifier ``tuner.tii.classifier=ranpac``
(taskid/tii.py) and the HiDe family's ``tuner.head=ranpac`` (tuners/stages.py).

A fixed random projection with a ReLU, h = relu(x W_rand) (W_rand (d, M) ~ N(0, 1), never
trained; M = 0: h = x), and a ridge classifier on h, accumulated task by task as SUMS (nothing is
forgotten, all-reducible across processes): ``gram`` G = sum h h^T (M, M) and ``target_sum``
Q = sum h y^T (M, C), y one-hot (float64: with float32 sums a chosen lambda of 1e-8 lies below
the rounding of G and the solve breaks down). Finalised after each task: W_o = (G + lambda I)^{-1}
Q (scores = h W_o). lambda is chosen per task as RanPAC's ``optimise_ridge_parameter``: ridge
regression fitted on 80 % of the task's training features, the grid value of least mean squared
error on the other 20 % (per class here; one eigendecomposition serves the whole grid, which is
exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.taskid.discriminant import held_out_split

PROJECTION_DIM = 10000  # RanPAC's M
RIDGES = tuple(10.0**e for e in range(-8, 9))  # RanPAC's grid of lambda, 1e-8 ... 1e8


def ridge_predictions(
    train: torch.Tensor, targets: torch.Tensor, test: torch.Tensor, ridges: Sequence[float]
) -> list[torch.Tensor]:
    """Predictions on ``test`` of ridge regression fitted on (train (n, m), targets (n, C)),
    one (n_test, C) per lambda: X V diag(1/(e + lambda)) V^T H^T Y from the eigenvectors of
    H^T H, or, when n < m, X H^T U diag(1/(e + lambda)) U^T Y from those of H H^T."""
    if train.shape[1] <= train.shape[0]:
        e, V = torch.linalg.eigh(train.T @ train)
        left, right = test @ V, V.T @ (train.T @ targets)
    else:
        e, U = torch.linalg.eigh(train @ train.T)
        left, right = test @ (train.T @ U), U.T @ targets
    return [left @ (right / (e + r).unsqueeze(1)) for r in ridges]


def side_generator(stream: int) -> torch.Generator:
    """A generator seeded from the run's seed (``torch.initial_seed()``) and ``stream``: a
    projection drawn from it leaves the global random stream, hence the initialisation of the
    prompts and heads built after it, as it is without the projection."""
    return torch.Generator().manual_seed(torch.initial_seed() + stream)


class RandomFeatureRidge(nn.Module):
    """h = relu(x W_rand) and a ridge classifier over all C classes, from sums (module
    docstring). ``fit_task`` adds one task's samples; classes never fitted score 0 (mask them).
    ``generator``: where W_rand is drawn from (None: the global random stream)."""

    # only a further task reads the sums (Tuner.resume_only): W_rand and W_o predict
    resume_only_buffers: ClassVar[tuple[str, ...]] = ("gram", "target_sum")

    def __init__(
        self,
        dim: int,
        num_classes: int,
        projection_dim: int = PROJECTION_DIM,
        ridges: Sequence[float] = RIDGES,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.ridges = num_classes, tuple(ridges)
        m = projection_dim or dim
        projection = (
            torch.randn(dim, projection_dim, generator=generator)
            if projection_dim
            else torch.zeros(0, 0)
        )
        self.register_buffer("projection", projection)  # W_rand (d, M), fixed
        # float64: at the smallest lambdas float32 rounding of G outweighs lambda
        self.register_buffer("gram", torch.zeros(m, m, dtype=torch.float64))  # G, a sum
        self.register_buffer("target_sum", torch.zeros(m, num_classes, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(m, num_classes))  # W_o, finalised
        self.register_buffer("ridge", torch.zeros(0))  # lambda chosen after each task

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # one lambda per finished task: take the checkpoint's length (a resumed run)
        if prefix + "ridge" in state_dict:
            self.ridge = torch.zeros_like(state_dict[prefix + "ridge"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def project(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, M) h = relu(x W_rand), or x itself without a projection."""
        feature = feature.float()
        return F.relu(feature @ self.projection) if self.projection.numel() else feature

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C) scores h W_o."""
        return self.project(feature) @ self.weight

    @torch.no_grad()
    def fit_task(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        """Add one task's samples (features (N, d), labels (N,)): lambda chosen on a held-out
        share of them (split seeded by ``seed``), then G and Q grow and W_o is solved again."""
        h = self.project(features)
        y = F.one_hot(labels.to(h.device), self.num_classes).to(h.dtype)
        ridge = self.choose_ridge(h, y, labels, seed)
        self.ridge = torch.cat([self.ridge, self.ridge.new_tensor([ridge])])
        h, y = h.double(), y.double()
        self.gram += h.T @ h
        self.target_sum += h.T @ y
        self.finalise(ridge)

    def finalise(self, ridge: float) -> None:
        """W_o = (G + lambda I)^{-1} Q in float64: by Cholesky, or by LU where rounding leaves
        G + lambda I indefinite at the smallest lambdas (RanPAC's code always uses LU)."""
        gram = self.gram.clone()
        gram.diagonal().add_(ridge)
        factor, info = torch.linalg.cholesky_ex(gram)
        if info == 0:
            solved = torch.cholesky_solve(self.target_sum, factor)
        else:
            solved = torch.linalg.solve(gram, self.target_sum)
        self.weight = solved.to(self.weight.dtype)

    def choose_ridge(
        self, h: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, seed: int
    ) -> float:
        """The lambda of least held-out mean squared error (RanPAC's 80/20 rule)."""
        fit, held = held_out_split(labels.to(h.device), seed)
        if len(held) == 0:
            return self.ridges[0]
        h, y = h.double(), y.double()
        predictions = ridge_predictions(h[fit], y[fit], h[held], self.ridges)
        losses = [F.mse_loss(p, y[held]).item() for p in predictions]
        return self.ridges[losses.index(min(losses))]

    def report(self) -> dict[str, Any]:
        return {"ridge": self.ridge.tolist()}
