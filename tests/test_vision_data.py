"""Image benchmarks (real cifar10-mini and Fashion-MNIST, fake CIFAR-100 / CUB / ImageNet-R /
Tiny ImageNet layouts) and the ImageProcessor."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from promptcl.config import StreamDataConfig
from promptcl.data import split_into_tasks, vision
from promptcl.data.vision import (
    FASHION_MNIST_SYSTEM,
    ImageProcessor,
    cifar100,
    cub200,
    fashion_mnist,
    image_folder,
    imagenet_r,
    list_image_folder,
    load_image,
    tinyimagenet,
)
from promptcl.errors import UsageError

DATA_CONFIG = {
    "input_size": (3, 16, 16),
    "interpolation": "bicubic",
    "mean": (0.5, 0.4, 0.3),
    "std": (0.2, 0.25, 0.5),
    "crop_pct": 0.9,
}


def check_tasks(stream, num_tasks: int) -> None:
    """Tasks partition the classes in id order, and every label belongs to a task."""
    assert stream.num_tasks == num_tasks
    flat = [c for task in stream.tasks for c in task]
    assert flat == list(range(stream.num_classes))
    assert set(stream.train.labels) == set(stream.test.labels) == set(flat)


def write_png(path, value=(10, 20, 30), size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, value).save(path)


# ---- imagefolder on the shared cifar10-mini ------------------------------------------------


def test_imagefolder_cifar10_mini(data_root):
    cfg = StreamDataConfig(root=str(data_root / "cifar10-mini"))
    stream = image_folder(cfg, seed=0)
    check_tasks(stream, 5)
    assert stream.num_classes == 10
    assert len(stream.train) == 1000 and len(stream.test) == 500
    assert all(len(t) == 2 for t in stream.tasks)
    for split, per_class in ((stream.train, 100), (stream.test, 50)):
        assert np.bincount(split.labels).tolist() == [per_class] * 10
    # labels agree with the folders the files come from
    for path, label in zip(stream.train.items, stream.train.labels, strict=True):
        assert os.path.basename(os.path.dirname(path)) == stream.class_names[label]

    again = image_folder(cfg, seed=0)
    assert again.class_names == stream.class_names and again.train.items == stream.train.items
    assert image_folder(cfg, seed=1).class_names != stream.class_names
    assert image_folder(StreamDataConfig(root=cfg.root, num_tasks=10), 0).num_tasks == 10

    capped = image_folder(StreamDataConfig(root=cfg.root, train_per_class=7), seed=0)
    assert np.bincount(capped.train.labels).tolist() == [7] * 10

    val = image_folder(StreamDataConfig(root=cfg.root, eval_split="val"), seed=0)
    assert len(val.train) == 900 and len(val.test) == 100
    assert not set(val.train.items) & set(val.test.items)
    assert set(val.test.items) <= set(stream.train.items)


def test_list_image_folder_filters_extensions(tmp_path):
    for name in ("a.JPG", "b.png", "c.Jpeg", "d.webp", "e.bmp", ".hidden.png", "deeper/f.PNG"):
        write_png(tmp_path / "cls" / name)
    (tmp_path / "cls" / "notes.txt").write_text("not an image")
    (tmp_path / ".git").mkdir()
    found = list_image_folder(tmp_path)
    assert list(found) == ["cls"]
    names = [os.path.relpath(p, tmp_path / "cls") for p in found["cls"]]
    assert names == ["a.JPG", "b.png", "c.Jpeg", "d.webp", "deeper/f.PNG", "e.bmp"]


# ---- CIFAR-100 (fake python-version files) -------------------------------------------------


def fake_names() -> list[str]:
    # label i has a name that sorts in reverse, so label order and name order differ
    return [f"class{99 - i:02d}" for i in range(100)]


def write_cifar(folder, per_class=(2, 1)) -> None:
    """Python-version CIFAR-100 files; every pixel of an image of label y has red value y."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in zip(("train", "test"), per_class, strict=True):
        labels = [y for y in range(100) for _ in range(n)]
        data = np.zeros((len(labels), 3, 32, 32), np.uint8)
        data[:, 0] = np.array(labels, np.uint8)[:, None, None]
        batch = {b"data": data.reshape(len(labels), 3072), b"fine_labels": labels}
        (folder / part).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [n.encode() for n in fake_names()]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar100_label_order_and_images(tmp_path):
    write_cifar(tmp_path / "cifar100")
    stream = cifar100(StreamDataConfig(root=str(tmp_path)), seed=0)
    check_tasks(stream, 10)
    assert stream.class_names == fake_names()  # seed 0: CIFAR-100's own label order 0..99
    assert [len(t) for t in stream.tasks] == [10] * 10
    assert len(stream.train) == 200 and len(stream.test) == 100
    for split in (stream.train, stream.test):
        for image, label in zip(split.items, split.labels, strict=True):
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
            assert (image[..., 0] == fake_names().index(stream.class_names[label])).all()

    shuffled = cifar100(StreamDataConfig(root=str(tmp_path), num_tasks=20), seed=1)
    check_tasks(shuffled, 20)
    assert [len(t) for t in shuffled.tasks] == [5] * 20
    expected = split_into_tasks(fake_names(), 20, 1)
    assert [[shuffled.class_names[c] for c in t] for t in shuffled.tasks] == expected


def test_cifar100_in_its_tarball_folder(tmp_path):
    write_cifar(tmp_path / "cifar100" / "cifar-100-python", per_class=(1, 1))
    assert len(cifar100(StreamDataConfig(root=str(tmp_path)), seed=0).train) == 100


def test_cifar100_refuses_arbitrary_pickles(tmp_path):
    write_cifar(tmp_path / "cifar100", per_class=(1, 1))
    (tmp_path / "cifar100" / "meta").write_bytes(pickle.dumps({b"x": os.getcwd}, protocol=2))
    with pytest.raises(UsageError, match="not a CIFAR-100 python-version file"):
        cifar100(StreamDataConfig(root=str(tmp_path)), seed=0)


# ---- folder data sets in their official layouts (fake, tiny PNGs) --------------------------


def test_imagenet_r_fixed_split(tmp_path):
    for w in range(3):
        for i in range(5):
            write_png(tmp_path / "imagenet-r" / f"n0{w}" / f"{i}.jpg")
    (tmp_path / "imagenet-r" / "README.txt").write_text("ImageNet-R")
    cfg = StreamDataConfig(root=str(tmp_path), num_tasks=3)
    stream = imagenet_r(cfg, seed=0)
    check_tasks(stream, 3)
    assert np.bincount(stream.train.labels).tolist() == [4, 4, 4]
    assert np.bincount(stream.test.labels).tolist() == [1, 1, 1]
    assert not set(stream.train.items) & set(stream.test.items)
    other = imagenet_r(cfg, seed=5)  # the train/test split does not follow the run seed
    assert set(other.test.items) == set(stream.test.items)


def test_cub200_official_layout(tmp_path):
    root = tmp_path / "cub200" / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split = [], [], []
    for c, name in enumerate(classes, 1):
        for i in range(3):
            image_id = len(images) + 1
            rel = f"{name}/{name.split('.')[1]}_{i}.jpg"
            write_png(root / "images" / rel)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(i < 2)}")
    for file, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("classes.txt", [f"{c} {n}" for c, n in enumerate(classes, 1)]),
    ):
        (root / file).write_text("\n".join(lines) + "\n")
    stream = cub200(StreamDataConfig(root=str(tmp_path), num_tasks=3), seed=0)
    check_tasks(stream, 3)
    assert sorted(stream.class_names) == [c.split(".")[1] for c in classes]
    assert len(stream.train) == 6 and len(stream.test) == 3
    for path, label in zip(stream.test.items, stream.test.labels, strict=True):
        assert path.endswith("_2.jpg") and stream.class_names[label] in path


def test_tinyimagenet_official_layout(tmp_path):
    root = tmp_path / "tinyimagenet" / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577", "n01644900"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rows = []
    for k, w in enumerate(wnids):
        for i in range(3):
            write_png(root / "train" / w / "images" / f"{w}_{i}.JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("boxes")
        write_png(root / "val" / "images" / f"val_{k}.JPEG")
        rows.append(f"val_{k}.JPEG\t{w}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    stream = tinyimagenet(StreamDataConfig(root=str(tmp_path), num_tasks=2), seed=0)
    check_tasks(stream, 2)
    assert sorted(stream.class_names) == wnids
    assert len(stream.train) == 12 and len(stream.test) == 4
    for path, label in zip(stream.test.items, stream.test.labels, strict=True):
        assert path.endswith(f"val_{wnids.index(stream.class_names[label])}.JPEG")


# ---- Fashion-MNIST -------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, magic_type: int = 0x08) -> None:
    head = bytes((0, 0, magic_type, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


def write_fake_fashion(folder, per_class=2) -> None:
    for part in ("train", "t10k"):
        labels = np.repeat(np.arange(10), per_class)
        images = np.broadcast_to(labels[:, None, None], (len(labels), 28, 28))
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", np.ascontiguousarray(images))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)


def test_fashion_mnist_system_package():
    if not FASHION_MNIST_SYSTEM.is_dir():
        pytest.skip(f"{FASHION_MNIST_SYSTEM} missing: apt-get install dataset-fashion-mnist")
    stream = fashion_mnist(StreamDataConfig(), seed=0)
    check_tasks(stream, 5)
    assert sorted(stream.class_names) == sorted(vision.FASHION_MNIST_CLASSES)
    assert all(len(t) == 2 for t in stream.tasks)
    assert len(stream.train) == 60000 and len(stream.test) == 10000
    assert stream.train.items[0].shape == (28, 28) and stream.train.items[0].dtype == np.uint8
    pixels = ImageProcessor(DATA_CONFIG, train=False).collate(stream.test.items[:2])
    assert pixels["pixel_values"].shape == (2, 3, 16, 16)


def test_fashion_mnist_from_data_root(tmp_path):
    write_fake_fashion(tmp_path / "fashion-mnist")
    stream = fashion_mnist(StreamDataConfig(root=str(tmp_path)), seed=3)
    check_tasks(stream, 5)
    assert len(stream.train) == 20 and len(stream.test) == 20
    for image, label in zip(stream.train.items, stream.train.labels, strict=True):
        assert (image == vision.FASHION_MNIST_CLASSES.index(stream.class_names[label])).all()


def test_fashion_mnist_bad_idx(tmp_path):
    folder = tmp_path / "fashion-mnist"
    write_fake_fashion(folder)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((20, 28, 28)), magic_type=0x0D)
    with pytest.raises(UsageError, match="not an IDX file"):
        fashion_mnist(StreamDataConfig(root=str(tmp_path)), seed=0)
    write_fake_fashion(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(UsageError, match="cannot be read"):
        fashion_mnist(StreamDataConfig(root=str(tmp_path)), seed=0)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes((0, 0, 8, 1)) + struct.pack(">I", 99) + bytes(3))
    with pytest.raises(UsageError, match="truncated"):
        fashion_mnist(StreamDataConfig(root=str(tmp_path)), seed=0)


# ---- missing data --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "folder", "hint"),
    [
        (cifar100, "cifar100", "cifar-100-python.tar.gz"),
        (imagenet_r, "imagenet-r", "imagenet-r.tar"),
        (cub200, "cub200/CUB_200_2011", "images.txt"),
        (tinyimagenet, "tinyimagenet/tiny-imagenet-200", "wnids.txt"),
        (image_folder, "", "train/<class>/"),
    ],
)
def test_missing_data_is_one_line(tmp_path, builder, folder, hint):
    with pytest.raises(UsageError) as err:
        builder(StreamDataConfig(root=str(tmp_path)), 0)
    message = str(err.value)
    assert "\n" not in message and hint in message
    assert f"not found under {tmp_path / folder if folder else tmp_path}:" in message
    with pytest.raises(UsageError, match="data.root"):
        builder(StreamDataConfig(), 0)


def test_missing_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "FASHION_MNIST_SYSTEM", tmp_path / "nowhere")
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist") as err:
        fashion_mnist(StreamDataConfig(root=str(tmp_path)), 0)
    assert "\n" not in str(err.value) and str(tmp_path / "fashion-mnist") in str(err.value)


def test_cifar100_missing_meta(tmp_path):
    write_cifar(tmp_path / "cifar100", per_class=(1, 1))
    (tmp_path / "cifar100" / "meta").unlink()
    with pytest.raises(UsageError, match="train, test and meta"):
        cifar100(StreamDataConfig(root=str(tmp_path)), 0)


# ---- ImageProcessor ------------------------------------------------------------------------


def expected_constant(rgb) -> torch.Tensor:
    mean, std = torch.tensor(DATA_CONFIG["mean"]), torch.tensor(DATA_CONFIG["std"])
    return ((torch.tensor(rgb) / 255 - mean) / std)[:, None, None].expand(3, 16, 16)


@pytest.mark.parametrize("train", [False, True])
def test_processor_normalises_a_constant_image(tmp_path, train):
    rgb = (255, 0, 128)
    write_png(tmp_path / "c.png", rgb, size=(40, 30))
    array = np.empty((24, 20, 3), np.uint8)
    array[:] = rgb
    processor = ImageProcessor(DATA_CONFIG, train=train)
    assert processor.augments is train
    assert processor.prepare([str(tmp_path / "c.png"), array]) == [str(tmp_path / "c.png"), array]
    out = processor.collate([str(tmp_path / "c.png"), array])["pixel_values"]
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert type(out) is torch.Tensor
    torch.testing.assert_close(out, expected_constant(rgb).expand(2, 3, 16, 16))


def test_processor_gray_to_rgb():
    gray = np.full((28, 28), 51, np.uint8)
    out = ImageProcessor(DATA_CONFIG, train=False).load(gray)
    torch.testing.assert_close(out, expected_constant((51, 51, 51)))


def test_train_augments_test_is_deterministic():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    train, test = ImageProcessor(DATA_CONFIG, True), ImageProcessor(DATA_CONFIG, False)
    torch.manual_seed(0)
    assert not torch.equal(train.load(image), train.load(image))
    assert torch.equal(test.load(image), test.load(image))
    still = ImageProcessor(DATA_CONFIG, True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    assert torch.equal(still.load(image), still.load(image))


@pytest.mark.parametrize("shape", [(40, 30, 3), (23, 57, 3), (16, 16)])
def test_eval_transform_is_timms(shape):
    """Test images are timm's eval transform of them (the short side resized to
    floor(16 / 0.9) = 17, the centre 16 x 16 cropped); only the conversion to float rounds
    differently (x * (1/255) here, x / 255 in timm's ToTensor)."""
    from timm.data import create_transform

    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    timm_eval = create_transform(**DATA_CONFIG, is_training=False)
    ours = ImageProcessor(DATA_CONFIG, train=False).load(image)
    torch.testing.assert_close(ours, timm_eval(load_image(image)), rtol=0, atol=1e-6)


def test_train_transform_is_a_random_crop_and_flip():
    """At scale 1/4 and ratio 1 a 32 px image gives a 16 px window of it, at a random place and
    flipped or not, drawn from torch's generator (the run's seed)."""
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    processor = ImageProcessor(DATA_CONFIG, True, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    mean, std = (torch.tensor(DATA_CONFIG[k])[:, None, None] for k in ("mean", "std"))
    windows = {
        (i, j, flip): np.ascontiguousarray(w[:, ::-1] if flip else w)
        for i in range(17)
        for j in range(17)
        for flip in (False, True)
        for w in [image[i : i + 16, j : j + 16]]
    }
    torch.manual_seed(0)
    seen = []
    for _ in range(12):
        pixels = ((processor.load(image) * std + mean) * 255).round().byte().permute(1, 2, 0)
        seen += [key for key, w in windows.items() if np.array_equal(w, pixels.numpy())]
    assert len(seen) == 12  # every output is one window of the image
    assert len({key[:2] for key in seen}) > 1 and {key[2] for key in seen} == {False, True}
    torch.manual_seed(0)
    again = ((processor.load(image) * std + mean) * 255).round().byte().permute(1, 2, 0)
    assert np.array_equal(again.numpy(), windows[seen[0]])


def test_processor_pickles_and_runs_in_workers():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(4)]
    processor = ImageProcessor(DATA_CONFIG, train=False)
    copy = pickle.loads(pickle.dumps(processor))
    torch.testing.assert_close(copy.collate(images), processor.collate(images))
    loader = torch.utils.data.DataLoader(
        images, batch_size=2, num_workers=2, collate_fn=processor.collate
    )
    batches = [b["pixel_values"] for b in loader]
    torch.testing.assert_close(torch.cat(batches), processor.collate(images)["pixel_values"])
