from dataclasses import dataclass, field

from promptcl.tuners.firstsession import MODULES


@dataclass
class APERConfig:
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
    bottleneck: int = field(default=64, metadata={"help": "adapter: hidden size (ffn_num)."})
    adapter_scale: float = field(default=0.1, metadata={"help": "adapter: s of s * up(...)."})
    adapter_dropout: float = field(
        default=0.1, metadata={"help": "adapter: dropout on the hidden units in training."}
    )
    length: int = field(
        default=5, metadata={"help": "vpt: tokens per block (prompt_token_num); prefix: length."}
    )
    prompt_init: float = field(default=1.0, metadata={"help": "prefix: starts U(-a, a)."})

    def __post_init__(self) -> None:
        if self.module not in MODULES:
            raise ValueError(f"module must be one of {', '.join(MODULES)}, not {self.module}")
        if self.bottleneck < 1 or self.length < 1:
            raise ValueError("need bottleneck >= 1 and length >= 1")
        if not 0 <= self.adapter_dropout < 1:
            raise ValueError("adapter_dropout must be in [0, 1)")
