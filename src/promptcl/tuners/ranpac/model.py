"""RanPAC (McDonnell et al., "RanPAC: Random Projections and Pre-trained Models for Continual
Learning", NeurIPS 2023): a fixed random projection of the frozen feature with a ReLU,
h = relu(q W_rand) (W_rand (d, M) ~ N(0, 1), never trained), and a ridge classifier on h.

Accumulated task by task as SUMS (nothing is forgotten, all-reducible across processes):
``gram`` G = sum h h^T (M, M) and ``target_sum`` Q = sum h y^T (M, C), y one-hot (float64:
with float32 sums a chosen lambda of 1e-8 lies below the rounding of G and the solve breaks
down). Finalised after each task: W_o = (G + lambda I)^{-1} Q (logits = h W_o). lambda is
chosen per task as RanPAC's ``optimise_ridge_parameter``: ridge regression fitted on 80 % of
the task's training features, the grid value of least mean squared error on the other 20 %
(per class here; one eigendecomposition serves the whole grid, which is exact).
A finished run's checkpoint keeps W_rand and W_o only (``resume_only``): G and Q serve a
further task, and at M = 10000 G alone is 800 MB.
Phase 1 (``adapt``, off by default): a shared prefix (tuners/firstsession.py) and a head train
on the first task with the loop's cross-entropy, then freeze; the projection then reads the
prefixed pooled features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.taskid.discriminant import held_out_split
from promptcl.tuners.base import Batch, TaskData, TunerOutput
from promptcl.tuners.firstsession import FirstSessionTuner, first_session_blocks
from promptcl.tuners.ranpac.config import RanPACConfig


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


class RanPAC(FirstSessionTuner):
    name = "ranpac"
    description = "random projection + ReLU of frozen features, incremental ridge classifier"
    checkpoint_size = (
        "grows with M (tuner.dim): 8 M^2 bytes (the float64 Gram matrix, 800 MB at M = 10000) "
        "until the last task; a finished run keeps 4 M (d + C) bytes (projection, W_o)"
    )
    config_class = RanPACConfig
    needs_query = True
    resume_only = ("gram", "target_sum")  # a further task adds to these sums; W_o predicts
    trains = False  # phase 1 (adapt) trains on the first task: set per instance

    def __init__(self, config: RanPACConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        d = backbone.dim
        m = config.dim or d
        self.trains = config.adapt
        projection = torch.randn(d, config.dim) if config.dim else torch.zeros(0, 0)
        self.register_buffer("projection", projection)  # W_rand (d, M), fixed
        # float64: at the smallest lambdas float32 rounding of G outweighs lambda
        self.register_buffer("gram", torch.zeros(m, m, dtype=torch.float64))  # G, a sum
        self.register_buffer("target_sum", torch.zeros(m, num_classes, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(m, num_classes))  # W_o, finalised
        self.register_buffer("ridge", torch.zeros(0))  # lambda chosen after each task
        if config.adapt:  # the prefix of tuners/firstsession.py
            blocks = first_session_blocks("prefix", config.adapt_blocks, backbone, "adapt_blocks")
            self.add_first_session("prefix", blocks, config.adapt_length, config.prompt_init)
            self.adapt_head = nn.Linear(d, num_classes)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # one lambda per finished task: take the checkpoint's length (a resumed run)
        if prefix + "ridge" in state_dict:
            self.ridge = torch.zeros_like(state_dict[prefix + "ridge"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def feature(self, batch: Batch) -> torch.Tensor:
        """(B, d): the frozen query, or the pooled feature of the adapted backbone."""
        return self.adapted_feature(batch.inputs) if self.config.adapt else batch.query

    def project(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, M) h = relu(q W_rand), or q itself with dim = 0."""
        feature = feature.float()
        return F.relu(feature @ self.projection) if self.config.dim else feature

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        feature = self.feature(batch)
        if self.training:  # only phase 1 trains
            return TunerOutput(self.adapt_head(feature))
        return TunerOutput(self.project(feature) @ self.weight)

    @torch.no_grad()
    def end_task(self, task: int, classes: Sequence[int], data: TaskData) -> None:
        (features,) = data.map(lambda batch: (self.feature(batch),))
        h, labels = self.project(features), data.cat("labels")
        y = F.one_hot(labels, self.num_classes).to(h.dtype)
        ridge = self.choose_ridge(h, y, labels, seed=task)
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
        fit, held = held_out_split(labels, seed)
        if len(held) == 0:
            return self.config.ridges[0]
        h, y = h.double(), y.double()
        predictions = ridge_predictions(h[fit], y[fit], h[held], self.config.ridges)
        losses = [F.mse_loss(p, y[held]).item() for p in predictions]
        return self.config.ridges[losses.index(min(losses))]

    def report(self) -> dict[str, Any]:
        return {"ridge": self.ridge.tolist()}
