from dataclasses import dataclass, field


@dataclass
class CODAConfig:
    components_per_task: int = field(
        default=10,
        metadata={
            "help": "Prompt components each task adds (CODA-Prompt: a pool of 100 over 10 tasks)."
        },
    )
    length: int = field(
        default=8,
        metadata={
            "help": "Prompt length L_p (CODA-Prompt: 8): the first half is the key prefix, the "
            "second half the value prefix."
        },
    )
    blocks: list[int] | None = field(
        default=None,
        metadata={"help": "Prompted blocks; null: the first 5/12 (0-4 of 12, 0-2 of 6)."},
    )
    ortho_mu: float = field(
        default=0.0,
        metadata={"help": "Weight of the orthogonality penalty on K, A, P (public scripts: 0)."},
    )

    def __post_init__(self) -> None:
        if self.components_per_task < 1 or self.length < 2 or self.length % 2:
            raise ValueError("need components_per_task >= 1 and an even length >= 2")
        if self.ortho_mu < 0:
            raise ValueError("ortho_mu must be >= 0")
