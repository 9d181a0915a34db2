"""Base-to-novel run configuration: YAML plus ``--set key=value``, as for continual runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcl.config import load_structured


@dataclass
class B2NDataConfig:
    root: str | None = field(
        default=None,
        metadata={"help": "Folder holding one sub-folder per data set; $PROMPTCL_DATA."},
    )
    eval_split: str = field(
        default="test", metadata={"help": "'test', or 'val' to choose hyper-parameters."}
    )
    template: str | None = field(
        default=None,
        metadata={"help": "Class text with {} for the name; null: the data set's own."},
    )
    all_classes: bool = field(
        default=False,
        metadata={"help": "Train and test on all classes (a cross-dataset source); no novel half."},
    )
    test_per_class: int | None = field(
        default=None, metadata={"help": "Keep at most this many evaluation samples per class."}
    )
    max_length: int = field(default=64, metadata={"help": "Token cap for utterances."})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes (decoding)."})

    def __post_init__(self) -> None:
        if self.eval_split not in ("test", "val"):
            raise ValueError(f"data.eval_split={self.eval_split!r}; use test or val")


@dataclass
class B2NTrainConfig:
    epochs: int = 5
    batch_size: int = 4
    eval_batch_size: int = 128
    lr: float = field(default=0.0035, metadata={"help": "SGD learning rate (MaPLe / MPL)."})
    momentum: float = 0.9
    weight_decay: float = field(default=5e-4, metadata={"help": "Dassl's default."})
    warmup_epochs: int = field(
        default=1, metadata={"help": "Epochs at warmup_lr before the cosine schedule."}
    )
    warmup_lr: float = 1e-5
    grad_clip: float | None = field(
        default=None, metadata={"help": "Max gradient norm; null: off."}
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', ..."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars on a terminal."})

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("train.epochs must be >= 0 and batch sizes >= 1")


@dataclass
class B2NConfig:
    method: str = "mpl"
    benchmark: str = "clinc150"
    backbone: str = field(
        default="minilm-l6",
        metadata={"help": "minilm-l6, tiny-bert, tiny-clip, hf:DIR (text-text), clip:DIR_OR_ID."},
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
    train: B2NTrainConfig = field(default_factory=B2NTrainConfig)
    tuner: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options of the chosen method (see its config)."}
    )

    def __post_init__(self) -> None:
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"shots={self.shots} must be >= 1 (or null for all)")


def load_b2n_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> B2NConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked."""
    return load_structured(B2NConfig, path, overrides, "b2n")
