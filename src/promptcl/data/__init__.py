"""Benchmarks by name: each builds a TaskStream from a DataConfig and a seed."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from promptcl.config import DataConfig
from promptcl.data.stream import Split, TaskStream, build_stream, split_into_tasks
from promptcl.data.text import TextProcessor, builtin_intents, clinc150, text_file_stream
from promptcl.errors import UsageError

BENCHMARKS: dict[str, tuple[str, Callable[[DataConfig, int], TaskStream]]] = {}


def register_benchmark(
    name: str, description: str, builder: Callable[[DataConfig, int], TaskStream]
):
    if name in BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is already registered")
    BENCHMARKS[name] = (description, builder)


register_benchmark(
    "builtin-intents",
    "24 everyday intents shipped with promptcl, 4 tasks (no data root)",
    builtin_intents,
)
register_benchmark(
    "clinc150",
    "CLINC150: 10 tasks = its 10 domains (15 intents each), seeded domain order",
    partial(clinc150, per_domain=True),
)
register_benchmark(
    "clinc150-15",
    "CLINC150: 15 tasks of 10 intents in a seeded order",
    partial(clinc150, per_domain=False),
)
register_benchmark(
    "text-csv",
    "CSV files data.train_file/test_file with text and label columns",
    partial(text_file_stream, kind="csv"),
)
register_benchmark(
    "text-jsonl",
    "JSON-lines files data.train_file/test_file with text and label keys",
    partial(text_file_stream, kind="jsonl"),
)


def build_benchmark(name: str, cfg: DataConfig, seed: int) -> TaskStream:
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name][1](cfg, seed)


__all__ = [
    "BENCHMARKS",
    "Split",
    "TaskStream",
    "TextProcessor",
    "build_benchmark",
    "build_stream",
    "register_benchmark",
    "split_into_tasks",
]
