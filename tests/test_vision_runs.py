"""A tiny random ViT runs every continual method end to end on real images."""

import json
from pathlib import Path

import pytest

from promptcl import load_config, run
from promptcl.core.checkpoint import load_checkpoint
from promptcl.data.vision import FASHION_MNIST_SYSTEM
from promptcl.tuners import TUNERS

# speed only, not size: HiDe's TII and TAP stages at one epoch (their defaults are 20-30)
FAST_STAGES = ["tuner.tii.epochs=1", "tuner.tii.align_epochs=1", "tuner.tap.epochs=1"]


def overrides(method, backbone="tiny-vit"):
    """Every method with its default options (block defaults follow the backbone's depth)."""
    fast = FAST_STAGES if method in ("hide", "norga", "hash") else []
    fast += ["tuner.dim=256"] if method == "ranpac" else []  # a 10000-wide projection is slow
    fast += ["tuner.align.epochs=1"] if method == "mos" else []  # MOS's head alignment (30)
    return [f"backbone={backbone}", f"method={method}", "train.epochs=1", "train.batch_size=16",
            "train.progress=false", "data.train_per_class=6", *fast]  # fmt: skip


@pytest.mark.parametrize("backbone", ["tiny-vit", "tiny-clip"])  # timm, and CLIP's image tower
@pytest.mark.parametrize("method", list(TUNERS))
def test_cifar10_mini(tmp_path, data_root, method, backbone):
    root = data_root / "cifar10-mini"
    config = load_config(
        None,
        [*overrides(method, backbone), "benchmark=imagefolder", f"data.root={root}",
         "data.num_tasks=2"],
    )  # fmt: skip
    metrics = run(config, tmp_path / "run")
    assert len(metrics["acc_matrix"]) == 2 and metrics["leaks_task_identity"] is False
    assert all(0 <= a <= 100 for row in metrics["acc_matrix"] for a in row if a is not None)
    order = json.loads((tmp_path / "run" / "class_order.json").read_text())
    assert sorted(c for task in order["tasks"] for c in task) == sorted(
        p.name for p in (root / "train").iterdir()
    )


fashion = pytest.mark.skipif(
    not Path(FASHION_MNIST_SYSTEM).is_dir(),
    reason="Fashion-MNIST is absent: apt-get install dataset-fashion-mnist (.ci/run does)",
)


@fashion
@pytest.mark.parametrize("method", list(TUNERS))
def test_fashion_mnist_two_tasks(tmp_path, method):
    config = load_config(
        None, [*overrides(method), "benchmark=fashion-mnist", "data.test_per_class=40"]
    )
    assert run(config, tmp_path / "run", stop_after=2) is None
    state = load_checkpoint(tmp_path / "run" / "checkpoint")[1]
    assert state.units_done == 2 and [len(row["acc"]) for row in state.log] == [1, 2]


def test_decoding_in_workers_gives_the_same_run(tmp_path, data_root):
    """Without augmentation nothing random happens in the workers: the runs agree exactly."""
    root = data_root / "cifar10-mini"
    base = [*overrides("ncm"), "benchmark=imagefolder", f"data.root={root}", "data.num_tasks=2",
            "data.augment=false"]  # fmt: skip
    inline = run(load_config(None, base), tmp_path / "a")
    workers = run(load_config(None, [*base, "data.workers=2"]), tmp_path / "b")
    assert inline["acc_matrix"] == workers["acc_matrix"]
