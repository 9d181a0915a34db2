from dataclasses import dataclass, field


@dataclass
class SDLoRAConfig:
    rank: int = field(default=10, metadata={"help": "r: rank of each task's branch B_t A_t."})
    ranks: list[int] = field(
        default_factory=list,
        metadata={
            "help": "SD-LoRA-RR: task t's rank is ranks[t] (the last entry for later tasks); "
            "empty: rank for every task. The code's RR: 10 for tasks 0-3, 8 for 4-7, 6 after."
        },
    )
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks whose queries and values get branches; null: all."}
    )
    magnitude_init: float = field(
        default=0.8,
        metadata={"help": "Every magnitude alpha_i starts here at the start of each task."},
    )

    def __post_init__(self) -> None:
        if self.rank < 1 or any(r < 1 for r in self.ranks):
            raise ValueError("ranks must be >= 1")

    def rank_of(self, task: int) -> int:
        return self.ranks[min(task, len(self.ranks) - 1)] if self.ranks else self.rank
