from dataclasses import dataclass, field

from promptcl.tuners.edits import EditOptions


@dataclass
class LoRAConfig(EditOptions):
    rank: int = field(default=8, metadata={"help": "r: rank of each task's update B A."})
    alpha: float = field(default=16.0, metadata={"help": "The update is scaled by alpha / r."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError("rank must be >= 1")
