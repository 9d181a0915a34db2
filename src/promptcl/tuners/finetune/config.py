from dataclasses import dataclass, field


@dataclass
class FinetuneConfig:
    length: int = field(default=5, metadata={"help": "Prefix length per block (keys and values)."})
    blocks: list[int] | None = field(
        default=None,
        metadata={"help": "Prefixed blocks (0-based); null: 0-4, or all of a shallower model."},
    )
    prompt_init: float = field(default=1.0, metadata={"help": "Prefixes start as U(-a, a)."})

    def __post_init__(self) -> None:
        if self.length < 1 or self.prompt_init < 0:
            raise ValueError("need length >= 1 and prompt_init >= 0")
