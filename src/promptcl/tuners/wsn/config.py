from dataclasses import dataclass, field

from promptcl.tuners.edits import EditOptions


@dataclass
class WSNConfig(EditOptions):
    keep: float = field(
        default=0.9,
        metadata={"help": "c: share of each weight kept by the binary mask (paper: 0.80-0.95)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep <= 1:
            raise ValueError("keep must be in (0, 1]")
