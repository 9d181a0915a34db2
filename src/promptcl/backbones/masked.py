"""MaskedLinear: a frozen linear layer run with a multiplicative mask on its weight, per call.

Soft-TransFormers (Kang et al., eq. 3 and 6): a target layer of task t computes
y = x (W * M_t)^T + b, with W and b the frozen pretrained weight and bias and M_t a real-valued
mask of W's shape owned by task t. The bias is not masked (DESIGN section 4).

``MaskedLinear`` keeps the frozen ``nn.Linear`` as ``base_layer`` and holds no tensors of its
own: the masks belong to the tuner (``TaskMaskBank``: one ``nn.ParameterList`` per layer, grown
by one mask per seen task). W * M is formed inside ``forward`` as a temporary; W is never copied
into a buffer and nothing is written onto the module.

How masks reach the layers. The layers that Soft-TF masks are called by code that is not ours
to change: PrefixAttention calls ``base.qkv`` / ``base.query`` by attribute, and the MLPs and
BERT's output projections are called inside timm's ``Mlp`` and transformers' ``BertIntermediate``
/ ``BertOutput`` / ``BertSelfOutput``. An extra forward argument cannot pass through them without
copying their forward methods. So a tuner names the masks for the duration of one of its
forward calls with the context manager ``use_masks({layer: mask})`` (STYLE convention 3's
"per-call context manager"); it sets a ``contextvars.ContextVar`` that each ``MaskedLinear``
reads. A layer that the active context does not name runs as its base layer, so installing the
wrappers changes no output, and another tuner sharing the backbone is unaffected. The context is
per thread and per asyncio task. Autograd needs nothing from it after forward (W * M is saved
with the graph), but code that re-runs forward outside the ``with`` block does not see the masks:
activation checkpointing (which recomputes in backward) would need the masks passed explicitly,
as ``MaskedLinear.forward(x, mask)`` allows; torch.compile has not been tried with it.

A layer's mask for one call is either one tensor (out, in) for the whole batch, or a
``TaskMasks`` choice among per-task masks per sample:

- ``task`` (B,) integers: sample b uses ``masks[task[b]]``. The batch is grouped by task and
  each group runs one ``F.linear`` with its task's masked weight; outputs are put back in batch
  order. Cost: the matmul FLOPs of one unmasked call, plus one W * M product (out x in
  multiplies, and a temporary of W's size) per distinct task in the batch, plus one
  host-device sync to read the groups.
- ``task`` (B, T) floats alpha: y_b = sum_i alpha_{b,i} x_b (W * M_i)^T + b, the superposition
  that Gradient ID differentiates (linear in alpha). Cost: T full calls and T W * M products.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from promptcl.backbones.base import Backbone


class TaskMasks(NamedTuple):
    """A per-sample choice among per-task masks of one layer."""

    masks: Sequence[torch.Tensor]  # task i -> (out, in)
    task: torch.Tensor  # (B,) task index per sample, or (B, T) mixing weights over the T masks


MaskSpec = torch.Tensor | TaskMasks

_ACTIVE: ContextVar[Mapping[nn.Module, MaskSpec]] = ContextVar(
    "promptcl_masks", default=MappingProxyType({})
)


@contextmanager
def use_masks(masks: Mapping[MaskedLinear, MaskSpec]) -> Iterator[None]:
    """Within the block, each named layer applies its mask; an enclosing context's masks for
    other layers stay active."""
    token = _ACTIVE.set({**_ACTIVE.get(), **masks})
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class MaskedLinear(nn.Module):
    """y = x (W * M)^T + b over a frozen ``base_layer``; M from the argument or ``use_masks``."""

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

    def forward(self, x: torch.Tensor, mask: MaskSpec | None = None) -> torch.Tensor:
        """x: (B, ..., in) -> (B, ..., out). No mask given or active: the base layer's output."""
        if mask is None:
            mask = _ACTIVE.get().get(self)
        weight, bias = self.base_layer.weight, self.base_layer.bias
        if mask is None:
            return F.linear(x, weight, bias)
        if isinstance(mask, torch.Tensor):
            return F.linear(x, masked(weight, mask), bias)
        if mask.task.shape[0] != x.shape[0]:
            raise ValueError(f"{mask.task.shape[0]} task entries for a batch of {x.shape[0]}")
        if mask.task.is_floating_point():
            return mix_tasks(x, weight, bias, mask)
        return per_sample(x, weight, bias, mask)


def masked(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return weight * mask.to(weight.dtype)


def per_sample(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, choice: TaskMasks
) -> torch.Tensor:
    """Sample b through masks[task[b]]: one F.linear per distinct task, back in batch order."""
    order = torch.argsort(choice.task, stable=True)
    tasks, counts = torch.unique_consecutive(choice.task[order], return_counts=True)
    if len(tasks) == 1:
        return F.linear(x, masked(weight, choice.masks[int(tasks[0])]), bias)
    groups = x[order].split(counts.tolist())
    out = torch.cat(
        [
            F.linear(group, masked(weight, choice.masks[t]), bias)
            for group, t in zip(groups, tasks.tolist(), strict=True)
        ]
    )
    return out[torch.argsort(order)]  # inverse permutation


def mix_tasks(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, choice: TaskMasks
) -> torch.Tensor:
    """sum_i alpha_{b,i} x_b (W * M_i)^T + b, alpha = choice.task (B, T)."""
    alpha = choice.task.to(x.dtype)
    if alpha.shape[1] != len(choice.masks):
        raise ValueError(f"{alpha.shape[1]} mixing weights for {len(choice.masks)} masks")
    alpha = alpha.view(*alpha.shape, *([1] * (x.dim() - 1)))  # (B, T, 1, ..., 1)
    out = sum(alpha[:, i] * F.linear(x, masked(weight, m)) for i, m in enumerate(choice.masks))
    return out + bias if bias is not None else out


# -- installing the wrappers on a backbone -------------------------------------------------------


# short name -> path inside a block; attention first, then the MLP (option ``mlp``)
def install_masked_linears(
    backbone: Backbone, blocks: Sequence[int], mlp: bool = False
) -> dict[str, MaskedLinear]:
    """Wrap the attention projections (and MLP linears) of ``blocks`` in MaskedLinear.

    Returns ``"b{block}_{name}"`` -> wrapper. A layer already wrapped (another tuner on the same
    backbone) is reused: a wrapper outside a mask context is its base layer.
    """
    wrappers = {}
    for index in blocks:
        for name, path in backbone.linear_paths(index, mlp).items():
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


# -- per-task masks held by a tuner --------------------------------------------------------------


class TaskMaskBank(nn.ModuleDict):
    """Per-task masks of the wrapped layers: ``bank[layer_name][task]``, an ``nn.ParameterList``
    per layer grown by one mask per seen task.

    The wrappers themselves are kept in a plain dict, not as submodules, so the frozen weights
    never show up among the tuner's parameters or in its saved state.
    """

    def __init__(self, wrappers: Mapping[str, MaskedLinear]) -> None:
        super().__init__({name: nn.ParameterList() for name in wrappers})
        self.wrappers = dict(wrappers)

    def add_task(self, init: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Append the new task's masks (``init`` fills an empty float32 tensor of W's shape)
        and freeze every older mask."""
        for name, layer in self.wrappers.items():
            w = layer.base_layer.weight
            for old in self[name]:
                old.requires_grad_(False)
            mask = init(torch.empty(w.shape, dtype=torch.float32, device=w.device))
            self[name].append(nn.Parameter(mask))

    def choice(self, task: torch.Tensor | int) -> dict[MaskedLinear, MaskSpec]:
        """Masks of every layer for task ``task`` (int), or per sample: (B,) indices or (B, T)
        mixing weights."""
        if isinstance(task, torch.Tensor) and not task.is_floating_point():
            present = task.unique()
            if len(present) == 1:  # e.g. training: one W * M per layer, no regrouping
                task = int(present[0])
        if isinstance(task, int):
            return {layer: self[name][task] for name, layer in self.wrappers.items()}
        return {layer: TaskMasks(list(self[name]), task) for name, layer in self.wrappers.items()}

    def use(self, task: torch.Tensor | int) -> AbstractContextManager[None]:
        """Context manager: the wrapped layers apply ``choice(task)`` within the block."""
        return use_masks(self.choice(task))

    def params_per_task(self) -> int:
        return sum(layer.base_layer.weight.numel() for layer in self.wrappers.values())


__all__ = [
    "MaskSpec",
    "MaskedLinear",
    "TaskMaskBank",
    "TaskMasks",
    "install_masked_linears",
    "uninstall_masked_linears",
    "use_masks",
]
