"""From samples to model inputs: per-split processors, index chunks, batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from promptcl.data.text import TextProcessor
from promptcl.data.vision import ImageProcessor
from promptcl.errors import UsageError


def make_processors(backbone: Any, cfg: Any) -> dict[str, Any]:
    """Per split: tokenisation (text backbones: ``tokenizer``, at most ``max_length`` tokens), or
    decoding and transforms (image backbones: ``data_config``; training augments unless
    ``data.augment`` is off)."""
    if backbone.modality == "text":
        if cfg.max_length > backbone.max_length:
            raise UsageError(
                f"data.max_length={cfg.max_length} is more than the {backbone.max_length} "
                f"token positions of the backbone; set data.max_length <= {backbone.max_length}"
            )
        text = TextProcessor(backbone.tokenizer, cfg.max_length)
        return {"train": text, "test": text}
    options = {"scale": tuple(cfg.crop_scale), "hflip": cfg.hflip}
    return {
        "train": ImageProcessor(backbone.data_config, train=cfg.augment, **options),
        "test": ImageProcessor(backbone.data_config, train=False),
    }


def chunks_of(indices: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive chunks of at most ``size`` indices."""
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


class Collate:
    """Index chunk -> (index, labels, model inputs); picklable, so it runs in DataLoader workers."""

    def __init__(self, items: Sequence, labels: Sequence[int], processor) -> None:
        self.items, self.labels, self.processor = items, labels, processor

    def __call__(self, chunk: list[int]) -> tuple[torch.Tensor, torch.Tensor, dict]:
        labels = torch.tensor([self.labels[i] for i in chunk])
        return torch.tensor(chunk), labels, self.processor.collate([self.items[i] for i in chunk])


def load_batches(
    items: Sequence,
    labels: Sequence[int],
    processor,
    chunks: Sequence[Sequence[int]],
    device: torch.device,
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """(index, labels, inputs) per chunk of indices, labels and inputs on ``device``; inputs are
    collated (decoded) in ``workers`` processes."""
    loader = DataLoader(
        chunks,
        batch_size=None,
        collate_fn=Collate(items, labels, processor),
        num_workers=workers,
    )
    for index, y, inputs in loader:
        yield index, y.to(device), {k: v.to(device) for k, v in inputs.items()}
