"""Bottleneck adapters (Houlsby et al., ICML 2019) per task, as Soft-TF's baseline: in each
block of ``blocks``, after the attention output projection and after the MLP's second linear
(Houlsby's two positions, before the residual sum), y -> y + s * up(relu(down(y))). ``up``
starts at zero, so a new adapter starts as the identity. Same task inference as softtf.
"""

from __future__ import annotations

import torch
from torch import nn

from promptcl.backbones.masked import OutputEdit
from promptcl.tuners.adapter.config import AdapterConfig
from promptcl.tuners.edits import EditTuner


class Bottleneck(OutputEdit):
    def __init__(self, dim: int, hidden: int, scale: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.scale * self.up(torch.relu(self.down(y)))


class Adapter(EditTuner):
    name = "adapter"
    description = "per-task bottleneck adapters after attention and MLP outputs, over DualPrompt"
    checkpoint_size = "grows with T: adapters per task (1.2 MB a task on MiniLM-L6)"
    config_class = AdapterConfig
    layer_names = ("proj", "fc2")  # whatever the mlp option says

    def make_edit(self, layer: nn.Linear) -> Bottleneck:
        return Bottleneck(layer.out_features, self.config.bottleneck, self.config.scale)
