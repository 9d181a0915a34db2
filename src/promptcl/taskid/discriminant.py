"""Second-order classifiers on frozen features: class means with one shared covariance (linear
discriminant analysis), and class means alone (NCM), both from running sums.

Statistics are kept as SUMS, so that they can be accumulated task by task (nothing is
forgotten) and all-reduced across processes before they are finalised:

- ``feature_sum`` (C, d): sum of x over the samples of class c;
- ``count`` (C,): samples of class c;
- ``outer_sum`` (d, d): sum of x x^T over every sample seen.

Finalising (``ClassSums.within_covariance``): mu_c = sum_c / n_c, and the pooled within-class
covariance Sigma = (sum x x^T - sum_c n_c mu_c mu_c^T) / (N - |C_seen|). With shrinkage gamma,
Sigma_gamma = (1 - gamma) Sigma + gamma (tr(Sigma) / d) I (Ledoit-Wolf's target). The linear
discriminant of class c is g_c(x) = mu_c^T Sigma_gamma^{-1} x - 1/2 mu_c^T Sigma_gamma^{-1} mu_c
(equal priors): the Mahalanobis score -1/2 (x - mu_c)^T Sigma_gamma^{-1} (x - mu_c) without its
class-independent term -1/2 x^T Sigma_gamma^{-1} x, hence the same ranking of classes.
gamma is chosen per task on held-out training data (``held_out_split``, ``choose_shrinkage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.taskid.gaussians import as_index

SHRINKAGES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)  # the grid gamma is chosen from
HELD_OUT = 0.2  # share of each class's training samples held out to choose a hyper-parameter


def held_out_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, held) index tensors: per class, floor(HELD_OUT * n_c) random samples held out
    (a class of one sample is only fitted). Seeded, so a run and a replay split alike."""
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1).cpu()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(HELD_OUT * len(idx))
        held.append(idx[:k])
        fit.append(idx[k:])
    return torch.cat(fit).to(labels.device), torch.cat(held).to(labels.device)


class ClassSums(nn.Module):
    """Running sums of features per class (see the module docstring), in ``dtype``."""

    def __init__(self, num_classes: int, dim: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.register_buffer("feature_sum", torch.zeros(num_classes, dim, dtype=dtype))
        self.register_buffer("count", torch.zeros(num_classes, dtype=dtype))
        self.register_buffer("outer_sum", torch.zeros(dim, dim, dtype=dtype))

    @torch.no_grad()
    def accumulate(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add samples: features (N, d), labels (N,)."""
        x = features.detach().to(self.feature_sum.device, self.feature_sum.dtype)
        labels = labels.to(x.device)
        self.feature_sum.index_add_(0, labels, x)
        self.count.index_add_(0, labels, torch.ones_like(labels, dtype=x.dtype))
        self.outer_sum += x.T @ x

    def plus(self, features: torch.Tensor, labels: torch.Tensor) -> ClassSums:
        """A copy with ``features`` added (the sums themselves are left alone)."""
        other = ClassSums(*self.feature_sum.shape, dtype=self.feature_sum.dtype)
        other = other.to(self.feature_sum.device)
        other.load_state_dict(self.state_dict())
        other.accumulate(features, labels)
        return other

    def means(self, classes: torch.Tensor) -> torch.Tensor:
        """(k, d) class means of ``classes``."""
        return self.feature_sum[classes] / self.count[classes].clamp_min(1).unsqueeze(1)

    def within_covariance(self, classes: torch.Tensor) -> torch.Tensor:
        """(d, d) pooled within-class covariance of the samples of ``classes``; the sums must
        hold the samples of these classes only."""
        sums, counts = self.feature_sum[classes], self.count[classes].clamp_min(1)
        scatter = self.outer_sum - (sums.T / counts) @ sums
        return scatter / max(self.count[classes].sum().item() - len(classes), 1.0)


def shrunk(cov: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - gamma) Sigma + gamma (tr(Sigma) / d) I."""
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    scale = cov.trace() / d if cov.trace() > 0 else 1.0  # no spread yet: the identity
    return (1 - gamma) * cov + gamma * scale * eye


def lda_parameters(
    sums: ClassSums, classes: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (k, d), bias (k,)) of the linear discriminants of ``classes``, float64:
    w_c = Sigma_gamma^{-1} mu_c, b_c = -1/2 mu_c^T Sigma_gamma^{-1} mu_c."""
    mu = sums.means(classes)  # (k, d)
    factor = torch.linalg.cholesky(shrunk(sums.within_covariance(classes), gamma))
    weight = torch.cholesky_solve(mu.T, factor).T  # (k, d)
    return weight, -0.5 * (weight * mu).sum(dim=1)


class DiscriminantClassifier(nn.Module):
    """Scores over all C classes from class sums: ``lda`` (shared covariance, shrinkage chosen
    per task on held-out training data) or ``ncm`` (cosine to the class means). ``weight`` and
    ``bias`` are finalised from ``sums`` after each task; only ``sums`` are accumulated."""

    def __init__(
        self, dim: int, num_classes: int, kind: str, shrinkages: Sequence[float] = SHRINKAGES
    ) -> None:
        super().__init__()
        if kind not in ("lda", "ncm"):
            raise ValueError(f"kind must be lda or ncm, not {kind!r}")
        self.kind, self.shrinkages = kind, tuple(shrinkages)
        self.sums = ClassSums(num_classes, dim)
        self.register_buffer("weight", torch.zeros(num_classes, dim))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("shrinkage", torch.zeros(0))  # gamma chosen after each task (lda)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # one gamma per finished task: take the checkpoint's length (a resumed run)
        if prefix + "shrinkage" in state_dict:
            self.shrinkage = torch.zeros_like(state_dict[prefix + "shrinkage"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """(B, C) scores; classes never fitted score 0 (mask them)."""
        if self.kind == "ncm":
            query = F.normalize(query, dim=-1)
        return query.to(self.weight.dtype) @ self.weight.T + self.bias

    @torch.no_grad()
    def fit_task(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        seen_classes: Sequence[int] | torch.Tensor,
        seed: int = 0,
    ) -> None:
        """Add one task's samples (features (N, d), labels (N,)) and finalise over
        ``seen_classes``; for lda, gamma is first chosen on a held-out share of them."""
        seen = as_index(seen_classes, self.weight.device)
        if self.kind == "lda":
            gamma = self.choose_shrinkage(features, labels, seen, seed)
            self.shrinkage = torch.cat([self.shrinkage, self.shrinkage.new_tensor([gamma])])
        self.sums.accumulate(features, labels)
        self.finalise(seen)

    def finalise(self, seen: torch.Tensor, sums: ClassSums | None = None) -> None:
        sums = sums if sums is not None else self.sums
        if self.kind == "ncm":
            self.weight[seen] = F.normalize(sums.means(seen), dim=-1).to(self.weight.dtype)
            return
        gamma = self.shrinkage[-1].item()
        weight, bias = lda_parameters(sums, seen, gamma)
        self.weight[seen], self.bias[seen] = weight.to(self.weight.dtype), bias.to(self.bias.dtype)

    def choose_shrinkage(
        self, features: torch.Tensor, labels: torch.Tensor, seen: torch.Tensor, seed: int
    ) -> float:
        """The gamma of the grid whose discriminants, fitted on the old tasks and the rest of
        the task's samples, give the held-out share the least cross-entropy of the posterior
        softmax_c g_c(x) over the seen classes (a continuous criterion: accuracy on a few
        held-out samples ties across most of the grid)."""
        fit, held = held_out_split(labels, seed)
        if len(held) == 0 or len(self.shrinkages) == 1:
            return self.shrinkages[0]
        sums = self.sums.plus(features[fit], labels[fit])
        x, y = features[held].to(torch.float64), labels[held].to(seen.device)
        target = (y[:, None] == seen[None]).double().argmax(dim=1)  # position among the seen
        losses = []
        for gamma in self.shrinkages:
            weight, bias = lda_parameters(sums, seen, gamma)
            losses.append(F.cross_entropy(x @ weight.T + bias, target).item())
        return self.shrinkages[losses.index(min(losses))]

    def report(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage.tolist()} if self.kind == "lda" else {}
