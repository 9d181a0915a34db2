from dataclasses import dataclass, field


@dataclass
class L2PConfig:
    pool_size: int = field(default=10, metadata={"help": "Prompts in the pool."})
    length: int = field(default=5, metadata={"help": "Tokens per prompt."})
    top_k: int = field(default=5, metadata={"help": "Prompts chosen per sample."})
    pull_coeff: float = field(
        default=0.1, metadata={"help": "Weight of the surrogate loss pulling chosen keys to q(x)."}
    )
    prompt_init: float = field(
        default=1.0, metadata={"help": "Prompts and keys start as U(-a, a)."}
    )

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.pool_size or self.length < 1:
            raise ValueError("need 1 <= top_k <= pool_size and length >= 1")
        if self.pull_coeff < 0 or self.prompt_init < 0:
            raise ValueError("need pull_coeff >= 0 and prompt_init >= 0")
