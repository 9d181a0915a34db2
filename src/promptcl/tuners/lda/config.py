from dataclasses import dataclass, field

from promptcl.taskid.discriminant import SHRINKAGES


@dataclass
class LDAConfig:
    shrinkages: list[float] = field(
        default_factory=lambda: list(SHRINKAGES),
        metadata={
            "help": "Grid of gamma in (1 - gamma) Sigma + gamma tr(Sigma)/d I, chosen per task on "
            "a held-out 20 % of its training data."
        },
    )

    def __post_init__(self) -> None:
        if not self.shrinkages or not all(0 < g <= 1 for g in self.shrinkages):
            raise ValueError("shrinkages must be a non-empty list of values in (0, 1]")
