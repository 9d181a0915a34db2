"""Benchmarks by name: each builds a TaskStream from a StreamDataConfig and a seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from promptcl.config import StreamDataConfig
from promptcl.data.stream import Split, TaskStream, build_stream, split_into_tasks
from promptcl.data.text import TextProcessor, builtin_intents, clinc150, text4, text_file_stream
from promptcl.data.vision import (
    ImageProcessor,
    cifar100,
    cub200,
    fashion_mnist,
    image_folder,
    imagenet_r,
    tinyimagenet,
)
from promptcl.errors import UsageError
from promptcl.registry import Registry

BENCHMARKS: Registry[Callable[[StreamDataConfig, int], TaskStream]] = Registry("benchmark")

# data keys that only some benchmarks read, and which of them each benchmark reads: a key set
# for a benchmark that ignores it is refused (data.num_tasks on a fixed split, say)
OWN_KEYS = ("num_tasks", "order", "train_file", "test_file", "text_column", "label_column")
FILE_KEYS = ("num_tasks", "train_file", "test_file", "text_column", "label_column")
READS: dict[str, tuple[str, ...]] = {}


def register_benchmark(
    name: str,
    description: str,
    builder: Callable[[StreamDataConfig, int], TaskStream],
    reads: Sequence[str] = ("num_tasks",),
) -> None:
    """``reads``: the keys of OWN_KEYS that ``builder`` reads."""
    BENCHMARKS.add(name, builder, description)
    READS[name] = tuple(reads)


register_benchmark(
    "builtin-intents",
    "24 everyday intents shipped with promptcl, 4 tasks (no data root)",
    builtin_intents,
)
register_benchmark(
    "clinc150",
    "CLINC150: 10 tasks = its 10 domains (15 intents each), seeded domain order",
    partial(clinc150, per_domain=True),
    (),
)
register_benchmark(
    "clinc150-15",
    "CLINC150: 15 tasks of 10 intents in a seeded order",
    partial(clinc150, per_domain=False),
    (),
)
register_benchmark(
    "text4",
    "AG News, Yelp, Amazon, DBpedia: 4 tasks, one per data set (data.order 4-7); Yelp and "
    "Amazon share the 5 star classes",
    text4,
    ("order",),
)
register_benchmark(
    "text-csv",
    "CSV files data.train_file/test_file with text and label columns",
    partial(text_file_stream, kind="csv"),
    FILE_KEYS,
)
register_benchmark(
    "text-jsonl",
    "JSON-lines files data.train_file/test_file with text and label keys",
    partial(text_file_stream, kind="jsonl"),
    FILE_KEYS,
)
register_benchmark(
    "cifar100",
    "CIFAR-100 python-version files: 10 tasks (data.num_tasks=20 for 20); seed 0 = label order",
    cifar100,
)
register_benchmark(
    "imagenet-r",
    "ImageNet-R (200 classes), fixed 80/20 split per class, 10 seeded tasks",
    imagenet_r,
)
register_benchmark(
    "cub200", "CUB-200-2011 with its official train/test split, 10 seeded tasks", cub200
)
register_benchmark(
    "tinyimagenet", "Tiny ImageNet (200 classes; val = test), 10 seeded tasks", tinyimagenet
)
register_benchmark(
    "fashion-mnist",
    "Fashion-MNIST IDX files (data.root or the Debian package), 5 tasks of 2",
    fashion_mnist,
)
register_benchmark(
    "imagefolder",
    "your images: data.root holds train/<class>/ and test/<class>/ folders",
    image_folder,
)


def build_benchmark(name: str, cfg: StreamDataConfig, seed: int) -> TaskStream:
    builder, defaults = BENCHMARKS.get(name), StreamDataConfig()
    for key in OWN_KEYS:
        value = getattr(cfg, key)
        if key not in READS[name] and value != getattr(defaults, key):
            raise UsageError(
                f"benchmark {name} does not read data.{key} (set to {value}); remove it"
            )
    return builder(cfg, seed)


__all__ = [
    "BENCHMARKS",
    "ImageProcessor",
    "Split",
    "TaskStream",
    "TextProcessor",
    "build_benchmark",
    "build_stream",
    "register_benchmark",
    "split_into_tasks",
]
