import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/data beside the repository (as in CI), or $PROMPTCL_DATA."""
    root = Path(os.environ.get("PROMPTCL_DATA", REPO.parent / "shared" / "data"))
    if not (root / "clinc150" / "data_full.json").is_file():
        pytest.skip(f"no CLINC150 under {root}; set PROMPTCL_DATA to the shared data folder")
    return root


def tiny_inputs(backbone, n: int = 4, length: int = 7, seed: int = 0) -> dict:
    """Random inputs for a tiny backbone: token ids with one padded row, or 32 px images."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if backbone.modality == "text":
        ids = torch.randint(1000, 2000, (n, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, length - 2 :] = 0
        return {"input_ids": ids, "attention_mask": mask}
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=g)}


def trained_tuner(backbone_name: str, method: str, options: dict, tasks: int = 1):
    """A tuner on a fresh tiny backbone after ``tasks`` tasks of 3 classes (6 in all), its
    trained tensors moved away from their start (masks away from 1)."""
    import torch

    from promptcl.backbones import build_backbone
    from promptcl.config import build_dataclass
    from promptcl.tuners import get_tuner

    cls, backbone = get_tuner(method), build_backbone(backbone_name)
    torch.manual_seed(0)
    tuner = cls(build_dataclass(cls.config_class, options, method), backbone, 6)
    for task in range(tasks):
        tuner.begin_task(task, [3 * task, 3 * task + 1, 3 * task + 2])
    with torch.no_grad():
        for p in tuner.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape))
    return tuner
