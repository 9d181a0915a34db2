from dataclasses import dataclass, field

from promptcl.taskid.ridge import PROJECTION_DIM, RIDGES


@dataclass
class RanPACConfig:
    dim: int = field(
        default=PROJECTION_DIM,
        metadata={"help": "M: random projection size (RanPAC's M = 10000); 0: no projection."},
    )
    ridges: list[float] = field(
        default_factory=lambda: list(RIDGES),
        metadata={"help": "Grid of the ridge lambda, chosen per task (RanPAC: 1e-8 ... 1e8)."},
    )
    adapt: bool = field(
        default=False,
        metadata={
            "help": "Phase 1: train a shared prefix and a head on the first task, then freeze "
            "the prefix; the projection reads the prefixed features."
        },
    )
    adapt_length: int = field(default=5, metadata={"help": "adapt: prefix length per block."})
    adapt_blocks: list[int] | None = field(
        default=None, metadata={"help": "adapt: prefixed blocks; null: 0-4, or all."}
    )
    prompt_init: float = field(default=1.0, metadata={"help": "adapt: prefix starts U(-a, a)."})

    def __post_init__(self) -> None:
        if self.dim < 0 or self.adapt_length < 1:
            raise ValueError("need dim >= 0 and adapt_length >= 1")
        if not self.ridges or not all(r > 0 for r in self.ridges):
            raise ValueError("ridges must be a non-empty list of values > 0")
