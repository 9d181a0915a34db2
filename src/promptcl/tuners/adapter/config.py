from dataclasses import dataclass, field

from promptcl.tuners.edits import EditOptions


@dataclass
class AdapterConfig(EditOptions):
    bottleneck: int = field(default=64, metadata={"help": "Hidden size of each adapter."})
    scale: float = field(default=1.0, metadata={"help": "s of y + s * up(relu(down(y)))."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bottleneck < 1:
            raise ValueError("bottleneck must be >= 1")
