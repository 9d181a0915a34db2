"""Gradient ID: one-shot task inference by the gradient of the prediction entropy with respect
to task-superposition weights (Wortsman et al., "Supermasks in Superposition", NeurIPS 2020;
used by Kang and Yoo, "Soft-TransFormers for Continual Learning", section 3.3, "Gradient ID").

Each seen task i gets a weight alpha_i = 1/T in a network whose task-specific parts are the
alpha-weighted sum of the tasks' parts; H = entropy of the predicted class distribution. The
task whose weight most decreases the entropy when raised, argmax_i(-dH/dalpha_i), is inferred.

Per sample: alpha_b in R^T for every sample b; samples do not interact in a frozen eval-mode
network, so one backward of sum_b H_b gives every dH_b/dalpha_b. The paper's one-shot form
shares one alpha over a batch of n samples (mean entropy), which names one task per batch:
honest only on mixed batches, a leak on task-pure ones, so it exists as a flagged batch mode.

Which logits enter H (``entropy_logits``): ``seen``, every seen class; ``top``, the top
ceil(C_seen / T) of them per sample; ``reference``, what Soft-TF's public code takes
(engine.py, ``oneshot_task_inference``): the top C // T logits of ALL C classes of the stream,
seen or not, of the first 7 samples of the batch, with one alpha for the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

ENTROPY_SETS = ("seen", "top", "reference")
REFERENCE_ROWS = 7  # Soft-TF's oneshot_task_inference: ``shot = 7``, model(batch[:shot])


@dataclass(frozen=True)
class LogitSet:
    """The logits H reads: per sample the ``top`` largest (all if None), of the first ``rows``
    samples of the batch (all if None; batch mode only)."""

    top: int | None = None
    rows: int | None = None


def entropy_set_name(value: str | bool) -> str:
    """A checked ``entropy_top`` value; the former booleans read as ``top`` (true) and ``seen``."""
    value = {"true": "top", "false": "seen"}.get(str(value).lower(), value)
    if value not in ENTROPY_SETS:
        raise ValueError(f"entropy_top={value!r}; choose one of: {', '.join(ENTROPY_SETS)}")
    return value


def entropy_logits(
    mode: str, seen: torch.Tensor, num_classes: int, num_tasks: int
) -> tuple[torch.Tensor, LogitSet]:
    """The class columns Gradient ID's entropy reads (the seen classes ``seen``, or all
    ``num_classes`` of the stream for ``reference``) and which of their logits it keeps."""
    if mode == "seen":
        return seen, LogitSet()
    if mode == "top":
        return seen, LogitSet(top=-(-len(seen) // num_tasks))
    if mode == "reference":
        columns = torch.arange(num_classes, device=seen.device)
        return columns, LogitSet(top=num_classes // num_tasks, rows=REFERENCE_ROWS)
    raise ValueError(f"entropy_top={mode!r}; choose one of: {', '.join(ENTROPY_SETS)}")


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
    top: int | LogitSet | None = None,
    shared: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B,) inferred tasks.

    logits_of(alpha): logits (B, C) of the network superposed with the mixing weights alpha
    (B, T). ``top``: the number of largest logits per sample H reads, or a LogitSet.
    ``shared``: one alpha for the whole batch (the batch mode). Works under an outer
    ``torch.no_grad``.
    """
    kept = top if isinstance(top, LogitSet) else LogitSet(top)
    if kept.rows is not None and not shared:
        raise ValueError("an entropy over the first rows of a batch needs one alpha per batch")
    rows = 1 if shared else batch_size
    alpha = torch.full((rows, num_tasks), 1.0 / num_tasks, device=device, requires_grad=True)
    with torch.enable_grad():
        # every row still runs (eval mode: the first rows' logits are the same either way)
        logits = logits_of(alpha.expand(batch_size, num_tasks))[: kept.rows]
        (grad,) = torch.autograd.grad(entropy(logits, kept.top).sum(), alpha)
    return (-grad).argmax(dim=1).expand(batch_size)
