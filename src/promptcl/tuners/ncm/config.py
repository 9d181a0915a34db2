from dataclasses import dataclass, field


@dataclass
class NCMConfig:
    scale: float = field(default=10.0, metadata={"help": "Multiplies cosine scores into logits."})

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("scale must be > 0")
