"""MaskedLinear: a frozen linear layer run with a per-task edit, chosen per call.

Soft-TransFormers (Kang et al., eq. 3 and 6): a target layer of task t computes
y = x (W * M_t)^T + b, with W and b the frozen pretrained weight and bias and M_t a real-valued
mask of W's shape owned by task t. The bias is not masked. The baselines
Soft-TF is compared with change the same layers in other ways, so a layer's per-task change is
an *edit*, of one of two kinds:

- ``WeightEdit``: W -> edit.weight(W), then y = x W'^T + b (Soft-TF's W * M, WSN's binary
  mask, LoRA's W + s B A);
- ``OutputEdit``: y -> edit.output(y) after the frozen layer (a bottleneck adapter).

``MaskedLinear`` keeps the frozen ``nn.Linear`` as ``base_layer`` and holds no tensors of its
own: the edits belong to the tuner (tuners/editbank.py: one ``nn.ModuleList`` per layer, grown
by one edit per seen task). Edited weights are formed inside ``forward`` as temporaries; W is never
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
the whole batch, or a per-sample choice among per-task edits: a callable (layer, x) -> y
(``TaskEdits`` in tuners/editbank.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

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


# an edit, or a per-sample choice among edits: a callable (frozen layer, x) -> y
# (tuners/editbank.TaskEdits)
MaskSpec = Edit | Callable[[nn.Linear, torch.Tensor], torch.Tensor]

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
        if isinstance(spec, torch.Tensor | WeightEdit | OutputEdit):
            return apply_edit(self.base_layer, x, spec)
        return spec(self.base_layer, x)


def edited_weight(weight: torch.Tensor, edit: torch.Tensor | WeightEdit) -> torch.Tensor:
    if isinstance(edit, torch.Tensor):
        return weight * edit.to(weight.dtype)
    return edit.weight(weight)


def apply_edit(layer: nn.Linear, x: torch.Tensor, edit: Edit) -> torch.Tensor:
    if isinstance(edit, OutputEdit):
        return edit.output(layer(x))
    return F.linear(x, edited_weight(layer.weight, edit), layer.bias)


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


__all__ = [
    "Edit",
    "MaskSpec",
    "MaskedLinear",
    "OutputEdit",
    "WeightEdit",
    "install_masked_linears",
    "uninstall_masked_linears",
    "use_masks",
]
