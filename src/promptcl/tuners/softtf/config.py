from dataclasses import dataclass, field

from promptcl.tuners.dualprompt.config import DualPromptConfig
from promptcl.tuners.l2p.config import L2PConfig

BASES = ("dualprompt", "l2p")
MASK_INITS = ("ones", "uniform")


@dataclass
class SoftTFConfig:
    base: str = field(
        default="dualprompt", metadata={"help": "Prompt method under the masks: dualprompt, l2p."}
    )
    dualprompt: DualPromptConfig = field(
        default_factory=DualPromptConfig, metadata={"help": "Options of the dualprompt base."}
    )
    l2p: L2PConfig = field(default_factory=L2PConfig, metadata={"help": "Options of the l2p base."})
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks whose linears are masked; null: the last 3."}
    )
    mlp: bool = field(
        default=False, metadata={"help": "Also mask the MLP's fc1 and fc2 (else attention only)."}
    )
    mask_init: str = field(
        default="ones", metadata={"help": "Masks start as ones, or uniform in uniform_range."}
    )
    uniform_range: list[float] = field(
        default_factory=lambda: [0.99, 1.0], metadata={"help": "[a, b] of mask_init=uniform."}
    )
    key_pull_coeff: float = field(
        default=1.0,
        metadata={"help": "base l2p: weight of the loss pulling the task key to its queries."},
    )

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)}")
        if self.mask_init not in MASK_INITS:
            raise ValueError(f"mask_init must be one of {', '.join(MASK_INITS)}")
        if len(self.uniform_range) != 2 or self.uniform_range[0] > self.uniform_range[1]:
            raise ValueError("uniform_range must be [a, b] with a <= b")
