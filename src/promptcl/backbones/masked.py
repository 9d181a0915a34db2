"""MaskedLinear: a frozen linear layer run with a per-task edit, chosen per call.

Soft-TransFormers (Kang et al., eq. 3 and 6): a target layer of task t computes
y = x (W * M_t)^T + b, with W and b the frozen pretrained weight and bias and M_t a real-valued
mask of W's shape owned by task t. The bias is not masked (DESIGN section 4). The baselines
Soft-TF is compared with change the same layers in other ways, so a layer's per-task change is
an *edit*, of one of two kinds:

- ``WeightEdit``: W -> edit.weight(W), then y = x W'^T + b (Soft-TF's W * M, WSN's binary
  mask, LoRA's W + s B A);
- ``OutputEdit``: y -> edit.output(y) after the frozen layer (a bottleneck adapter).

``MaskedLinear`` keeps the frozen ``nn.Linear`` as ``base_layer`` and holds no tensors of its
own: the edits belong to the tuner (``TaskEditBank``: one ``nn.ModuleList`` per layer, grown by
one edit per seen task). Edited weights are formed inside ``forward`` as temporaries; W is never
copied into a buffer and nothing is written onto the module.

How edits reach the layers. The layers are called by code that is not ours to change:
PrefixAttention calls ``base.qkv`` / ``base.query`` by attribute, and the MLPs and BERT's output
projections are called inside timm's ``Mlp`` and transformers' ``BertIntermediate`` /
``BertOutput`` / ``BertSelfOutput``. An extra forward argument cannot pass through them without
copying their forward methods. So a tuner names the edits for the duration of one of its
forward calls with the context manager ``use_masks({layer: edit})`` (STYLE convention 3's
"per-call context manager"); it sets a ``contextvars.ContextVar`` that each ``MaskedLinear``
reads. A layer that the active context does not name runs as its base layer, so installing the
wrappers changes no output, and another tuner sharing the backbone is unaffected. The context is
per thread and per asyncio task. Autograd needs nothing from it after forward, but code that
re-runs forward outside the ``with`` block does not see the edits: activation checkpointing
(which recomputes in backward) would need them passed explicitly, as
``MaskedLinear.forward(x, edit)`` allows; torch.compile has not been tried with it.

A layer's edit for one call is a mask tensor (out, in) (shorthand for W * mask), one edit for
the whole batch, or a ``TaskEdits`` choice among per-task edits per sample:

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

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.base import Backbone


class WeightEdit(nn.Module):
    """A per-task change of a frozen layer's weight: the layer computes x weight(W)^T + b."""

    def weight(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OutputEdit(nn.Module):
    """A per-task function of a frozen layer's output: the layer computes output(x W^T + b)."""

    def output(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


Edit = torch.Tensor | WeightEdit | OutputEdit  # a tensor is a mask: W * mask


class TaskEdits(NamedTuple):
    """A per-sample choice among per-task edits of one layer."""

    edits: Sequence[Edit]  # task i -> its edit
    task: torch.Tensor  # (B,) task index per sample, or (B, T) mixing weights over the T edits


MaskSpec = Edit | TaskEdits

_ACTIVE: ContextVar[Mapping[nn.Module, MaskSpec]] = ContextVar(
    "promptcl_masks", default=MappingProxyType({})
)


@contextmanager
def use_masks(specs: Mapping[MaskedLinear, MaskSpec]) -> Iterator[None]:
    """Within the block, each named layer applies its edit; an enclosing context's edits for
    other layers stay active."""
    token = _ACTIVE.set({**_ACTIVE.get(), **specs})
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class MaskedLinear(nn.Module):
    """A frozen ``base_layer`` run with the edit of the argument or of ``use_masks``."""

    def __init__(self, base_layer: nn.Linear) -> None:
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"MaskedLinear wraps nn.Linear, not {type(base_layer).__name__}")
        super().__init__()
        self.base_layer = base_layer

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor, spec: MaskSpec | None = None) -> torch.Tensor:
        """x: (B, ..., in) -> (B, ..., out). No edit given or active: the base layer's output."""
        if spec is None:
            spec = _ACTIVE.get().get(self)
        if spec is None:
            return self.base_layer(x)
        if not isinstance(spec, TaskEdits):
            return apply_edit(self.base_layer, x, spec)
        if spec.task.shape[0] != x.shape[0]:
            raise ValueError(f"{spec.task.shape[0]} task entries for a batch of {x.shape[0]}")
        if spec.task.is_floating_point():
            return superpose(self.base_layer, x, spec)
        return per_sample(self.base_layer, x, spec)


def edited_weight(weight: torch.Tensor, edit: torch.Tensor | WeightEdit) -> torch.Tensor:
    if isinstance(edit, torch.Tensor):
        return weight * edit.to(weight.dtype)
    return edit.weight(weight)


def apply_edit(layer: nn.Linear, x: torch.Tensor, edit: Edit) -> torch.Tensor:
    if isinstance(edit, OutputEdit):
        return edit.output(layer(x))
    return F.linear(x, edited_weight(layer.weight, edit), layer.bias)


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


# -- installing the wrappers on a backbone -------------------------------------------------------


def install_masked_linears(
    backbone: Backbone,
    blocks: Sequence[int],
    mlp: bool = False,
    names: Collection[str] | None = None,
) -> dict[str, MaskedLinear]:
    """Wrap the attention projections (and MLP linears) of ``blocks`` in MaskedLinear; ``names``
    keeps only those short names (``Backbone.linear_paths``).

    Returns ``"b{block}_{name}"`` -> wrapper. A layer already wrapped (another tuner on the same
    backbone) is reused: a wrapper outside an edit context is its base layer.
    """
    wrappers = {}
    for index in blocks:
        for name, path in backbone.linear_paths(index, mlp).items():
            if names is not None and name not in names:
                continue
            parent_path, _, attr = path.rpartition(".")
            parent = backbone.get_submodule(parent_path)
            layer = getattr(parent, attr)
            if not isinstance(layer, MaskedLinear):
                layer = MaskedLinear(layer)
                setattr(parent, attr, layer)
            wrappers[f"b{index}_{name}"] = layer
    return wrappers


def uninstall_masked_linears(backbone: nn.Module) -> int:
    """Put every wrapped layer's base layer back (for every tuner sharing the backbone)."""
    found = [
        (parent, attr, child)
        for parent in backbone.modules()
        for attr, child in parent.named_children()
        if isinstance(child, MaskedLinear)
    ]
    for parent, attr, child in found:
        setattr(parent, attr, child.base_layer)
    return len(found)


# -- per-task edits held by a tuner --------------------------------------------------------------


class TaskEditBank(nn.ModuleDict):
    """Per-task edits of the wrapped layers: ``bank[layer_name][task]``, an ``nn.ModuleList``
    per layer grown by one edit per seen task.

    The wrappers themselves are kept in a plain dict, not as submodules, so the frozen weights
    never show up among the tuner's parameters or in its saved state.
    """

    def __init__(self, wrappers: Mapping[str, MaskedLinear]) -> None:
        super().__init__({name: nn.ModuleList() for name in wrappers})
        self.wrappers = dict(wrappers)

    def add_task(self, make_edit: Callable[[nn.Linear], WeightEdit | OutputEdit]) -> None:
        """Append the new task's edits (``make_edit`` builds one for a frozen layer) and freeze
        every older edit."""
        for name, layer in self.wrappers.items():
            for old in self[name]:
                old.requires_grad_(False)
            weight = layer.base_layer.weight
            self[name].append(make_edit(layer.base_layer).to(weight.device))

    def choice(self, task: torch.Tensor | int) -> dict[MaskedLinear, MaskSpec]:
        """Edits of every layer for task ``task`` (int), or per sample: (B,) indices or (B, T)
        mixing weights."""
        if isinstance(task, torch.Tensor) and not task.is_floating_point():
            present = task.unique()
            if len(present) == 1:  # e.g. training: one edited weight per layer, no regrouping
                task = int(present[0])
        if isinstance(task, int):
            return {layer: self[name][task] for name, layer in self.wrappers.items()}
        return {layer: TaskEdits(list(self[name]), task) for name, layer in self.wrappers.items()}

    def use(self, task: torch.Tensor | int) -> AbstractContextManager[None]:
        """Context manager: the wrapped layers apply ``choice(task)`` within the block."""
        return use_masks(self.choice(task))

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
    "Edit",
    "MaskSpec",
    "MaskedLinear",
    "OutputEdit",
    "TaskEditBank",
    "TaskEdits",
    "WeightEdit",
    "install_masked_linears",
    "uninstall_masked_linears",
    "use_masks",
]
