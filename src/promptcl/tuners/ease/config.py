from dataclasses import dataclass, field


@dataclass
class EASEConfig:
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks with a per-task adapter; null: every block."}
    )
    bottleneck: int = field(default=64, metadata={"help": "Adapter hidden size (ffn_num)."})
    adapter_scale: float = field(default=0.1, metadata={"help": "s of s * up(...)."})
    adapter_dropout: float = field(
        default=0.1, metadata={"help": "Dropout on the adapter's hidden units in training."}
    )
    reweight: bool = field(
        default=True,
        metadata={
            "help": "Subspace reweighting (use_reweight): a class's own subspace scores with "
            "weight 1, the others with alpha / (T - 1); false: cosine of the concatenation."
        },
    )
    alpha: float = field(default=0.1, metadata={"help": "reweight: alpha (EASE's code: 0.1)."})
    recalc_sim: bool = field(
        default=True,
        metadata={
            "help": "Re-synthesise every completed prototype after each task from all classes "
            "since that subspace (the code's default); false: fill only the newest subspace."
        },
    )

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError("bottleneck must be >= 1")
        if not 0 <= self.adapter_dropout < 1:
            raise ValueError("adapter_dropout must be in [0, 1)")
        if self.alpha < 0:
            raise ValueError("alpha must be >= 0")
