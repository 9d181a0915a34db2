from dataclasses import dataclass, field


@dataclass
class DualPromptConfig:
    g_length: int = field(default=5, metadata={"help": "G-prompt prefix length (keys and values)."})
    g_blocks: list[int] = field(
        default_factory=lambda: [0, 1], metadata={"help": "G-prompt blocks."}
    )
    e_length: int = field(default=5, metadata={"help": "E-prompt prefix length (keys and values)."})
    e_blocks: list[int] = field(
        default_factory=lambda: [2, 3, 4], metadata={"help": "E-prompt blocks."}
    )
    pull_coeff: float = field(
        default=1.0, metadata={"help": "Weight of the loss pulling the task key to its queries."}
    )
    init_from_previous: bool = field(
        default=True, metadata={"help": "Start task t's E-prompt as a copy of task t-1's."}
    )
    prompt_init: float = field(
        default=1.0, metadata={"help": "Prompts and keys start as U(-a, a)."}
    )

    def __post_init__(self) -> None:
        if self.g_length < 0 or self.e_length < 1:
            raise ValueError("g_length must be >= 0 and e_length >= 1")
