"""Task streams: an ordered list of tasks with disjoint classes, fixed by a seed.

Class ids follow the stream: task 0 holds ids 0..n_0-1, task 1 the next ones, and so on, so
the head's columns are in task order and a task's classes form a contiguous range.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptcl.errors import UsageError


@dataclass
class Split:
    items: list[Any]  # raw inputs: texts, or image paths
    labels: list[int]  # class ids in stream order

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskStream:
    name: str
    class_names: list[str]  # index = class id
    tasks: list[list[int]]  # class ids of each task, in order
    train: Split
    test: Split
    modality: str = "text"  # or "image"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def task_of_class(self) -> list[int]:
        owner = [0] * self.num_classes
        for t, classes in enumerate(self.tasks):
            for c in classes:
                owner[c] = t
        return owner

    def joint(self) -> TaskStream:
        """The same data as one task holding every class (the joint-training upper bound)."""
        everything = [c for classes in self.tasks for c in classes]
        return TaskStream(
            self.name, self.class_names, [everything], self.train, self.test, self.modality
        )

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "class_order": self.class_names,
            "tasks": [[self.class_names[c] for c in classes] for classes in self.tasks],
            "train_samples": len(self.train),
            "test_samples": len(self.test),
        }


def build_stream(
    name: str,
    train: Sequence[tuple[Any, str]],
    test: Sequence[tuple[Any, str]],
    tasks: Sequence[Sequence[str]],
    train_per_class: int | None,
    seed: int,
    modality: str = "text",
    test_per_class: int | None = None,
) -> TaskStream:
    """Number the classes in task order and keep the samples of those classes.

    train_per_class / test_per_class keep a seeded random subset of each class's samples.
    """
    class_names = [c for task in tasks for c in task]
    if len(set(class_names)) != len(class_names):
        raise ValueError("tasks must have disjoint classes")
    ids = {c: i for i, c in enumerate(class_names)}
    train_split = _cap(_split(train, ids), train_per_class, seed, "train_per_class")
    test_split = _cap(_split(test, ids), test_per_class, seed, "test_per_class")
    for split, which in ((train_split, "training"), (test_split, "test")):
        missing = set(range(len(class_names))) - set(split.labels)
        if missing:
            example = class_names[min(missing)]
            raise UsageError(f"{name}: class {example!r} has no {which} samples; check the data")
    task_ids = [[ids[c] for c in task] for task in tasks]
    return TaskStream(name, class_names, task_ids, train_split, test_split, modality)


def split_into_tasks(classes: Sequence[str], num_tasks: int, seed: int) -> list[list[str]]:
    """Shuffle the classes with ``seed`` and cut them into ``num_tasks`` near-equal tasks."""
    order = sorted(classes)
    random.Random(seed).shuffle(order)
    return cut_into_tasks(order, num_tasks)


def cut_into_tasks(order: Sequence[str], num_tasks: int) -> list[list[str]]:
    """Cut classes, kept in the given order, into ``num_tasks`` near-equal tasks."""
    if not 1 <= num_tasks <= len(order):
        raise UsageError(
            f"cannot split {len(order)} classes into {num_tasks} tasks; "
            f"set data.num_tasks between 1 and {len(order)}"
        )
    bounds = [round(i * len(order) / num_tasks) for i in range(num_tasks + 1)]
    return [list(order[bounds[i] : bounds[i + 1]]) for i in range(num_tasks)]


def _split(pairs: Sequence[tuple[Any, str]], ids: dict[str, int]) -> Split:
    kept = [(item, ids[label]) for item, label in pairs if label in ids]
    return Split([item for item, _ in kept], [label for _, label in kept])


def _cap(split: Split, per_class: int | None, seed: int, key: str) -> Split:
    if per_class is None:
        return split
    if per_class < 1:
        raise UsageError(f"data.{key} must be at least 1 (or null for all data)")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(split.labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    keep = sorted(i for idx in by_class.values() for i in rng.sample(idx, min(per_class, len(idx))))
    return Split([split.items[i] for i in keep], [split.labels[i] for i in keep])
