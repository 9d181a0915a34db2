"""The config schema of both commands: typed dataclasses with defaults, help texts and checks.

``run`` reads a ``RunConfig``, ``b2n`` a ``B2NConfig``; both share ``DataConfig`` and
``TrainConfig``. A method's own options (the ``tuner`` key) are checked against the method's
dataclass, which the protocol looks up in its registry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from promptcl.engine import PRECISIONS, STRATEGIES
from promptcl.loggers import LOGGERS


def _check(ok: bool, message: str) -> None:
    """Config validation: a ValueError whose message names the key, the value and the fix."""
    if not ok:
        raise ValueError(message)


SEED_LIMIT = 2**32  # numpy's seeds; torch's generators take task_seed(seed, t) of these too


def _check_seed(seed: int) -> None:
    _check(0 <= seed < SEED_LIMIT, f"seed={seed} must be from 0 to {SEED_LIMIT - 1}")


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
QUERY_PRECISIONS = ("same", "bf16")
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
        default="none",
        metadata={
            "help": "none, csv, tensorboard, wandb or mlflow: curves, config and final figures "
            "(csv, tensorboard, wandb: under OUT/logs; mlflow: $MLFLOW_TRACKING_URI, else there)."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars on a terminal."})
    checkpoint_every: int | None = field(
        default=None,
        metadata={
            "help": "Also checkpoint every N optimisation steps within a task (b2n: an epoch), "
            "so --resume continues mid-task; null: at task ends only."
        },
    )

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, f"train.epochs={self.epochs} must be >= 0")
        _check(
            self.checkpoint_every is None or self.checkpoint_every >= 1,
            f"train.checkpoint_every={self.checkpoint_every} must be >= 1, or null for "
            "checkpoints at task ends only",
        )
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
    query_precision: str = field(
        default="same",
        metadata={
            "help": "The frozen query pass that names the task (DualPrompt, L2P, HiDe, Hash, "
            "CODA, Soft-TF's Prompt ID): same (train.precision's) or bf16 (under bf16 "
            "autocast, also when training is fp32)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.query_precision in QUERY_PRECISIONS,
            f"train.query_precision={self.query_precision!r}; choose one of: "
            + ", ".join(QUERY_PRECISIONS),
        )


NAME_HELP = (
    "What metrics.json calls these settings; null: the --config file's name (a shipped "
    "config's, e.g. clinc150/hash-contrast)."
)


@dataclass
class RunConfig:
    method: str = "hash"
    name: str | None = field(default=None, metadata={"help": NAME_HELP})
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

    def __post_init__(self) -> None:
        _check_seed(self.seed)


@dataclass
class B2NDataConfig(DataConfig):
    template: str | None = field(
        default=None,
        metadata={"help": "Class text with {} for the name; null: the data set's own."},
    )
    all_classes: bool = field(
        default=False,
        metadata={"help": "Train and test on all classes (a cross-dataset source); no novel half."},
    )


def b2n_training() -> TrainConfig:
    """MaPLe's and MPL's base-to-novel recipe (Dassl): SGD 0.0035 with momentum, weight decay
    5e-4, one warmup epoch at 1e-5 then cosine, batch 4, no clipping."""
    return TrainConfig(
        batch_size=4,
        lr=0.0035,
        optimizer="sgd",
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=1,
        grad_clip=None,
    )


@dataclass
class B2NConfig:
    method: str = "mpl"
    name: str | None = field(default=None, metadata={"help": NAME_HELP})
    benchmark: str = "clinc150"
    backbone: str = field(
        default="minilm-l6",
        metadata={"help": "Any text backbone (both sides), tiny-clip or clip:DIR_OR_ID."},
    )
    seed: int = 0
    shots: int | None = field(
        default=16, metadata={"help": "Training samples per base class; null: all."}
    )
    logit_scale: float | None = field(
        default=None,
        metadata={
            "help": "Scale of the cosine scores; null: CLIP's learned one, 20 for text pairs."
        },
    )
    transfer: list[str] = field(
        default_factory=list,
        metadata={"help": "Benchmarks evaluated zero-shot (all their classes) after training."},
    )
    data: B2NDataConfig = field(default_factory=B2NDataConfig)
    train: TrainConfig = field(default_factory=b2n_training)
    tuner: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options of the chosen method (see its config)."}
    )

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"shots={self.shots} must be >= 1 (or null for all)")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise ValueError(f"logit_scale={self.logit_scale} must be > 0 (or null)")
