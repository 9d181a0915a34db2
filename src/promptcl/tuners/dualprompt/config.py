from dataclasses import dataclass, field


@dataclass
class DualPromptConfig:
    g_length: int = field(default=5, metadata={"help": "G-prompt prefix length (keys and values)."})
    g_blocks: list[int] | None = field(
        default=None,
        metadata={
            "help": "G-prompt blocks; null: blocks 0-1 on 5 blocks or more (the paper's, on "
            "ViT-B and MiniLM-L6), block 0 on 2-4 blocks, none on 1."
        },
    )
    e_length: int = field(default=5, metadata={"help": "E-prompt prefix length (keys and values)."})
    e_blocks: list[int] | None = field(
        default=None,
        metadata={
            "help": "E-prompt blocks; null: the 3 blocks after the default G-prompt's, or as "
            "many as the backbone has."
        },
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

    def blocks(self, depth: int) -> tuple[list[int], list[int]]:
        """(g_blocks, e_blocks) on a backbone of ``depth`` blocks: the given lists, or the
        defaults' rule (ViT-B/16 and MiniLM-L6: [0, 1] and [2, 3, 4]; 2 blocks: [0] and [1])."""
        g_count = 2 if depth >= 5 else min(1, depth - 1)
        g = self.g_blocks if self.g_blocks is not None else range(g_count)
        e = self.e_blocks if self.e_blocks is not None else range(g_count, min(g_count + 3, depth))
        return list(g), list(e)

    def __post_init__(self) -> None:
        if self.g_length < 0 or self.e_length < 1:
            raise ValueError("g_length must be >= 0 and e_length >= 1")
        if self.pull_coeff < 0 or self.prompt_init < 0:
            raise ValueError("need pull_coeff >= 0 and prompt_init >= 0")
