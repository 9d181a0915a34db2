"""CODA-Prompt (Smith et al., "CODA-Prompt: COntinual Decomposed Attention-based Prompting for
Rehearsal-Free Continual Learning", CVPR 2023).

In each prompted block, task t adds m = ``components_per_task`` prompt components P_m (L_p x d)
with keys K_m and attention vectors A_m (d). For the frozen query q(x):
alpha_m = cos(q * A_m, K_m) and the prompt is p = sum_m alpha_m P_m over every component of the
seen tasks, used as prefix (its first L_p/2 tokens for the keys, the rest for the values, as the
public code splits it). No task is inferred: the weights alpha select. Components of earlier
tasks are frozen; a new task's components start orthonormal and orthogonal to the span of the
old ones (Gram-Schmidt, done here by QR, while the block's width allows), and the loss may add
the orthogonality penalty mu * sum_{B in K, A, P} mean((B B^T - I)^2) (``ortho_mu``; 0 in the
public scripts, whose comment says the per-task Gram-Schmidt makes it unnecessary).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.tuners.base import Batch, Tuner, TunerOutput
from promptcl.tuners.coda.config import CODAConfig
from promptcl.tuners.prompts import check_blocks, prefixes_from


def orthogonal_rows(old: torch.Tensor, count: int) -> torch.Tensor:
    """(count, n) random orthonormal rows, orthogonal to the span of ``old`` (k, n) when
    k + count <= n (else, on a backbone too narrow for that, orthonormal among themselves)."""
    new = torch.randn(count, old.shape[1], dtype=torch.float64)
    if old.shape[0] and old.shape[0] + count <= old.shape[1]:
        basis = torch.linalg.qr(old.double().T).Q  # (n, k)
        for _ in range(2):  # twice is enough in floating point
            new = new - (new @ basis) @ basis.T
    return torch.linalg.qr(new.T).Q.T.to(old.dtype)  # (count, n)


def ortho_penalty(rows: torch.Tensor) -> torch.Tensor:
    """mean((B B^T - I)^2) of B (k, n)."""
    eye = torch.eye(rows.shape[0], device=rows.device, dtype=rows.dtype)
    return (rows @ rows.T - eye).pow(2).mean()


class CODAPrompt(Tuner):
    name = "coda"
    description = "prompt components weighted by attention-key cosines (CODA-Prompt), no task id"
    config_class = CODAConfig
    needs_query = True

    def __init__(self, config: CODAConfig, backbone, num_classes: int) -> None:
        super().__init__(config, backbone, num_classes)
        n = backbone.num_blocks
        blocks = config.blocks if config.blocks is not None else range(math.ceil(5 * n / 12))
        self.blocks = check_blocks(blocks, backbone, "blocks")
        # task t -> (n_blocks, m, d) keys and attention vectors, (n_blocks, m, 2, L_p/2, d)
        self.keys, self.attention, self.components = (nn.ParameterList() for _ in range(3))
        self.head = nn.Linear(backbone.dim, num_classes)

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        n, m, d = len(self.blocks), self.config.components_per_task, self.backbone.dim
        shapes = {"keys": (d,), "attention": (d,), "components": (2, self.config.length // 2, d)}
        for name, shape in shapes.items():
            stored = getattr(self, name)
            for old in stored:
                old.requires_grad_(False)
            old = (
                self.stacked(name).flatten(2)
                if len(stored)
                else torch.zeros(n, 0, math.prod(shape))
            )
            new = torch.stack([orthogonal_rows(old[i].detach().cpu(), m) for i in range(n)])
            stored.append(nn.Parameter(new.view(n, m, *shape).to(self.head.weight.device)))

    def stacked(self, name: str) -> torch.Tensor:
        """Every seen task's tensors of ``name``, joined along the component axis."""
        return torch.cat(list(getattr(self, name)), dim=1)

    def weights(self, query: torch.Tensor) -> torch.Tensor:
        """(B, n_blocks, M) alpha = cos(q * A_m, K_m) of every seen component."""
        attended = query[:, None, None, :] * self.stacked("attention")[None]  # (B, n, M, d)
        keys = F.normalize(self.stacked("keys"), dim=-1)
        return (F.normalize(attended, dim=-1) * keys[None]).sum(dim=-1)

    def forward(self, batch: Batch, task: torch.Tensor | None = None) -> TunerOutput:
        alpha = self.weights(batch.query.to(self.head.weight.dtype))
        prompts = torch.einsum("bnm,nmpld->bnpld", alpha, self.stacked("components"))
        hidden, keep = self.backbone(batch.inputs, prefixes=prefixes_from(self.blocks, prompts))
        return TunerOutput(self.head(self.backbone.pool(hidden, keep)))

    def loss_terms(self, batch: Batch, out: TunerOutput, task: int) -> dict[str, torch.Tensor]:
        if self.config.ortho_mu == 0:
            return {}
        penalty = sum(
            ortho_penalty(self.stacked(name)[i].flatten(1))
            for name in ("keys", "attention", "components")
            for i in range(len(self.blocks))
        )
        return {"ortho": self.config.ortho_mu * penalty}

    def report(self) -> dict[str, int]:
        """Parameters each task adds: its components, keys and attention vectors."""
        per = (2 + self.config.length) * self.backbone.dim
        return {"params_per_task": len(self.blocks) * self.config.components_per_task * per}
