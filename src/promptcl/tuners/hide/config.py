from dataclasses import dataclass, field

from promptcl.taskid.tii import TIIOptions
from promptcl.tuners.align import TAPOptions
from promptcl.tuners.stages import check_head, head_option


@dataclass
class HiDeConfig:
    length: int = field(default=5, metadata={"help": "Prefix length of each task's prompt."})
    blocks: list[int] | None = field(
        default=None,
        metadata={"help": "Prefixed blocks (0-based); null: 0-4, or all of a shallower model."},
    )
    prompt_momentum: float = field(
        default=0.01,
        metadata={"help": "Task t's prompt mixes in this share of the old ones' mean."},
    )
    contrast_coeff: float = field(
        default=0.1, metadata={"help": "Weight of the contrastive term against old class means."}
    )
    contrast_temperature: float = 0.8
    head_lr_scale: float = field(
        default=1.0, metadata={"help": "Head learning rate relative to the prompts' (HiDe: 0.1)."}
    )
    prompt_init: float = field(default=1.0, metadata={"help": "Prompts start as U(-a, a)."})
    tii: TIIOptions = field(default_factory=TIIOptions)
    tap: TAPOptions | None = field(
        default_factory=TAPOptions, metadata={"help": "Head alignment after each task; null: off."}
    )
    head: str = head_option()

    def __post_init__(self) -> None:
        check_head(self.head)
        if self.length < 1 or not 0 <= self.prompt_momentum < 1:
            raise ValueError("need length >= 1 and 0 <= prompt_momentum < 1")
        if min(self.contrast_coeff, self.head_lr_scale, self.prompt_init) < 0:
            raise ValueError("contrast_coeff, head_lr_scale and prompt_init must be >= 0")
        if self.contrast_temperature <= 0:
            raise ValueError("contrast_temperature must be > 0")
