"""Run configuration: typed dataclasses filled from YAML files and ``--set key=value`` overrides.

OmegaConf does the merging and type checking, so ``--set train.mask_logits=false`` is a real
boolean and an unknown key is an error rather than a silently ignored typo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from promptcl.errors import UsageError


@dataclass
class DataConfig:
    root: str | None = field(
        default=None,
        metadata={"help": "Folder holding one sub-folder per data set; $PROMPTCL_DATA."},
    )
    train_per_class: int | None = field(
        default=None, metadata={"help": "Keep at most this many training samples per class."}
    )
    test_per_class: int | None = field(
        default=None, metadata={"help": "Keep at most this many test samples per class."}
    )
    eval_split: str = field(
        default="test", metadata={"help": "'test', or 'val' to choose hyper-parameters."}
    )
    num_tasks: int | None = field(
        default=None, metadata={"help": "Tasks for benchmarks whose split is not fixed."}
    )
    max_length: int = field(default=64, metadata={"help": "Token cap for text inputs."})
    order: int = field(
        default=4, metadata={"help": "text4: data-set order 4-7 of Soft-TF's table 2 (no Yahoo)."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "text-csv / text-jsonl: training file."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "text-csv / text-jsonl: test file."}
    )
    text_column: str = "text"
    label_column: str = "label"
    augment: bool = field(
        default=True, metadata={"help": "Images: random resized crop + flip in training."}
    )
    crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0], metadata={"help": "Images: RandomResizedCrop scale."}
    )
    hflip: bool = field(default=True, metadata={"help": "Images: random horizontal flips."})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes (decoding)."})


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 0.005
    weight_decay: float = 0.0
    grad_clip: float | None = field(default=1.0, metadata={"help": "Max gradient norm; null: off."})
    mask_logits: bool = field(
        default=True,
        metadata={"help": "In training, mask the logits of classes outside the current task."},
    )
    joint: bool = field(
        default=False, metadata={"help": "Train on all tasks at once (the upper bound)."}
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', ..."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars on a terminal."})


@dataclass
class RunConfig:
    method: str = "hash"
    benchmark: str = "builtin-intents"
    backbone: str = "minilm-l6"
    backbone_weights: str | None = field(
        default=None,
        metadata={"help": "timm backbones: a local weights file, or 'random' (speed tests)."},
    )
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tuner: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options of the chosen method (see its config)."}
    )


# keys that may differ between a run and its resumption: they do not change results
RESUME_FREE_KEYS = ("data.root", "train.device", "train.progress")


def _one_line(err: OmegaConfBaseException) -> str:
    return str(err).splitlines()[0]


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked."""
    return load_structured(RunConfig, path, overrides, "run")


def load_structured(
    schema: type, path: str | Path | None, overrides: list[str] | tuple[str, ...], command: str
) -> Any:
    """Fill the dataclass ``schema`` (with a ``data.root`` key) from its defaults, a YAML file
    and ``key=value`` overrides; ``command`` names the CLI command whose --help lists the keys."""
    cfg = OmegaConf.structured(schema)
    try:
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise UsageError(f"config file {path} not found; pass an existing YAML file")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        for item in overrides:
            if "=" not in item:
                raise UsageError(f"--set {item!r} is not key=value; write e.g. --set train.lr=0.01")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise UsageError(
            f"bad config: {_one_line(err)}; `promptcl {command} --help` lists keys"
        ) from None
    try:
        config = OmegaConf.to_object(cfg)
    except ValueError as err:  # raised by a config's __post_init__
        raise UsageError(f"bad config: {err}") from None
    if config.data.root is None and os.environ.get("PROMPTCL_DATA"):
        config.data.root = os.environ["PROMPTCL_DATA"]
    return config


def build_dataclass(cls: type, options: dict[str, Any], where: str) -> Any:
    """Fill the dataclass ``cls`` from a dict, rejecting unknown keys and wrong types."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(dict(options)))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise UsageError(f"bad {where} option: {_one_line(err)}") from None
    except ValueError as err:  # raised by a config's __post_init__
        raise UsageError(f"bad {where} option: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(a) | set(b))
    diffs = []
    for key in keys:
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += config_differences(va, vb, f"{name}.")
        elif va != vb and name not in RESUME_FREE_KEYS:
            diffs.append(name)
    return diffs
