"""Run configuration: typed dataclasses filled from YAML files and ``--set key=value`` overrides.

OmegaConf does the merging and type checking, so ``--set train.mask_logits=false`` is a real
boolean and an unknown key is an error rather than a silently ignored typo.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from promptcl.engine import LOGGERS, PRECISIONS, STRATEGIES
from promptcl.errors import UsageError
from promptcl.files import read_text


def _check(ok: bool, message: str) -> None:
    """Config validation: a ValueError whose message names the key, the value and the fix."""
    if not ok:
        raise ValueError(message)


def _positive_or_null(value: int | None, key: str) -> None:
    _check(value is None or value >= 1, f"{key}={value} must be >= 1, or null for no limit")


@dataclass
class DataConfig:
    """Data keys of every command."""

    root: str | None = field(
        default=None,
        metadata={"help": "Folder holding one sub-folder per data set; $PROMPTCL_DATA."},
    )
    eval_split: str = field(
        default="test", metadata={"help": "'test', or 'val' to choose hyper-parameters."}
    )
    test_per_class: int | None = field(
        default=None, metadata={"help": "Keep at most this many test samples per class."}
    )
    max_length: int = field(default=64, metadata={"help": "Token cap for text inputs."})
    augment: bool = field(
        default=True, metadata={"help": "Images: random resized crop + flip in training."}
    )
    crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0], metadata={"help": "Images: RandomResizedCrop scale."}
    )
    hflip: bool = field(default=True, metadata={"help": "Images: random horizontal flips."})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes (decoding)."})

    def __post_init__(self) -> None:
        _check(
            self.eval_split in ("test", "val"),
            f"data.eval_split={self.eval_split!r}; use test, or val to choose settings",
        )
        _positive_or_null(self.test_per_class, "data.test_per_class")
        _check(self.max_length >= 3, f"data.max_length={self.max_length} must be >= 3")
        _check(self.workers >= 0, f"data.workers={self.workers} must be >= 0 (0: no workers)")
        low, high = (list(self.crop_scale) + [None, None])[:2]
        _check(
            len(self.crop_scale) == 2 and 0 < low <= high <= 1,
            f"data.crop_scale={list(self.crop_scale)} must be [low, high], 0 < low <= high <= 1",
        )


@dataclass
class StreamDataConfig(DataConfig):
    """Data keys of continual runs (task streams)."""

    train_per_class: int | None = field(
        default=None, metadata={"help": "Keep at most this many training samples per class."}
    )
    num_tasks: int | None = field(
        default=None, metadata={"help": "Tasks for benchmarks whose split is not fixed."}
    )
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

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_or_null(self.train_per_class, "data.train_per_class")
        _positive_or_null(self.num_tasks, "data.num_tasks")


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Training keys of every command."""

    epochs: int = field(default=5, metadata={"help": "Epochs per task (b2n: in all)."})
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 0.005
    optimizer: str = field(default="adam", metadata={"help": "adam or sgd (with momentum)."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    weight_decay: float = 0.0
    schedule: str = field(
        default="constant",
        metadata={"help": "constant, or cosine after warmup_epochs at warmup_lr (Dassl's)."},
    )
    warmup_epochs: int = field(default=0, metadata={"help": "cosine: epochs at warmup_lr first."})
    warmup_lr: float = 1e-5
    grad_clip: float | None = field(default=1.0, metadata={"help": "Max gradient norm; null: off."})
    precision: str = field(
        default="32-true",
        metadata={
            "help": "32-true, bf16-mixed, 16-mixed (CUDA), bf16-true (frozen backbone in bf16)."
        },
    )
    accelerator: str = field(default="auto", metadata={"help": "auto, cpu, cuda, mps, ..."})
    devices: Any = field(
        default=1, metadata={"help": "Devices per node: a count, -1 (all) or a list of indices."}
    )
    strategy: str = field(default="auto", metadata={"help": "auto, or ddp (several processes)."})
    num_nodes: int = field(default=1, metadata={"help": "Machines (torchrun / SLURM)."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the backbone's blocks."})
    logger: str = field(
        default="none", metadata={"help": "none, csv or tensorboard: curves under OUT/logs."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars on a terminal."})

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, f"train.epochs={self.epochs} must be >= 0")
        for key in ("batch_size", "eval_batch_size"):
            value = getattr(self, key)
            _check(value >= 1, f"train.{key}={value} must be >= 1")
        for key in ("lr", "warmup_lr", "weight_decay", "momentum"):
            value = getattr(self, key)
            _check(
                math.isfinite(value) and value >= 0,
                f"train.{key}={value} must be a finite number >= 0",
            )
        _check(self.lr > 0, f"train.lr={self.lr} must be > 0")
        _check(
            self.optimizer in OPTIMIZERS,
            f"train.optimizer={self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}",
        )
        _check(
            self.schedule in SCHEDULES,
            f"train.schedule={self.schedule!r}; choose one of: {', '.join(SCHEDULES)}",
        )
        _check(self.warmup_epochs >= 0, f"train.warmup_epochs={self.warmup_epochs} must be >= 0")
        _check(
            self.grad_clip is None or (math.isfinite(self.grad_clip) and self.grad_clip > 0),
            f"train.grad_clip={self.grad_clip} must be > 0, or null for no clipping",
        )
        for key, choices in (
            ("precision", PRECISIONS),
            ("strategy", STRATEGIES),
            ("logger", LOGGERS),
        ):
            value = getattr(self, key)
            _check(value in choices, f"train.{key}={value!r}; choose one of: {', '.join(choices)}")
        devices = self.devices
        _check(
            (isinstance(devices, int) and (devices >= 1 or devices == -1))
            or (
                isinstance(devices, list | tuple)
                and devices
                and all(isinstance(d, int) and d >= 0 for d in devices)
            ),
            f"train.devices={devices!r} must be a count >= 1, -1 (all) or a list of indices",
        )
        _check(self.num_nodes >= 1, f"train.num_nodes={self.num_nodes} must be >= 1")


@dataclass
class ContinualTrainConfig(TrainConfig):
    """Training keys of continual runs."""

    mask_logits: bool = field(
        default=True,
        metadata={"help": "In training, mask the logits of classes outside the current task."},
    )
    joint: bool = field(
        default=False, metadata={"help": "Train on all tasks at once (the upper bound)."}
    )


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
    data: StreamDataConfig = field(default_factory=StreamDataConfig)
    train: ContinualTrainConfig = field(default_factory=ContinualTrainConfig)
    tuner: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options of the chosen method (see its config)."}
    )


def tuner_options(method: str) -> type:
    """The options dataclass of a continual method."""
    from promptcl.tuners import get_tuner

    return get_tuner(method).config_class


# keys that may differ between a run and its resumption: they do not change results
RESUME_FREE_KEYS = (
    "data.root",
    "train.accelerator",
    "train.devices",
    "train.strategy",
    "train.num_nodes",
    "train.compile",
    "train.logger",
    "train.progress",
)


def _legacy(raw: Any) -> Any:
    """A config file of promptcl 0.1 (``train.device``) in today's keys."""
    train = raw.get("train") if isinstance(raw, dict | DictConfig) else None
    if isinstance(train, dict | DictConfig) and "device" in train:
        device = str(train.pop("device"))
        if device != "auto":
            kind, _, index = device.partition(":")
            train.setdefault("accelerator", kind)
            if index:
                train.setdefault("devices", [int(index)])
    return raw


def _without_run_keys(raw: DictConfig) -> DictConfig:
    """A run's config.json (also valid as --config) without the keys that describe the run
    rather than configure it: its kind and the promptcl version that wrote it."""
    for key in ("kind", "promptcl_version"):
        raw.pop(key, None)
    return raw


def _one_line(err: Exception) -> str:
    """The first line of an OmegaConf error, after the key it is about."""
    key = getattr(err, "full_key", None)
    line = str(err).splitlines()[0]
    return f"{key}: {line}" if key and not line.startswith("Key ") else line


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked;
    ``tuner`` holds every option of the chosen method, validated."""
    return load_structured(RunConfig, path, overrides, "run", tuner_options)


# keys whose default changed after runs were written without them: (dotted key, the value
# those runs used). A run's config.json that has the key's parent but not the key was made
# before it existed, so it resumes (and loads) with the old value, not today's default.
OLD_DEFAULTS = (("tuner.tii.classifier", "mlp"),)  # the default became lda with issue 16


def load_run_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A run directory's config.json read as that run was made (``OLD_DEFAULTS``), then
    ``overrides``."""
    raw = read_yaml(Path(path))
    filled = []
    for key, value in OLD_DEFAULTS:
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(raw, parent)
        if isinstance(node, DictConfig) and name not in node:
            filled.append(f"{key}={value}")
    return load_config(path, [*filled, *overrides])


def load_structured(
    schema: type,
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...],
    command: str,
    options_of: Callable[[str], type],
) -> Any:
    """Fill the dataclass ``schema`` (with ``method``, ``tuner`` and ``data.root`` keys) from its
    defaults, a YAML file and ``key=value`` overrides; ``command`` names the CLI command whose
    --help lists the keys; ``options_of(method)`` is the dataclass that checks ``tuner``."""
    cfg = OmegaConf.structured(schema)
    try:
        if path is not None:
            cfg = OmegaConf.merge(cfg, _legacy(_without_run_keys(read_yaml(resolve_config(path)))))
        for item in overrides:
            if "=" not in item:
                raise UsageError(f"--set {item!r} is not key=value; write e.g. --set train.lr=0.01")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        config = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, TypeError) as err:  # TypeError: a list merged into a dict
        raise UsageError(
            f"bad config: {_one_line(err)}; `promptcl {command} --help` lists keys"
        ) from None
    except ValueError as err:  # raised by a config's __post_init__
        raise UsageError(f"bad config: {err}") from None
    if config.data.root is None and os.environ.get("PROMPTCL_DATA"):
        config.data.root = os.environ["PROMPTCL_DATA"]
    options = build_dataclass(options_of(config.method), config.tuner, config.method)
    config.tuner = to_dict(options)
    check_finite(dataclasses.asdict(config))
    return config


SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the configs shipped with promptcl (``clinc150/hash``, ``b2n/clinc150/mpl``)."""
    paths = SHIPPED_CONFIGS.rglob("*.yaml")
    return sorted(p.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix() for p in paths)


def resolve_config(path: str | Path) -> Path:
    """The YAML file ``--config`` names: an existing file; else a shipped config named as
    ``clinc150/hash``, ``clinc150/hash.yaml`` or ``configs/clinc150/hash.yaml`` (the path in
    the repository before the configs moved into the package, so commands written that way
    work from any directory). Anything else is a one-line error saying where it looked."""
    given = Path(path)
    if given.is_file():
        return given
    looked = f"looked for {given.resolve()}"
    if not given.is_absolute():
        name = given.as_posix().removeprefix("./").removeprefix("configs/")
        shipped = SHIPPED_CONFIGS / (name if given.suffix == ".yaml" else f"{name}.yaml")
        if shipped.is_file():
            return shipped
        looked += f" and for the shipped {shipped}"
    raise UsageError(
        f"config file {path} not found ({looked}); pass an existing YAML file or a shipped "
        "config's name (`promptcl list` shows them)"
    )


def read_yaml(path: Path) -> DictConfig:
    """A YAML file of config keys, read safely (no Python tags); one-line errors."""
    text = read_text(path)
    try:  # OmegaConf's safe loader, with its cap on alias expansion
        cfg = OmegaConf.load(io.StringIO(text))
    except OSError:  # a lone number
        cfg = None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        if where and "\t" in (text.splitlines() + [""])[where.line]:
            at += ", a tab: YAML indents with spaces"
        problem = getattr(err, "problem", None) or _one_line(err)
        raise UsageError(f"config file {path} is not valid YAML ({problem}{at}); fix it") from None
    if not isinstance(cfg, DictConfig):
        raise UsageError(f"config file {path} must hold key: value lines; fix it")
    return cfg


def check_finite(config: dict[str, Any], prefix: str = "") -> None:
    """No number of any config is NaN or infinite (null switches a key off where it can be)."""
    for key, value in config.items():
        if isinstance(value, dict):
            check_finite(value, f"{prefix}{key}.")
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UsageError(f"bad config: {prefix}{key}={value} must be a finite number")


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
