"""Per-sample cache of the frozen query feature.

Text inputs are not augmented, so the un-prompted pooled feature of a sample never changes:
it is computed once. Filling always runs over a task's samples in index order, so the cached
values do not depend on which batches asked first (a resumed run sees the same numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from promptcl.backbones import Backbone


class FeatureCache:
    def __init__(
        self,
        backbone: Backbone,
        items: Sequence,
        collate: Callable[[list], dict[str, torch.Tensor]],
        device: torch.device,
        batch_size: int,
    ) -> None:
        self.backbone = backbone
        self.items = items
        self.collate = collate
        self.device = device
        self.batch_size = batch_size
        self.features = torch.zeros(len(items), backbone.dim)
        self.filled = torch.zeros(len(items), dtype=torch.bool)

    @torch.no_grad()
    def fill(self, indices: Sequence[int]) -> None:
        todo = [i for i in sorted(indices) if not self.filled[i]]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            inputs = self.collate([self.items[i] for i in chunk])
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            self.features[chunk] = self.backbone.features(inputs).float().cpu()
            self.filled[chunk] = True

    def get(self, index: torch.Tensor) -> torch.Tensor:
        if not bool(self.filled[index].all()):
            raise RuntimeError("query features requested before FeatureCache.fill")
        return self.features[index]
