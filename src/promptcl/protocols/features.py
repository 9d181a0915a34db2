"""Per-sample cache of the frozen query feature.

Text inputs are not augmented, so the un-prompted pooled feature of a sample never changes:
it is computed once. Filling always runs over a task's samples in index order, so the cached
values do not depend on which batches asked first (a resumed run sees the same numbers). With
several processes, every rank fills with the same indices: the batches go round-robin to the
ranks and the features are summed (zero on the other ranks), so every rank holds the
one-process values exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from promptcl.backbones import Backbone
from promptcl.data.batching import chunks_of
from promptcl.engine import Engine


class FeatureCache:
    """The features of ``items`` by index, computed by ``backbone.features`` under ``autocast``
    (the query pass's precision) in batches of ``batch_size``."""

    def __init__(
        self,
        backbone: Backbone,
        items: Sequence,
        collate: Callable[[list], dict[str, torch.Tensor]],
        engine: Engine,
        batch_size: int,
        autocast: Callable[[], AbstractContextManager],
    ) -> None:
        self.backbone = backbone
        self.items = items
        self.collate = collate
        self.engine = engine
        self.autocast = autocast
        self.batch_size = batch_size
        self.features = torch.zeros(len(items), backbone.dim)
        self.filled = torch.zeros(len(items), dtype=torch.bool)

    @torch.no_grad()
    def fill(self, indices: Sequence[int]) -> None:
        """Compute the features of ``indices`` not cached yet (the same on every rank)."""
        todo = [i for i in sorted(indices) if not self.filled[i]]
        if not todo:
            return
        engine = self.engine
        features = torch.zeros(len(todo), self.backbone.dim, device=engine.device)
        chunks = chunks_of(range(len(todo)), self.batch_size)
        for chunk in engine.shard(chunks):
            inputs = self.collate([self.items[todo[i]] for i in chunk])
            inputs = {k: v.to(engine.device) for k, v in inputs.items()}
            with self.autocast():
                features[list(chunk)] = self.backbone.features(inputs).float()
        self.features[todo] = engine.sum_over_ranks(features).cpu()
        self.filled[todo] = True

    def get(self, index: torch.Tensor) -> torch.Tensor:
        if not bool(self.filled[index].all()):
            raise RuntimeError("query features requested before FeatureCache.fill")
        return self.features[index]
