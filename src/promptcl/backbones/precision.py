"""Frozen weights stored in bf16, trained tensors in fp32.

The backbone is frozen, so it needs no fp32 master copy: ``store_frozen`` keeps its weights
and floating buffers in bf16 (half the memory, half the bytes each matmul reads), while the
tuner's trained tensors (prompts, keys, edits, heads) and the optimiser's state stay fp32. The
forward runs under autocast in bf16. Where fp32 trained tensors meet bf16 activations the
backbone casts them to the activations' dtype (prefix keys and values, prompt steps, context
vectors); a weight edit is formed in fp32 (W * M, backbones/masked.py) and cast by autocast
for the matmul; gradients reach the trained tensors in fp32. tests/test_precision.py compares
with the fp32 run; benchmarks/throughput.py measures the speed of the training step and
benchmarks/precision.py the accuracy of whole runs.

``FrozenBF16Precision`` is the same as a Lightning Fabric precision plugin: Fabric's
``bf16-mixed`` (autocast, floating inputs cast to bf16 and outputs to fp32) whose
``convert_module`` stores only the frozen backbones in bf16:
``Fabric(accelerator="cpu", plugins=FrozenBF16Precision("cpu"))``, then ``fabric.setup``.
"""

from __future__ import annotations

import torch
from lightning_fabric.plugins.precision import MixedPrecision
from torch import nn

from promptcl.backbones.base import Backbone


def store_frozen(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Store every ``Backbone`` inside ``module`` (itself included) in ``dtype``: its
    parameters, none of which trains, and its floating buffers. Tensors outside the backbones
    (trained or frozen, such as older tasks' prompts) keep their dtype. In place; returns
    ``module``."""
    for backbone in [m for m in module.modules() if isinstance(m, Backbone)]:
        trained = [name for name, p in backbone.named_parameters() if p.requires_grad]
        if trained:
            raise ValueError(f"backbone parameters train, cannot store them in {dtype}: {trained}")
        backbone.to(dtype)
    return module


class FrozenBF16Precision(MixedPrecision):
    """Fabric's ``bf16-mixed`` over fp32 trained tensors and bf16-stored frozen backbones."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__("bf16-mixed", device)

    def convert_module(self, module: nn.Module) -> nn.Module:
        return store_frozen(module, torch.bfloat16)


__all__ = ["FrozenBF16Precision", "store_frozen"]
