"""Labelled data for base-to-novel runs: queries (utterances or images) with readable class
names, and the class splits and few-shot draws of the protocol.

Text: CLINC150 (150 intents, out-of-scope left out), DBpedia's 14 topics (cut as the text4
stream cuts them), Banking77 (CSV files with columns text and
category) and HWU64 as distributed for few-shot intent detection (per split a folder with a
``seq.in`` file of utterances and a ``label`` file, one per line). Images: the 11 data sets of
the CoOp protocol through ``promptcl.data.coop.load_coop``, and random images for tests. Class
names are made readable ("pto_request" -> "pto request") and slotted into a template, by default
``INTENT_TEMPLATE`` for intents, ``TOPIC_TEMPLATE`` for DBpedia and the data set's own for
images. The loaders are registered
in ``promptcl.data.BENCHMARKS`` and called through ``promptcl.data.load_labelled``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from promptcl.data.coop import COOP_DATASETS, load_coop
from promptcl.data.files import data_folder, read_csv
from promptcl.data.text import dbpedia_splits, read_clinc150
from promptcl.errors import UsageError
from promptcl.files import read_text

INTENT_TEMPLATE = "a request about {}"  # see docs/METHODS.md: chosen on the validation split
TOPIC_TEMPLATE = "an article about {}."  # DBpedia: see docs/METHODS.md, chosen as INTENT_TEMPLATE
Sample = tuple[Any, int]  # (utterance, image path or uint8 array; class index)


@dataclass
class LabelledData:
    name: str
    modality: str  # "text" or "image"
    classnames: list[str]  # readable
    template: str
    train: list[Sample]
    test: list[Sample]  # the evaluation split (test, or val with data.eval_split=val)
    seeded_order: bool = True  # intents: seeded class order; CoOp sets: their label order

    def class_order(self, seed: int) -> list[int]:
        order = sorted(range(len(self.classnames)), key=lambda c: self.classnames[c])
        if self.seeded_order:
            random.Random(seed).shuffle(order)
        else:
            order = list(range(len(self.classnames)))
        return order


def base_novel(order: Sequence[int]) -> tuple[list[int], list[int]]:
    """First ceil(C/2) classes of the order are base, the rest novel (CoOp's subsample_classes)."""
    m = math.ceil(len(order) / 2)
    return list(order[:m]), list(order[m:])


def few_shot(
    samples: Sequence[Sample], classes: Sequence[int], shots: int | None, seed: int
) -> list[Sample]:
    """``shots`` samples per class of ``classes``, drawn with ``seed`` (all when fewer)."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    rng = random.Random(seed)
    picked = []
    for c in classes:
        pool = by_class[c]
        picked += pool if shots is None or len(pool) <= shots else rng.sample(pool, shots)
    return picked


def cap_per_class(samples: Sequence[Sample], cap: int | None) -> list[Sample]:
    if cap is None:
        return list(samples)
    seen: dict[int, int] = defaultdict(int)
    kept = []
    for sample in samples:
        if seen[sample[1]] < cap:
            seen[sample[1]] += 1
            kept.append(sample)
    return kept


def readable(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("/", " ").split())


def _index(pairs: list[tuple[Any, str]], names: list[str]) -> list[Sample]:
    index = {n: i for i, n in enumerate(names)}
    return [(item, index[label]) for item, label in pairs if label in index]


def _text_data(name: str, train, test, template: str | None) -> LabelledData:
    raw = sorted({label for _, label in train})
    unknown = sorted({label for _, label in test} - set(raw))
    if unknown:
        raise UsageError(f"{name}: evaluation labels missing from training data: {unknown[:3]}")
    return LabelledData(
        name,
        "text",
        [readable(n) for n in raw],
        template or INTENT_TEMPLATE,
        _index(train, raw),
        _index(test, raw),
    )


def clinc150(root: str | None, split: str, template: str | None) -> LabelledData:
    files = read_clinc150(root, "clinc150", split, domains=False)
    train, test = ([(t, i) for t, i in pairs if i != "oos"] for pairs in (files.train, files.test))
    return _text_data("clinc150", train, test, template)


def dbpedia(root: str | None, split: str, template: str | None) -> LabelledData:
    """DBpedia's 14 topics from text4/dbpedia, with the text4 stream's cut (``dbpedia_splits``)."""
    train, test = dbpedia_splits(root, split)
    return _text_data("dbpedia", train, test, template or TOPIC_TEMPLATE)


def _split_file(folder: Path, split: str, names: dict[str, tuple[str, ...]]) -> Path:
    for candidate in names[split]:
        if (folder / candidate).exists():
            return folder / candidate
    wanted = " or ".join(names[split])
    raise UsageError(f"{folder} has no {wanted}; add it or set data.eval_split=test")


def banking77(root: str | None, split: str, template: str | None) -> LabelledData:
    path = data_folder(
        root, "banking77", "banking77", "train.csv and test.csv (columns text, category)"
    )
    files = {"train": ("train.csv",), "test": ("test.csv",), "val": ("val.csv", "valid.csv")}
    rows = {s: _read_banking(_split_file(path, s, files)) for s in ("train", split)}
    return _text_data("banking77", rows["train"], rows[split], template)


def _read_banking(path: Path) -> list[tuple[str, ...]]:
    return read_csv(path, ("text", "category"), "Banking77's files have these two")


def hwu64(root: str | None, split: str, template: str | None) -> LabelledData:
    holds = "train/ and test/ folders with seq.in and label files"
    path = data_folder(root, "hwu64", "hwu64", holds)
    folders = {"train": ("train",), "test": ("test",), "val": ("valid", "val", "dev")}
    rows = {s: _read_seq_in(_split_file(path, s, folders)) for s in ("train", split)}
    return _text_data("hwu64", rows["train"], rows[split], template)


def _read_seq_in(folder: Path) -> list[tuple[str, str]]:
    lines = {}
    for name in ("seq.in", "label"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder / name} not found; each split folder needs seq.in and label")
        lines[name] = read_text(folder / name).splitlines()
    texts, labels = lines["seq.in"], lines["label"]
    if len(texts) != len(labels):
        raise UsageError(
            f"{folder}: seq.in has {len(texts)} lines but label has {len(labels)}; "
            "they must match line by line"
        )
    return [(t.strip(), y.strip()) for t, y in zip(texts, labels, strict=True) if t.strip()]


RANDOM_CLASSES = ["apple", "bicycle", "cloud", "dog", "guitar", "house", "river", "tree"]


def random_images(root: str | None, split: str, template: str | None) -> LabelledData:
    """8 classes of random 32 x 32 images (8 train, 4 test each): mechanics only."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> list[Sample]:
        shape = (32, 32, 3)
        return [
            (rng.integers(0, 256, shape, dtype=np.uint8), c)
            for c in range(len(RANDOM_CLASSES))
            for _ in range(n)
        ]

    train, test = draw(8), draw(4)
    return LabelledData(
        "random-images", "image", RANDOM_CLASSES, template or "a photo of a {}.", train, test
    )


def coop_images(name: str, root: str | None, split: str, template: str | None) -> LabelledData:
    """A data set of the CoOp protocol (its split files) via ``load_coop``."""
    if name not in COOP_DATASETS:
        raise UsageError(
            f"unknown CoOp data set {name!r}; choose one of: {', '.join(COOP_DATASETS)}"
        )
    holds = "the CoOp data sets, one folder each as in CoOp's DATASETS.md"
    path = data_folder(root, f"coop:{name}", "", holds)
    images = load_coop(name, path)
    test = images.val if split == "val" else images.test
    return LabelledData(
        f"coop:{name}",
        "image",
        [readable(n) for n in images.classnames],
        template or images.template,
        [(str(p), y) for p, y in images.train],
        [(str(p), y) for p, y in test],
        seeded_order=False,
    )
