"""Base-to-novel run configuration: the shared data and training keys plus b2n's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptcl.config import DataConfig, TrainConfig, load_structured


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
        if self.shots is not None and self.shots < 1:
            raise ValueError(f"shots={self.shots} must be >= 1 (or null for all)")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise ValueError(f"logit_scale={self.logit_scale} must be > 0 (or null)")


def method_options(method: str) -> type:
    """The options dataclass of a dual-encoder method."""
    from promptcl.dual.methods import get_method

    return get_method(method)[0]


def load_b2n_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> B2NConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type checked."""
    return load_structured(B2NConfig, path, overrides, "b2n", method_options)
