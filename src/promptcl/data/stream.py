"""Task streams: an ordered list of tasks, fixed by a seed.

Class ids follow the stream: task 0 holds ids 0..n_0-1, task 1 the next new ones, and so on,
so the head's columns are in task order. Every sample carries the task it belongs to. Tasks
usually have disjoint classes; a stream built from data sets (``build_stream_from_tasks``) may
let two tasks share classes (Yelp and Amazon's five star ratings in ``text4``), and then a
sample's task is its data set, not a function of its class.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from promptcl.errors import UsageError


@dataclass
class Split:
    items: list[Any]  # raw inputs: texts, or image paths
    labels: list[int]  # class ids in stream order
    tasks: list[int]  # the task of each sample

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

    def joint(self) -> TaskStream:
        """The same data as one task holding every class (the joint-training upper bound)."""
        everything = sorted({c for classes in self.tasks for c in classes})
        train = Split(self.train.items, self.train.labels, [0] * len(self.train))
        test = Split(self.test.items, self.test.labels, [0] * len(self.test))
        return TaskStream(self.name, self.class_names, [everything], train, test, self.modality)

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
    """Number the classes in task order and keep the samples of those classes (tasks must have
    disjoint classes; a sample's task is its class's).

    train_per_class / test_per_class keep a seeded random subset of each class's samples.
    """
    class_names = [c for task in tasks for c in task]
    if len(set(class_names)) != len(class_names):
        raise ValueError("tasks must have disjoint classes")
    owner = {c: t for t, task in enumerate(tasks) for c in task}
    parts = [
        [(item, label, owner[label]) for item, label in pairs if label in owner]
        for pairs in (train, test)
    ]
    return _stream(
        name, class_names, tasks, *parts, train_per_class, test_per_class, seed, modality
    )


def build_stream_from_tasks(
    name: str,
    tasks: Sequence[tuple[Sequence[tuple[Any, str]], Sequence[tuple[Any, str]]]],
    train_per_class: int | None,
    seed: int,
    modality: str = "text",
    test_per_class: int | None = None,
) -> TaskStream:
    """One task per (train pairs, test pairs) in order; tasks may share class names, which then
    share a class id. Caps apply per task and class."""
    task_classes = [sorted({label for _, label in train}) for train, _ in tasks]
    class_names = list(dict.fromkeys(c for classes in task_classes for c in classes))
    train = [(item, label, t) for t, (pairs, _) in enumerate(tasks) for item, label in pairs]
    test = [(item, label, t) for t, (_, pairs) in enumerate(tasks) for item, label in pairs]
    return _stream(
        name,
        class_names,
        task_classes,
        train,
        test,
        train_per_class,
        test_per_class,
        seed,
        modality,
    )


def _stream(
    name: str,
    class_names: list[str],
    tasks: Sequence[Sequence[str]],
    train: Sequence[tuple[Any, str, int]],
    test: Sequence[tuple[Any, str, int]],
    train_per_class: int | None,
    test_per_class: int | None,
    seed: int,
    modality: str,
) -> TaskStream:
    ids = {c: i for i, c in enumerate(class_names)}
    train_split = _cap(_split(train, ids), train_per_class, seed, "train_per_class")
    test_split = _cap(_split(test, ids), test_per_class, seed, "test_per_class")
    task_ids = [[ids[c] for c in task] for task in tasks]
    for split, which in ((train_split, "training"), (test_split, "test")):
        present = set(zip(split.tasks, split.labels, strict=True))
        missing = [(t, c) for t, task in enumerate(task_ids) for c in task if (t, c) not in present]
        if missing:
            example = class_names[missing[0][1]]
            raise UsageError(f"{name}: class {example!r} has no {which} samples; check the data")
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


VAL_FRACTION = 0.1  # data.eval_split=val holds out this share of each class's training data


def hold_out(pairs: Sequence[tuple[Any, str]], share: float) -> tuple[list, list]:
    """Cut ``share`` of each class's (item, label) pairs off, at least one of a class with two or
    more, with the fixed seed 0 (the cut does not depend on the run seed): (kept, held out)."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(pairs):
        by_class[label].append(i)
    rng = random.Random(0)
    held = set()
    for label in sorted(by_class):
        idx = by_class[label]
        size = max(1, round(share * len(idx))) if len(idx) > 1 else 0
        held.update(rng.sample(idx, size))
    kept = [p for i, p in enumerate(pairs) if i not in held]
    return kept, [p for i, p in enumerate(pairs) if i in held]


def evaluation_pairs(
    train: Sequence[tuple[Any, str]], eval_split: str, test: Callable[[], list], source: str
) -> tuple[list, list]:
    """(training, evaluation) pairs: the test pairs (``test()``, read only here), or with
    data.eval_split=val a fixed held-out share (VAL_FRACTION, ``hold_out``) of each class's
    training pairs. A val split that holds nothing out of some training pairs is an error
    naming ``source`` (no pairs at all are left to the caller's own check)."""
    if eval_split != "val":
        return list(train), test()
    kept, held = hold_out(train, VAL_FRACTION)
    if train and not held:
        raise UsageError(
            f"{source}: data.eval_split=val holds out {VAL_FRACTION:.0%} of each class's "
            "training samples, and no class has two; add samples or set data.eval_split=test"
        )
    return kept, held


def _split(rows: Sequence[tuple[Any, str, int]], ids: dict[str, int]) -> Split:
    kept = [(item, ids[label], task) for item, label, task in rows if label in ids]
    return Split([r[0] for r in kept], [r[1] for r in kept], [r[2] for r in kept])


def _cap(split: Split, per_class: int | None, seed: int, key: str) -> Split:
    """A seeded random subset of ``per_class`` samples of each (task, class)."""
    if per_class is None:
        return split
    if per_class < 1:
        raise UsageError(f"data.{key} must be at least 1 (or null for all data)")
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, group in enumerate(zip(split.tasks, split.labels, strict=True)):
        groups[group].append(i)
    rng = random.Random(seed)
    keep = sorted(i for idx in groups.values() for i in rng.sample(idx, min(per_class, len(idx))))
    return Split(
        [split.items[i] for i in keep],
        [split.labels[i] for i in keep],
        [split.tasks[i] for i in keep],
    )
