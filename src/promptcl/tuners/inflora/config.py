from dataclasses import dataclass, field


@dataclass
class InfLoRAConfig:
    rank: int = field(default=10, metadata={"help": "r: rank of each task's branch B_t A_t."})
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks whose keys and values get branches; null: all."}
    )
    threshold: float = field(
        default=0.95,
        metadata={
            "help": "DualGPM's energy threshold after the first task (the code's lamb; its "
            "ImageNet-R and DomainNet configs: 0.98 and 0.95)."
        },
    )
    threshold_end: float = field(
        default=1.0,
        metadata={
            "help": "The threshold grows linearly from threshold towards this with the share of "
            "classes seen before the task (the code's lame)."
        },
    )

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError("rank must be >= 1")
        if not 0 < self.threshold <= self.threshold_end <= 1:
            raise ValueError("need 0 < threshold <= threshold_end <= 1")
