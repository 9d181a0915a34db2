"""Gradient ID: one-shot task inference by the gradient of the prediction entropy with respect
to task-superposition weights (Wortsman et al., "Supermasks in Superposition", NeurIPS 2020;
used by Soft-TransFormers, section 3.3, "Gradient ID").

Each seen task i gets a weight alpha_i = 1/T in a network whose task-specific parts are the
alpha-weighted sum of the tasks' parts; H = entropy of the predicted class distribution. The
task whose weight most decreases the entropy when raised, argmax_i(-dH/dalpha_i), is inferred.

Per sample: alpha_b in R^T for every sample b; samples do not interact in a
frozen eval-mode network, so one backward of sum_b H_b gives every dH_b/dalpha_b. The paper's
one-shot form shares one alpha over a batch of n samples (mean entropy), which names one task
per batch: honest only on mixed batches, a leak on task-pure ones, so it exists as the flagged
batch mode (one task per task-pure batch leaks the task identity, so it is flagged).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def entropy(logits: torch.Tensor, top: int | None = None) -> torch.Tensor:
    """(B, C) -> (B,) entropy of softmax(logits), over the ``top`` largest logits if given."""
    if top is not None:
        logits = logits.topk(min(top, logits.shape[1]), dim=1).values
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1)


def gradient_id(
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    num_tasks: int,
    *,
    top: int | None = None,
    shared: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B,) inferred tasks.

    logits_of(alpha): logits over the seen classes (B, C) of the network superposed with the
    mixing weights alpha (B, T). ``shared``: one alpha for the whole batch (the batch mode).
    Works under an outer ``torch.no_grad``.
    """
    rows = 1 if shared else batch_size
    alpha = torch.full((rows, num_tasks), 1.0 / num_tasks, device=device, requires_grad=True)
    with torch.enable_grad():
        logits = logits_of(alpha.expand(batch_size, num_tasks))
        (grad,) = torch.autograd.grad(entropy(logits, top).sum(), alpha)
    return (-grad).argmax(dim=1).expand(batch_size)
