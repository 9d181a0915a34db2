"""Image benchmarks read from a local data root (never downloaded), and the image processor.

A Split's items are either an image file path (str, decoded lazily) or a uint8 numpy array of
shape (H, W) or (H, W, 3) held in memory (CIFAR-100, Fashion-MNIST); ``predict`` also passes
PIL images. ``ImageProcessor`` turns
either into a normalised tensor; it is picklable, so decoding can run in DataLoader workers.
"""

from __future__ import annotations

import gzip
import math
import pickle
import random
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from promptcl.config import StreamDataConfig
from promptcl.data.files import data_folder, missing
from promptcl.data.stream import (
    TaskStream,
    build_stream,
    cut_into_tasks,
    evaluation_pairs,
    split_into_tasks,
)
from promptcl.errors import UsageError
from promptcl.files import read_text

ImageItem = str | np.ndarray | Image.Image  # a PIL image: predict's inputs
Pairs = list[tuple[ImageItem, str]]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FASHION_MNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_HINTS = {
    "cifar100": "the python-version files train, test and meta (from cifar-100-python.tar.gz)",
    "imagenet-r": "the 200 class folders <wnid>/*.jpg (from imagenet-r.tar)",
    "cub200": "CUB_200_2011/ with images.txt, image_class_labels.txt, train_test_split.txt, "
    "classes.txt and images/ (from CUB_200_2011.tgz)",
    "tinyimagenet": "tiny-imagenet-200/ with wnids.txt, train/ and val/ "
    "(from tiny-imagenet-200.zip)",
    "fashion-mnist": "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "
    f"(or run apt-get install dataset-fashion-mnist, which puts them in {FASHION_MNIST_SYSTEM})",
    "imagefolder": "train/<class>/ and test/<class>/ folders of image files",
}


def _missing(name: str, path: Path) -> UsageError:
    return missing(name, path, _HINTS[name])


def list_image_folder(folder: Path) -> dict[str, list[str]]:
    """Class sub-folders of ``folder`` (sorted) -> their image files, searched recursively and
    sorted; hidden entries are skipped and extensions matched case-insensitively."""
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = (p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        found[sub.name] = sorted(str(p) for p in files if not p.name.startswith("."))
    return found


def _pairs(by_class: Mapping[str, list[str]]) -> Pairs:
    return [(path, label) for label, paths in by_class.items() for path in paths]


def _stream(
    name: str, cfg: StreamDataConfig, seed: int, train: Pairs, test: Pairs, tasks: list[list[str]]
) -> TaskStream:
    """build_stream on the test split, or with data.eval_split=val on a fixed held-out share
    (VAL_FRACTION, at least one sample) of each class's training data."""
    train, test = evaluation_pairs(train, cfg.eval_split, lambda: test, name)
    return build_stream(
        name, train, test, tasks, cfg.train_per_class, seed, "image", cfg.test_per_class
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds only plain containers and numpy arrays (the CIFAR python-version format)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A CIFAR python-version file (a pickled dict; a third-party data format, never ours)."""
    try:
        with path.open("rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:
        raise UsageError(
            f"{path} is not a CIFAR-100 python-version file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); replace it with the original"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a CIFAR-100 python-version file; replace it")
    return data


def _cifar_pairs(path: Path, names: list[str]) -> Pairs:
    d = _unpickle(path)
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [names[int(y)] for y in d[b"fine_labels"]]
    except (KeyError, ValueError, TypeError, IndexError):
        raise UsageError(f"{path} lacks 32x32 images with fine labels; replace it") from None
    if len(labels) != len(data):
        raise UsageError(f"{path} has {len(data)} images but {len(labels)} labels; replace it")
    images = np.ascontiguousarray(data.transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
    return list(zip(images, labels, strict=True))


def cifar100(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """CIFAR-100 from ``root/cifar100/{train,test,meta}`` (or its cifar-100-python/ folder),
    cfg.num_tasks tasks (default 10; 20 gives tasks of 5 classes).

    Class order: seed 0 keeps CIFAR-100's own label order 0..99 (alphabetical fine-label
    names), as the public L2P / DualPrompt PyTorch code does by default (``shuffle=False``,
    matching the original JAX code); any other seed permutes with ``random.Random(seed)``.
    """
    root = data_folder(cfg.root, "cifar100", "cifar100", _HINTS["cifar100"])
    if not (root / "meta").is_file() and (root / "cifar-100-python").is_dir():
        root = root / "cifar-100-python"
    if not all((root / f).is_file() for f in ("train", "test", "meta")):
        raise _missing("cifar100", root)
    meta = _unpickle(root / "meta")
    try:
        names = [n.decode() for n in meta[b"fine_label_names"]]
    except (KeyError, AttributeError, TypeError):
        raise UsageError(f"{root / 'meta'} lacks fine_label_names; replace it") from None
    train, test = _cifar_pairs(root / "train", names), _cifar_pairs(root / "test", names)
    n = cfg.num_tasks or 10
    tasks = cut_into_tasks(names, n) if seed == 0 else split_into_tasks(names, n, seed)
    return _stream("cifar100", cfg, seed, train, test, tasks)


def imagenet_r(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """ImageNet-R from ``root/imagenet-r/<wnid>/*.jpg``: 200 classes, 80% train / 20% test of
    each class in a fixed split (random.Random(0), not the run seed), 10 seeded tasks."""
    root = data_folder(cfg.root, "imagenet-r", "imagenet-r", _HINTS["imagenet-r"])
    by_class = list_image_folder(root)
    if not any(by_class.values()):
        raise _missing("imagenet-r", root)
    rng = random.Random(0)
    train, test = [], []
    for label, paths in by_class.items():
        paths = list(paths)
        rng.shuffle(paths)
        cut = min(len(paths) - 1, max(1, round(0.8 * len(paths))))
        train += [(p, label) for p in paths[:cut]]
        test += [(p, label) for p in paths[cut:]]
    tasks = split_into_tasks(list(by_class), cfg.num_tasks or 10, seed)
    return _stream("imagenet-r", cfg, seed, train, test, tasks)


def _table(path: Path) -> dict[str, str]:
    """A whitespace-separated two-column file (``id value``) as a dict."""
    rows = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise UsageError(f"{path} line {n} is not 'id value'; replace the file")
            rows[parts[0]] = parts[1].strip()
    return rows


def cub200(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """CUB-200-2011 in its official layout under ``root/cub200/CUB_200_2011``, with its own
    train/test split; class names without the number prefix; 10 seeded tasks."""
    files = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    root = data_folder(
        cfg.root, "cub200", "cub200/CUB_200_2011", _HINTS["cub200"], (*files, "images")
    )
    paths, labels, is_train, classes = (_table(root / f) for f in files)
    names = {cid: name.split(".", 1)[-1] for cid, name in classes.items()}
    train, test = [], []
    for image_id, rel in paths.items():
        if image_id not in labels or image_id not in is_train or labels[image_id] not in names:
            raise UsageError(f"{root}: image {image_id} lacks a class or split; check the files")
        pair = (str(root / "images" / rel), names[labels[image_id]])
        (train if is_train[image_id] == "1" else test).append(pair)
    tasks = split_into_tasks(sorted(set(names.values())), cfg.num_tasks or 10, seed)
    return _stream("cub200", cfg, seed, train, test, tasks)


def tinyimagenet(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """Tiny ImageNet (200 wnids) in its official layout under ``root/tinyimagenet/
    tiny-imagenet-200``; its val split (50 per class) is the test set; 10 seeded tasks."""
    files = ("wnids.txt", "train", "val/val_annotations.txt", "val/images")
    folder = "tinyimagenet/tiny-imagenet-200"
    root = data_folder(cfg.root, "tinyimagenet", folder, _HINTS["tinyimagenet"], files)
    wnids = read_text(root / "wnids.txt").split()
    by_class = list_image_folder(root / "train")
    train = [(p, w) for w in wnids for p in by_class.get(w, [])]
    test = []
    annotations = read_text(root / "val" / "val_annotations.txt").splitlines()
    for n, line in enumerate(annotations, 1):
        if line.strip():
            parts = line.split("\t")
            if len(parts) < 2:
                raise UsageError(f"{root}/val/val_annotations.txt line {n} is not tab-separated")
            test.append((str(root / "val" / "images" / parts[0]), parts[1]))
    tasks = split_into_tasks(wnids, cfg.num_tasks or 10, seed)
    return _stream("tinyimagenet", cfg, seed, train, test, tasks)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed if the name ends in .gz) with ``ndim``
    dimensions, as a numpy array; anything else is a UsageError."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise UsageError(f"{path} cannot be read ({err}); replace it with the original") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:4] != bytes((0, 0, 0x08, ndim)):
        raise UsageError(f"{path} is not an IDX file of {ndim}-d unsigned bytes; replace it")
    shape = struct.unpack(f">{ndim}I", raw[4:head])
    if len(raw) - head != math.prod(shape):
        raise UsageError(f"{path} is truncated: expected {math.prod(shape)} values; replace it")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def fashion_mnist(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """Fashion-MNIST from the IDX files in ``root/fashion-mnist`` or, failing that, where the
    Debian package dataset-fashion-mnist puts them; 28x28 gray images; 5 seeded tasks of 2."""
    local = Path(cfg.root).expanduser() / "fashion-mnist" if cfg.root is not None else None
    folder = local if local is not None and local.is_dir() else FASHION_MNIST_SYSTEM
    if not folder.is_dir():
        raise _missing("fashion-mnist", local or FASHION_MNIST_SYSTEM)
    splits = []
    for part in ("train", "t10k"):
        names = (f"{part}-images-idx3-ubyte.gz", f"{part}-labels-idx1-ubyte.gz")
        if not all((folder / f).is_file() for f in names):
            raise _missing("fashion-mnist", folder)
        images, labels = read_idx(folder / names[0], 3), read_idx(folder / names[1], 1)
        if len(images) != len(labels) or (labels.size and labels.max() >= 10):
            raise UsageError(f"{folder}: {part} images and labels do not match; replace them")
        names = [FASHION_MNIST_CLASSES[y] for y in labels.tolist()]
        splits.append(list(zip(images, names, strict=True)))  # images: (N, 28, 28) views
    tasks = split_into_tasks(FASHION_MNIST_CLASSES, cfg.num_tasks or 5, seed)
    return _stream("fashion-mnist", cfg, seed, splits[0], splits[1], tasks)


def image_folder(cfg: StreamDataConfig, seed: int) -> TaskStream:
    """Your images: data.root holds train/<class>/ and test/<class>/ image files; the classes of
    train/ are split into data.num_tasks seeded tasks (default 5)."""
    root = data_folder(cfg.root, "imagefolder", "", _HINTS["imagefolder"], ("train", "test"))
    by_class = list_image_folder(root / "train")
    if not any(by_class.values()):
        raise _missing("imagefolder", root)
    train, test = _pairs(by_class), _pairs(list_image_folder(root / "test"))
    tasks = split_into_tasks(list(by_class), cfg.num_tasks or 5, seed)
    return _stream("imagefolder", cfg, seed, train, test, tasks)


def load_image(item: ImageItem) -> Image.Image:
    """An RGB PIL image from a file path, a uint8 array or a PIL image (gray ones made RGB)."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        return Image.fromarray(item).convert("RGB")
    with Image.open(item) as img:
        return img.convert("RGB")


class ImageProcessor:
    """Decodes images lazily and turns them into normalised tensors, timm-style.

    Training: RandomResizedCrop(input_size, scale, ratio) and (with ``hflip``) a random
    horizontal flip. Test: Resize(floor(size / crop_pct)) then CenterCrop(size). Both then
    scale to [0, 1] and normalise with the data config's mean and std. ``data_config`` is
    ``timm.data.resolve_data_config({}, model=model)``. ``augments`` tells the continual protocol
    whether a sample's features change between calls (then they cannot be cached).

    Not ``timm.data.create_transform``: its crops draw from Python's ``random``, which runs do
    not seed (these draw from torch's generator); for square sizes its test images equal these
    up to float rounding (tests/test_vision_data.py).
    """

    def __init__(
        self,
        data_config: Mapping[str, Any],
        train: bool,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = True,
    ) -> None:
        _, h, w = data_config["input_size"]
        mode = T.InterpolationMode(data_config.get("interpolation", "bilinear"))
        if train:
            steps = [T.RandomResizedCrop((h, w), scale=scale, ratio=ratio, interpolation=mode)]
            steps += [T.RandomHorizontalFlip()] if hflip else []
        else:
            crop_pct = data_config.get("crop_pct", 0.875)
            size = [math.floor(h / crop_pct), math.floor(w / crop_pct)]
            size = size[0] if h == w else size  # square: the shorter side, keeping the aspect
            steps = [T.Resize(size, interpolation=mode), T.CenterCrop((h, w))]
        self.augments = train
        self.transform = T.Compose(
            [
                *steps,
                T.ToImage(),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(list(data_config["mean"]), list(data_config["std"])),
            ]
        )

    def prepare(self, items: list[ImageItem]) -> list[ImageItem]:
        """Nothing to do up front: images are decoded per batch."""
        return list(items)

    def load(self, item: ImageItem) -> torch.Tensor:
        """One image as a float tensor (3, H, W)."""
        return self.transform(load_image(item)).as_subclass(torch.Tensor)

    def collate(self, items: list[ImageItem]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self.load(item) for item in items])}  # (B, 3, H, W)

    def length(self, item: ImageItem) -> int:
        """Every image fills the same positions (no padding)."""
        return 0
