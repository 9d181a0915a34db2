"""CoOp's 11 data sets on fake trees in CoOp's DATASETS.md layout: split files, class names,
templates, base/novel classes, few-shot draws and the messages for missing or bad files."""

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from promptcl.data.coop import (
    COOP_DATASETS,
    load_coop,
)
from promptcl.errors import UsageError

# name -> (folder, image folder, split file, template), copied by hand from CoOp's datasets/*.py
# and CUSTOM_TEMPLATES (trainers/zsclip.py)
ZHOU = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "Caltech101", "a photo of a {}."),
    "oxford_pets": ("oxford_pets", "images", "OxfordPets", "a photo of a {}, a type of pet."),
    "stanford_cars": ("stanford_cars", "", "StanfordCars", "a photo of a {}."),
    "oxford_flowers": (
        "oxford_flowers", "jpg", "OxfordFlowers", "a photo of a {}, a type of flower."
    ),
    "food101": ("food-101", "images", "Food101", "a photo of {}, a type of food."),
    "sun397": ("sun397", "SUN397", "SUN397", "a photo of a {}."),
    "dtd": ("dtd", "images", "DescribableTextures", "{} texture."),
    "eurosat": ("eurosat", "2750", "EuroSAT", "a centered satellite photo of {}."),
    "ucf101": ("ucf101", "UCF-101-midframes", "UCF101", "a photo of a person doing {}."),
}  # fmt: skip


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 60)).save(path)


def zhou_tree(root: Path, name: str, split: dict | None = None) -> Path:
    """A split_zhou data set: 3 classes, 2 train / 1 val / 1 test image each."""
    folder, images, stem, _ = ZHOU[name]
    names = ["american_bulldog", "abyssinian", "Apply_Eye_Makeup"]
    if split is None:
        split = {"train": [], "val": [], "test": []}
        for y, c in enumerate(names):
            for part, count in (("train", 2), ("val", 1), ("test", 1)):
                for i in range(count):
                    split[part].append([f"{c}/{part}_{i}.jpg", y, c])
    for rows in split.values():
        for rel, *_ in rows:
            image(root / folder / images / rel)
    (root / folder / images).mkdir(parents=True, exist_ok=True)
    path = root / folder / f"split_zhou_{stem}.json"
    path.write_text(json.dumps(split))
    return path


def test_dataset_names():
    assert COOP_DATASETS == (
        "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
        "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
    )  # fmt: skip


def test_oxford_pets(tmp_path):
    zhou_tree(tmp_path, "oxford_pets")
    data = load_coop("oxford_pets", tmp_path)
    assert data.classnames == ["american bulldog", "abyssinian", "Apply Eye Makeup"]
    assert data.template == "a photo of a {}, a type of pet."
    assert data.template.format(data.classnames[1]) == "a photo of a abyssinian, a type of pet."
    images = tmp_path / "oxford_pets" / "images"
    assert data.train[:2] == [
        (images / "american_bulldog/train_0.jpg", 0),
        (images / "american_bulldog/train_1.jpg", 0),
    ]
    assert [y for _, y in data.train] == [0, 0, 1, 1, 2, 2]
    assert data.val == [(images / f"{c}/val_0.jpg", y) for y, c in enumerate(
        ["american_bulldog", "abyssinian", "Apply_Eye_Makeup"])]  # fmt: skip
    assert [y for _, y in data.test] == [0, 1, 2]
    assert all(p.is_file() for p, _ in data.train + data.val + data.test)


@pytest.mark.parametrize("name", sorted(ZHOU))
def test_split_zhou_layouts(tmp_path, name):
    zhou_tree(tmp_path, name)
    folder, images, _, template = ZHOU[name]
    data = load_coop(name, tmp_path)
    assert data.template == template
    assert data.num_classes == 3
    assert data.test[0][0] == tmp_path / folder / images / "american_bulldog/test_0.jpg"


def test_class_names_come_from_train(tmp_path):
    split = {
        "train": [["b.jpg", 1, "sea_lake"], ["a.jpg", 0, "Annual Crop Land"]],
        "val": [],
        "test": [["c.jpg", 1, "ignored name"]],
    }
    zhou_tree(tmp_path, "eurosat", split)
    data = load_coop("eurosat", tmp_path)
    assert data.classnames == ["Annual Crop Land", "sea lake"]
    assert data.val == []


def fgvc_tree(root: Path) -> Path:
    folder = root / "fgvc_aircraft"
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("707-320\nA300B4\nF-16A/B\n")
    rows = {
        "train": ["1025794 707-320", "1340192 A300B4", "0056978 F-16A/B", "0062102 F-16A/B"],
        "val": ["2001 707-320", "2002 A300B4", "2003 F-16A/B"],
        "test": ["3001 F-16A/B", "3002 707-320"],
    }
    for part, lines in rows.items():
        (folder / f"images_variant_{part}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            image(folder / "images" / f"{line.split()[0]}.jpg")
    return folder


def test_fgvc_aircraft(tmp_path):
    folder = fgvc_tree(tmp_path)
    data = load_coop("fgvc_aircraft", tmp_path)
    assert data.classnames == ["707-320", "A300B4", "F-16A/B"]
    assert data.template == "a photo of a {}, a type of aircraft."
    assert data.train[0] == (folder / "images" / "1025794.jpg", 0)
    assert [y for _, y in data.train] == [0, 1, 2, 2]
    assert [y for _, y in data.val] == [0, 1, 2]
    assert data.test == [(folder / "images" / "3001.jpg", 2), (folder / "images" / "3002.jpg", 0)]


def test_fgvc_aircraft_errors(tmp_path):
    folder = fgvc_tree(tmp_path)
    (folder / "images_variant_val.txt").write_text("2001 Boeing 999\n")
    with pytest.raises(UsageError, match=r"images_variant_val.txt is malformed \(line 1: variant"):
        load_coop("fgvc_aircraft", tmp_path)
    (folder / "variants.txt").unlink()
    with pytest.raises(UsageError, match=r"variants.txt not found: fgvc_aircraft needs the data/"):
        load_coop("fgvc_aircraft", tmp_path)


def imagenet_tree(root: Path) -> Path:
    folder = root / "imagenet"
    folder.mkdir(parents=True)
    (folder / "classnames.txt").write_text(
        "n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n"
    )
    for wnid in ("n01484850", "n01440764", "n01443537"):  # created out of order
        for i in range(3):
            image(folder / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        image(folder / "images" / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG")
    (folder / "images" / "train" / "n01440764" / ".DS_Store").write_text("")
    return folder


def test_imagenet(tmp_path):
    folder = imagenet_tree(tmp_path)
    data = load_coop("imagenet", tmp_path)
    assert data.classnames == ["tench", "goldfish", "great white shark"]
    assert data.template == "a photo of a {}."
    train = folder / "images" / "train"
    assert data.train[:3] == [(train / "n01440764" / f"n01440764_{i}.JPEG", 0) for i in range(3)]
    assert Counter(y for _, y in data.train) == {0: 3, 1: 3, 2: 3}
    val = folder / "images" / "val"
    assert data.test == [(val / w / f"ILSVRC2012_val_{w}.JPEG", y) for y, w in enumerate(
        ["n01440764", "n01443537", "n01484850"])]  # fmt: skip
    assert data.val == data.test  # CoOp evaluates on ImageNet's val set


def test_imagenet_errors(tmp_path):
    folder = imagenet_tree(tmp_path)
    (folder / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    with pytest.raises(UsageError, match=r"classnames.txt is malformed \(no class name for n0148"):
        load_coop("imagenet", tmp_path)
    (folder / "classnames.txt").unlink()
    with pytest.raises(UsageError, match=r"imagenet/classnames.txt not found: imagenet needs"):
        load_coop("imagenet", tmp_path)


def test_imagenet_flat_val(tmp_path):
    folder = imagenet_tree(tmp_path)
    for wnid_dir in list((folder / "images" / "val").iterdir()):
        for f in wnid_dir.iterdir():
            f.rename(folder / "images" / "val" / f.name)
        wnid_dir.rmdir()
    with pytest.raises(UsageError, match=r"val has no wnid folders: sort the validation images"):
        load_coop("imagenet", tmp_path)


def test_missing_root_folder_and_split(tmp_path):
    with pytest.raises(UsageError, match=r"data root .*nowhere does not exist: .*DATASETS.md"):
        load_coop("dtd", tmp_path / "nowhere")
    with pytest.raises(UsageError, match=r"dtd not found: dtd needs images/ and split_zhou_Desc"):
        load_coop("dtd", tmp_path)
    path = zhou_tree(tmp_path, "oxford_pets")
    path.unlink()
    pattern = r"split_zhou_OxfordPets.json not found: oxford_pets needs images/ and split_zhou_O"
    with pytest.raises(UsageError, match=pattern):
        load_coop("oxford_pets", tmp_path)


def test_missing_images(tmp_path):
    zhou_tree(tmp_path, "food101")
    (tmp_path / "food-101" / "images" / "american_bulldog" / "train_0.jpg").unlink()
    with pytest.raises(UsageError, match=r"train_0.jpg not found: food101 needs images/"):
        load_coop("food101", tmp_path)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not JSON"),
        ('{"train": [], "val": []}', "expected lists under 'train', 'val' and 'test'"),
        ('{"train": [["a.jpg", "0", "cat"]], "val": [], "test": []}', r"train\[0\] is not"),
        ('{"train": [["a.jpg", 1, "cat"]], "val": [], "test": []}', "no train sample of label 0"),
        ('{"train": [], "val": [], "test": []}', "train is empty"),
        ('{"train": [["a.jpg", 0, "c"]], "val": [], "test": [["b.jpg", 1, "d"]]}', "test has"),
        ('{"train": [["a.jpg", 0, "c"], ["b.jpg", 0, "d"]], "val": [], "test": []}', "both"),
    ],
)
def test_malformed_split(tmp_path, content, why):
    path = zhou_tree(tmp_path, "ucf101")
    path.write_text(content)
    with pytest.raises(UsageError, match=rf"split_zhou_UCF101.json is malformed \(.*{why}"):
        load_coop("ucf101", tmp_path)


def test_unknown_name(tmp_path):
    with pytest.raises(UsageError, match=r"unknown CoOp data set 'pets'; choose one of imagenet, "):
        load_coop("pets", tmp_path)
