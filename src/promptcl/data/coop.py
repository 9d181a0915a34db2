"""The 11 image data sets of CoOp's protocol (Zhou et al., "Learning to Prompt for
Vision-Language Models", IJCV 2022), read from a local root in the layout of CoOp's DATASETS.md.

``root`` holds one folder per data set with CoOp's names (``imagenet/``, ``caltech-101/``,
``oxford_pets/``, ``stanford_cars/``, ``oxford_flowers/``, ``food-101/``, ``fgvc_aircraft/``,
``sun397/``, ``dtd/``, ``eurosat/``, ``ucf101/``). Nine read CoOp's fixed ``split_zhou_*.json``;
FGVC-Aircraft reads its own ``images_variant_{train,val,test}.txt``; ImageNet lists
``images/train`` and ``images/val`` and uses val as both val and test, as CoOp does.

Class names are those of the split files (label = index), with underscores turned into spaces
as CoOp's prompt learners do before tokenising; ``template`` is CoOp's CUSTOM_TEMPLATES entry.
Base-to-novel evaluation (CoCoOp) keeps the first ceil(n/2) label ids as base classes
(``promptcl.data.labelled.base_novel`` over the label order).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from promptcl.errors import UsageError
from promptcl.files import read_text

Samples = list[tuple[Path, int]]

COOP_DATASETS = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)  # fmt: skip


@dataclass
class LabelledImages:
    classnames: list[str]  # index = label
    train: Samples
    val: Samples
    test: Samples
    template: str  # CoOp's prompt for the data set; format it with a class name

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


@dataclass(frozen=True)
class _Spec:
    folder: str  # under root, as in CoOp's DATASETS.md
    images: str  # image folder inside ``folder``; split-file paths are relative to it
    split: str | None  # CoOp's split_zhou_*.json, or None for a data set read otherwise
    template: str  # CUSTOM_TEMPLATES in CoOp's trainers/zsclip.py
    hint: str  # what the folder holds


_SPECS = {
    "imagenet": _Spec(
        "imagenet", "images", None, "a photo of a {}.",
        "images/train/ and images/val/ (each with the 1,000 wnid folders like n01440764/) "
        "and classnames.txt",
    ),
    "caltech101": _Spec(
        "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "a photo of a {}.",
        "101_ObjectCategories/ and split_zhou_Caltech101.json",
    ),
    "oxford_pets": _Spec(
        "oxford_pets", "images", "split_zhou_OxfordPets.json", "a photo of a {}, a type of pet.",
        "images/ and split_zhou_OxfordPets.json",
    ),
    "stanford_cars": _Spec(
        "stanford_cars", "", "split_zhou_StanfordCars.json", "a photo of a {}.",
        "cars_train/, cars_test/ and split_zhou_StanfordCars.json",
    ),
    "oxford_flowers": _Spec(
        "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
        "a photo of a {}, a type of flower.", "jpg/ and split_zhou_OxfordFlowers.json",
    ),
    "food101": _Spec(
        "food-101", "images", "split_zhou_Food101.json", "a photo of {}, a type of food.",
        "images/ and split_zhou_Food101.json",
    ),
    "fgvc_aircraft": _Spec(
        "fgvc_aircraft", "images", None, "a photo of a {}, a type of aircraft.",
        "the data/ folder of fgvc-aircraft-2013b.tar.gz (images/, variants.txt, "
        "images_variant_{train,val,test}.txt)",
    ),
    "sun397": _Spec(
        "sun397", "SUN397", "split_zhou_SUN397.json", "a photo of a {}.",
        "SUN397/ and split_zhou_SUN397.json",
    ),
    "dtd": _Spec(
        "dtd", "images", "split_zhou_DescribableTextures.json", "{} texture.",
        "images/ and split_zhou_DescribableTextures.json",
    ),
    "eurosat": _Spec(
        "eurosat", "2750", "split_zhou_EuroSAT.json", "a centered satellite photo of {}.",
        "2750/ and split_zhou_EuroSAT.json",
    ),
    "ucf101": _Spec(
        "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "a photo of a person doing {}.",
        "UCF-101-midframes/ and split_zhou_UCF101.json",
    ),
}  # fmt: skip


def load_coop(name: str, root: Path | str) -> LabelledImages:
    """Data set ``name`` (one of COOP_DATASETS) from ``root/<CoOp folder>``, all classes and
    all samples; images are not opened (only the first of each split is checked to exist)."""
    if name not in _SPECS:
        raise UsageError(
            f"unknown CoOp data set {name!r}; choose one of {', '.join(COOP_DATASETS)}"
        )
    spec = _SPECS[name]
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(
            f"CoOp data root {root} does not exist: pass the folder that holds {spec.folder}/ "
            "(and the other data sets) in the layout of CoOp's DATASETS.md"
        )
    folder = root / spec.folder
    if not folder.is_dir():
        raise _missing(name, folder)
    if name == "imagenet":
        classnames, train, val, test = _imagenet(folder)
    elif name == "fgvc_aircraft":
        classnames, train, val, test = _fgvc_aircraft(folder)
    else:
        classnames, train, val, test = _zhou_split(name, folder)
    for split in (train, val, test):
        if split and not split[0][0].is_file():
            raise _missing(name, split[0][0])
    names = [c.replace("_", " ") for c in classnames]
    return LabelledImages(names, train, val, test, spec.template)


def _missing(name: str, path: Path) -> UsageError:
    spec = _SPECS[name]
    return UsageError(
        f"{path} not found: {name} needs {spec.hint} in {spec.folder}/ under the data root "
        "(layout of CoOp's DATASETS.md)"
    )


def _malformed(name: str, path: Path, why: str) -> UsageError:
    return UsageError(
        f"{path} is malformed ({why}); replace it with {name}'s original {path.name} "
        "(see CoOp's DATASETS.md)"
    )


def _zhou_split(name: str, folder: Path) -> tuple[list[str], Samples, Samples, Samples]:
    """CoOp's split file: {"train"|"val"|"test": [[path relative to the image folder, label,
    class name], ...]}; class names are taken from train, as Dassl's DatasetBase does."""
    spec = _SPECS[name]
    path, images = folder / spec.split, folder / spec.images
    if not path.is_file():
        raise _missing(name, path)
    if not images.is_dir():
        raise _missing(name, images)
    try:
        split = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise _malformed(name, path, f"not JSON: {err}") from None
    if not isinstance(split, dict) or not all(isinstance(split.get(k), list) for k in _PARTS):
        raise _malformed(name, path, "expected lists under 'train', 'val' and 'test'")
    names: dict[int, str] = {}
    parts = []
    for part in _PARTS:
        samples = []
        for n, row in enumerate(split[part]):
            if not _is_row(row):
                raise _malformed(name, path, f"{part}[{n}] is not [image path, label, class name]")
            rel, label, classname = row
            if part == "train" and names.setdefault(label, classname) != classname:
                raise _malformed(
                    name, path, f"label {label} is both {names[label]!r} and {classname!r}"
                )
            samples.append((images / rel, label))
        parts.append(samples)
    classnames = _dense(names, lambda why: _malformed(name, path, why))
    for part, samples in zip(_PARTS, parts, strict=True):
        bad = next((y for _, y in samples if y >= len(classnames)), None)
        if bad is not None:
            raise _malformed(name, path, f"{part} has label {bad}, absent from train")
    return classnames, *parts


_PARTS = ("train", "val", "test")


def _is_row(row: object) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 3
        and isinstance(row[0], str)
        and isinstance(row[1], int)
        and not isinstance(row[1], bool)
        and row[1] >= 0
        and isinstance(row[2], str)
    )


def _dense(names: dict[int, str], error: Callable[[str], UsageError]) -> list[str]:
    """Class names by label, which must run 0..n-1 (Dassl counts max label + 1 classes)."""
    if not names:
        raise error("train is empty")
    gaps = [y for y in range(max(names) + 1) if y not in names]
    if gaps:
        raise error(f"no train sample of label {gaps[0]}")
    return [names[y] for y in range(len(names))]


def _fgvc_aircraft(folder: Path) -> tuple[list[str], Samples, Samples, Samples]:
    """variants.txt (one class per line, label = line index) and images_variant_<part>.txt
    lines ``<image id> <variant>``, the image being images/<image id>.jpg."""
    files = ["variants.txt", *(f"images_variant_{p}.txt" for p in _PARTS), "images"]
    for f in files:
        if not (folder / f).exists():
            raise _missing("fgvc_aircraft", folder / f)
    variants = [v.strip() for v in _lines(folder / "variants.txt") if v.strip()]
    label = {v: i for i, v in enumerate(variants)}
    parts = []
    for part in _PARTS:
        path = folder / f"images_variant_{part}.txt"
        samples = []
        for n, line in enumerate(_lines(path), 1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            if variant not in label:
                why = f"line {n}: variant {variant!r} is not in variants.txt"
                raise _malformed("fgvc_aircraft", path, why)
            samples.append((folder / "images" / f"{image_id}.jpg", label[variant]))
        parts.append(samples)
    return variants, *parts


def _imagenet(folder: Path) -> tuple[list[str], Samples, Samples, Samples]:
    """classnames.txt lines ``<wnid> <class name>``; labels follow the sorted wnid folders of
    images/train; images/val (in the same wnid folders) is the val and the test set."""
    path = folder / "classnames.txt"
    for p in (path, folder / "images" / "train", folder / "images" / "val"):
        if not p.exists():
            raise _missing("imagenet", p)
    names = {}
    for n, line in enumerate(_lines(path), 1):
        if line.strip():
            wnid, _, classname = line.strip().partition(" ")
            if not classname:
                raise _malformed("imagenet", path, f"line {n} is not '<wnid> <class name>'")
            names[wnid] = classname
    wnids = _subfolders(folder / "images" / "train")
    if not wnids:
        raise _missing("imagenet", folder / "images" / "train" / "n01440764")
    absent = next((w for w in wnids if w not in names), None)
    if absent is not None:
        raise _malformed("imagenet", path, f"no class name for {absent}")
    label = {w: i for i, w in enumerate(wnids)}
    train = _list_classes(folder / "images" / "train", wnids, label)
    val_dir = folder / "images" / "val"
    val_wnids = _subfolders(val_dir)
    if not val_wnids:
        raise UsageError(
            f"{val_dir} has no wnid folders: sort the validation images into one folder per "
            "class, as in images/train (layout of CoOp's DATASETS.md)"
        )
    stray = next((w for w in val_wnids if w not in label), None)
    if stray is not None:
        raise UsageError(f"{val_dir / stray} is not a class of images/train; remove it")
    test = _list_classes(val_dir, val_wnids, label)
    return [names[w] for w in wnids], train, list(test), test


def _subfolders(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _list_classes(path: Path, wnids: list[str], label: dict[str, int]) -> Samples:
    """The files (not hidden, sorted) of the class folders ``path/<wnid>``."""
    samples = []
    for wnid in wnids:
        with os.scandir(path / wnid) as it:
            files = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
        samples += [(path / wnid / f, label[wnid]) for f in files]
    return samples


def _lines(path: Path) -> list[str]:
    return read_text(path).splitlines()
