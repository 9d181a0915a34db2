from dataclasses import dataclass, field

from promptcl.tuners.edits import EditOptions

MASK_INITS = ("ones", "uniform")


@dataclass
class SoftTFConfig(EditOptions):
    mask_init: str = field(
        default="ones", metadata={"help": "Masks start as ones, or uniform in uniform_range."}
    )
    uniform_range: list[float] = field(
        default_factory=lambda: [0.99, 1.0], metadata={"help": "[a, b] of mask_init=uniform."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_init not in MASK_INITS:
            raise ValueError(f"mask_init must be one of {', '.join(MASK_INITS)}")
        if len(self.uniform_range) != 2 or self.uniform_range[0] > self.uniform_range[1]:
            raise ValueError("uniform_range must be [a, b] with a <= b")
