from dataclasses import dataclass, field

from promptcl.tuners.adaptformer import AdapterOptions


@dataclass
class EASEConfig(AdapterOptions):
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks with a per-task adapter; null: every block."}
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
        super().__post_init__()
        if self.alpha < 0:
            raise ValueError("alpha must be >= 0")
