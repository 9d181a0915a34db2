"""Per-task edits of frozen linear layers, held by a tuner (Soft-TransFormers and its
baselines): the backbone's layers a tuner edits, the bank of each task's edits, and the
per-sample choice among them that an edited linear applies (backbones/masked.py).

A per-sample choice ``TaskEdits(edits, task)`` is

- ``task`` (B,) integers: sample b uses ``edits[task[b]]``. The batch is grouped by task and
  each group runs one ``F.linear`` with its task's edited weight; outputs are put back in batch
  order. Cost: the matmul FLOPs of one unedited call, plus one edited weight per distinct task
  in the batch, plus one host-device sync to read the groups.
- ``task`` (B, T) floats alpha: y_b = sum_i alpha_{b,i} edit_i(x_b), the superposition that
  Gradient ID differentiates (linear in alpha). Weight edits form per-sample weights
  W_b = sum_i alpha_{b,i} W_i (one (B, out, in) temporary) and run one batched matmul, so the
  cost grows with T only in that weighted sum, not in T full layer calls; output edits run the
  frozen layer once and mix the T edited outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.base import Backbone
from promptcl.backbones.masked import (
    BlockEdits,
    Edit,
    OutputEdit,
    WeightEdit,
    apply_edit,
    edited_weight,
)


class TaskEdits(NamedTuple):
    """A per-sample choice among per-task edits of one layer."""

    edits: Sequence[Edit]  # task i -> its edit
    task: torch.Tensor  # (B,) task index per sample, or (B, T) mixing weights over the T edits

    def __call__(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self.task.shape[0] != x.shape[0]:
            raise ValueError(f"{self.task.shape[0]} task entries for a batch of {x.shape[0]}")
        if self.task.is_floating_point():
            return superpose(layer, x, self)
        return per_sample(layer, x, self)


def per_sample(layer: nn.Linear, x: torch.Tensor, choice: TaskEdits) -> torch.Tensor:
    """Sample b through edits[task[b]]: one call per distinct task, back in batch order."""
    order = torch.argsort(choice.task, stable=True)
    tasks, counts = torch.unique_consecutive(choice.task[order], return_counts=True)
    if len(tasks) == 1:
        return apply_edit(layer, x, choice.edits[int(tasks[0])])
    groups = x[order].split(counts.tolist())
    out = torch.cat(
        [
            apply_edit(layer, group, choice.edits[t])
            for group, t in zip(groups, tasks.tolist(), strict=True)
        ]
    )
    return out[torch.argsort(order)]  # inverse permutation


def superpose(layer: nn.Linear, x: torch.Tensor, choice: TaskEdits) -> torch.Tensor:
    """sum_i alpha_{b,i} edit_i(x_b), alpha = choice.task (B, T) (Gradient ID's superposition;
    the bias counts once per unit of total weight, as in sum_i alpha_i (x W_i^T + b))."""
    alpha = choice.task.to(x.dtype)
    if alpha.shape[1] != len(choice.edits):
        raise ValueError(f"{alpha.shape[1]} mixing weights for {len(choice.edits)} edits")
    if all(isinstance(e, OutputEdit) for e in choice.edits):
        y = layer(x)
        outputs = torch.stack([e.output(y) for e in choice.edits], dim=1)  # (B, T, ..., out)
        return torch.einsum("bt,bt...->b...", alpha, outputs)
    if any(isinstance(e, OutputEdit) for e in choice.edits):
        raise TypeError("cannot superpose weight edits and output edits in one layer")
    stacked = torch.stack([edited_weight(layer.weight, e) for e in choice.edits])  # (T, out, in)
    return Superposed.apply(x, alpha, stacked, layer.bias)


class Superposed(torch.autograd.Function):
    """y_b = x_b (sum_i alpha_{b,i} W_i)^T + (sum_i alpha_{b,i}) b, for x (B, ..., in),
    alpha (B, T), W (T, out, in).

    Gradient ID evaluates it at alpha = 1/T for every sample, where all samples share one
    weight: forward is then one F.linear. Backward forms G_b = g_b^T x_b (B, out, in) once and
    gets dL/dalpha_{b,i} = <G_b, W_i> from one matrix product, instead of T layer calls.
    """

    @staticmethod
    def forward(ctx, x, alpha, stacked, bias):
        B, T = alpha.shape
        shared = bool((alpha == alpha[:1]).all())
        flat = stacked.reshape(T, -1)
        if shared:  # one weight for the batch
            weight = (alpha[0] @ flat).view(stacked.shape[1:])
            y = F.linear(x, weight)
        else:
            weights = (alpha @ flat).view(B, *stacked.shape[1:])  # (B, out, in)
            y = torch.bmm(x.reshape(B, -1, x.shape[-1]), weights.transpose(1, 2))
            y = y.reshape(*x.shape[:-1], -1)
            weight = weights
        ctx.save_for_backward(x, alpha, stacked, bias, weight)
        ctx.shared = shared
        if bias is None:
            return y
        return y + alpha.sum(dim=1).view(B, *([1] * (y.dim() - 1))) * bias

    @staticmethod
    def backward(ctx, grad):
        x, alpha, stacked, bias, weight = ctx.saved_tensors
        B, T = alpha.shape
        g = grad.reshape(B, -1, grad.shape[-1])  # (B, N, out)
        xs = x.reshape(B, -1, x.shape[-1])  # (B, N, in)
        grad_x = grad_alpha = grad_stacked = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight if ctx.shared else torch.bmm(g, weight).reshape(x.shape)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            outer = torch.bmm(g.transpose(1, 2), xs).reshape(B, -1)  # G_b, (B, out * in)
            if ctx.needs_input_grad[1]:
                grad_alpha = outer @ stacked.reshape(T, -1).T  # (B, T)
                if bias is not None:
                    grad_alpha = grad_alpha + (g.sum(dim=1) @ bias).unsqueeze(1)
            if ctx.needs_input_grad[2]:
                grad_stacked = (alpha.T @ outer).view(stacked.shape)
        if bias is not None and ctx.needs_input_grad[3]:
            grad_bias = (alpha.sum(dim=1, keepdim=True) * g.sum(dim=1)).sum(dim=0)
        return grad_x, grad_alpha, grad_stacked, grad_bias


class EditedLayer(NamedTuple):
    """A frozen linear that a tuner edits: its block, its short name, the layer."""

    block: int
    name: str
    layer: nn.Linear


def edited_layers(
    backbone: Backbone,
    blocks: Sequence[int],
    mlp: bool = False,
    names: Collection[str] | None = None,
) -> dict[str, EditedLayer]:
    """``"b{block}_{name}"`` -> the attention projections (and MLP linears) of ``blocks``;
    ``names`` keeps only those short names (``Backbone.linear_paths``)."""
    layers = {}
    for index in blocks:
        for name, path in backbone.linear_paths(index, mlp).items():
            if names is None or name in names:
                layer = backbone.get_submodule(path)
                if not isinstance(layer, nn.Linear):
                    raise TypeError(f"{path} is a {type(layer).__name__}, not an nn.Linear")
                layers[f"b{index}_{name}"] = EditedLayer(index, name, layer)
    return layers


class TaskEditBank(nn.ModuleDict):
    """Per-task edits of the edited layers: ``bank[layer_name][task]``, an ``nn.ModuleList``
    per layer grown by one edit per seen task.

    The frozen layers themselves are kept in a plain dict, not as submodules, so their weights
    never show up among the tuner's parameters or in its saved state.
    """

    def __init__(self, layers: Mapping[str, EditedLayer]) -> None:
        super().__init__({name: nn.ModuleList() for name in layers})
        self.layers = dict(layers)

    def add_task(self, make_edit: Callable[[nn.Linear], WeightEdit | OutputEdit]) -> None:
        """Append the new task's edits (``make_edit`` builds one for a frozen layer) and freeze
        every older edit. The edits are fp32 even over a bf16-stored layer."""
        for name, (_, _, layer) in self.layers.items():
            for old in self[name]:
                old.requires_grad_(False)
            self[name].append(make_edit(layer).to(layer.weight.device))

    def choice(self, task: torch.Tensor | int) -> dict[int, BlockEdits]:
        """Block -> short layer name -> edit, for ``Backbone.forward(edits=)``: every layer's
        edit of task ``task`` (int), or per sample: (B,) indices or (B, T) mixing weights."""
        if isinstance(task, torch.Tensor) and not task.is_floating_point():
            present = task.unique()
            if len(present) == 1:  # e.g. training: one edited weight per layer, no regrouping
                task = int(present[0])
        edits: dict[int, dict] = {}
        for name, (block, short, _) in self.layers.items():
            spec = self[name][task] if isinstance(task, int) else TaskEdits(list(self[name]), task)
            edits.setdefault(block, {})[short] = spec
        return edits

    @property
    def num_tasks(self) -> int:
        """Tasks that have edits: the seen tasks."""
        return len(next(iter(self.values()))) if self else 0

    def params_per_task(self) -> int:
        """Parameters of one task's edits (of the newest task; every task has the same)."""
        return sum(
            p.numel() for edits in self.values() if len(edits) for p in edits[-1].parameters()
        )


__all__ = [
    "EditedLayer",
    "Superposed",
    "TaskEditBank",
    "TaskEdits",
    "edited_layers",
    "per_sample",
    "superpose",
]
