from dataclasses import dataclass, field

from promptcl.tuners.adaptformer import AdapterOptions
from promptcl.tuners.firstsession import MODULES


@dataclass
class APERConfig(AdapterOptions):
    module: str = field(
        default="adapter",
        metadata={
            "help": "Module adapted on the first task: adapter (AdaptFormer beside each MLP), "
            "vpt (prompt tokens; every block: VPT-Deep, blocks=[0]: VPT-Shallow) or prefix."
        },
    )
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Adapted blocks; null: every block (prefix: 0-4)."}
    )
    length: int = field(
        default=5, metadata={"help": "vpt: tokens per block (prompt_token_num); prefix: length."}
    )
    prompt_init: float = field(default=1.0, metadata={"help": "prefix: starts U(-a, a)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.module not in MODULES:
            raise ValueError(f"module must be one of {', '.join(MODULES)}, not {self.module}")
        if self.length < 1:
            raise ValueError("length must be >= 1")
