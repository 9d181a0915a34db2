"""Edited linears: a frozen linear layer run with a per-task edit, passed per call.

Soft-TransFormers (Kang et al., eq. 3 and 6): a target layer of task t computes
y = x (W * M_t)^T + b, with W and b the frozen pretrained weight and bias and M_t a real-valued
mask of W's shape owned by task t. The bias is not masked. The baselines
Soft-TF is compared with change the same layers in other ways, so a layer's per-task change is
an *edit*, of one of two kinds:

- ``WeightEdit``: W -> edit.weight(W), then y = x W'^T + b (Soft-TF's W * M, WSN's binary
  mask, LoRA's W + s B A);
- ``OutputEdit``: y -> edit.output(y) after the frozen layer (a bottleneck adapter).

Besides the linears, a block takes one module beside its MLP, under the name ``BESIDE_MLP``:
a function of the MLP sublayer's input x whose output the block adds to the MLP's (AdaptFormer's
parallel adapter: pre-norm blocks compute x + MLP(norm(x)) + a(x), post-norm ones
norm(x + MLP(x) + a(x))); ``beside_mlp`` adds it.

The edits belong to the tuner (tuners/editbank.py: one ``nn.ModuleList`` per layer, grown by
one edit per seen task); the backbone holds none and is not modified. Edited weights are formed
per call as temporaries; W is never copied into a buffer and nothing is written onto a module.

How edits reach the layers: as arguments. ``Backbone.forward(..., edits={block: {name: spec}})``
passes block ``i``'s edits to ``run_block(i, ..., edits[i])``, and the block code calls each
linear through ``edited_linear(layer, x, edits.get(name))`` (``name``: the short names of
``Backbone.linear_paths``). The block code calls the linears itself, also those that timm's
``Mlp`` and transformers' ``BertOutput`` would call, with the same operations in the same order
(tests/test_backbones.py checks the outputs equal the libraries' own). A layer without an edit
runs as the frozen layer. Since every per-call input is an argument, the block computation can
be compiled (``Backbone.compile_blocks``) or recomputed (activation checkpointing) as it is.

A layer's edit for one call is a mask tensor (out, in) (shorthand for W * mask), one edit for
the whole batch, or a per-sample choice among per-task edits: a callable (layer, x) -> y
(``TaskEdits`` in tuners/editbank.py).

Frozen weights stored in bf16 (backbones/precision.py) meet fp32 edits: a weight edit is formed
in the wider of the two dtypes (W * M in fp32), so the edit's gradient is not rounded to bf16;
autocast then runs the matmul in bf16.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn


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
# one block's edits: short layer name -> edit; BESIDE_MLP -> a module (x) -> y
BlockEdits = Mapping[str, MaskSpec]
NO_EDITS: BlockEdits = MappingProxyType({})


BESIDE_MLP = "beside_mlp"  # the BlockEdits name of a module beside the MLP (AdaptFormer)


def beside_mlp(y: torch.Tensor, x: torch.Tensor, edits: BlockEdits) -> torch.Tensor:
    """y (the MLP's output) plus ``edits[BESIDE_MLP](x)`` of the MLP's input x, if given."""
    module = edits.get(BESIDE_MLP)
    return y if module is None else y + module(x)


def edited_linear(layer: nn.Linear, x: torch.Tensor, spec: MaskSpec | None) -> torch.Tensor:
    """x: (B, ..., in) -> (B, ..., out) through the frozen ``layer`` with the edit ``spec``
    (None: the frozen layer's output)."""
    if spec is None:
        return layer(x)
    if isinstance(spec, torch.Tensor | WeightEdit | OutputEdit):
        return apply_edit(layer, x, spec)
    return spec(layer, x)


def masked_weight(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """W * mask, in the wider of the two dtypes (a bf16 weight times an fp32 mask: fp32)."""
    dtype = torch.promote_types(weight.dtype, mask.dtype)
    return weight.to(dtype) * mask.to(dtype)


def added_weight(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W + delta, in the wider of the two dtypes (a bf16 weight plus an fp32 update: fp32)."""
    dtype = torch.promote_types(weight.dtype, delta.dtype)
    return weight.to(dtype) + delta.to(dtype)


def edited_weight(weight: torch.Tensor, edit: torch.Tensor | WeightEdit) -> torch.Tensor:
    return masked_weight(weight, edit) if isinstance(edit, torch.Tensor) else edit.weight(weight)


def apply_edit(layer: nn.Linear, x: torch.Tensor, edit: Edit) -> torch.Tensor:
    if isinstance(edit, OutputEdit):
        return edit.output(layer(x))
    return F.linear(x, edited_weight(layer.weight, edit), layer.bias)


__all__ = [
    "BESIDE_MLP",
    "NO_EDITS",
    "BlockEdits",
    "Edit",
    "MaskSpec",
    "OutputEdit",
    "WeightEdit",
    "added_weight",
    "beside_mlp",
    "edited_linear",
    "masked_weight",
]
