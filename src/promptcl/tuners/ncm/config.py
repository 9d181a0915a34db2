from dataclasses import dataclass, field


@dataclass
class NCMConfig:
    scale: float = field(default=10.0, metadata={"help": "Multiplies cosine scores into logits."})
