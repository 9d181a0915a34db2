"""First-session adaptation, shared by the methods that adapt the frozen backbone on the first
task only and then freeze it (RanPAC's phase 1, APER's "adapt once"): a parameter-efficient
module is trained with the method's head on task 0; from task 1 on every tensor of the tuner is
frozen, and ``adapted_feature`` is the pooled feature of the backbone run with the module.

Modules (``MODULES``), on the blocks given (``first_session_blocks``: by default every block,
or blocks 0-4 for prefixes):

- ``adapter``: AdaptFormer beside each block's MLP (tuners/adaptformer.py);
- ``vpt``: VPT's prompt tokens, zeros at the start as in LAMDA-PILOT's backbone/vpt.py,
  inserted at the first listed block and replaced at each later one (every block: VPT-Deep;
  ``[0]``: VPT-Shallow); left out of the pooled feature of a text encoder;
- ``prefix``: a prefix (p_K, p_V) per block, U(-a, a) at the start (prefix tuning).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from promptcl.backbones import Backbone
from promptcl.backbones.base import Prompts, PromptStep
from promptcl.tuners.adaptformer import AdapterOptions, adapter_edits, adapter_set
from promptcl.tuners.base import Tuner, uniform_
from promptcl.tuners.prompts import check_blocks, first_blocks, prefixes_from

MODULES = ("adapter", "vpt", "prefix")


def first_session_blocks(
    module: str, blocks: Sequence[int] | None, backbone: Backbone, key: str
) -> list[int]:
    """``blocks`` checked, or the default: blocks 0-4 for a prefix, every block otherwise."""
    count = 5 if module == "prefix" else backbone.num_blocks
    return check_blocks(first_blocks(blocks, count, backbone), backbone, key)


class FirstSession:
    """Mixin of an ``nn.Module`` that holds a first-session module (``add_first_session``) and
    runs the backbone with it (``first_session_feature``); the tuners below and the HiDe family's
    adapted TII query (tuners/stages.py) share it."""

    def add_first_session(
        self,
        module: str,
        blocks: Sequence[int],
        dim: int,
        length: int = 5,
        init: float = 1.0,
        adapter: AdapterOptions | None = None,
    ) -> None:
        """The module's tensors: ``prompt`` (prefix, (n_blocks, 2, L, d)), ``vpt`` ((n_blocks,
        L, d)) or ``adapters`` (with ``adapter``'s options)."""
        self.module_kind, self.adapted_blocks = module, list(blocks)
        if module == "prefix":
            shape = (len(blocks), 2, length, dim)
            self.prompt = nn.Parameter(uniform_(torch.empty(shape), -init, init))
        elif module == "vpt":
            self.vpt = nn.Parameter(torch.zeros(len(blocks), length, dim))
        elif module == "adapter":
            self.adapters = adapter_set(dim, blocks, adapter or AdapterOptions())
        else:
            raise ValueError(f"module must be one of {', '.join(MODULES)}, not {module}")

    def first_session_feature(
        self, backbone: Backbone, inputs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """(B, d): the pooled feature of ``backbone`` run with the module."""
        blocks = self.adapted_blocks
        if self.module_kind == "prefix":
            hidden, keep = backbone(inputs, prefixes=prefixes_from(blocks, self.prompt))
        elif self.module_kind == "vpt":
            steps = {b: PromptStep(self.vpt[i]) for i, b in enumerate(blocks)}
            hidden, keep = backbone(inputs, Prompts(steps=steps, pooled=False))
        else:
            hidden, keep = backbone(inputs, edits=adapter_edits(blocks, self.adapters))
        return backbone.pool(hidden, keep)


class FirstSessionTuner(FirstSession, Tuner):
    """A tuner with a module adapted on the first task (``add_first_session``) and frozen after."""

    def begin_task(self, task: int, classes: Sequence[int]) -> None:
        if task > 0:  # the first session is over: the adapted module (and head) are frozen
            for p in self.own_parameters():
                p.requires_grad_(False)

    def adapted_feature(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, d): the pooled feature of the backbone run with the module."""
        return self.first_session_feature(self.backbone, inputs)
