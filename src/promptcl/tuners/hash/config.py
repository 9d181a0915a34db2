from dataclasses import dataclass, field

from promptcl.taskid.tii import TIIOptions
from promptcl.tuners.align import TAPOptions
from promptcl.tuners.hash.routing import MODULATIONS, PENALTIES, PROTECTIONS
from promptcl.tuners.stages import check_head, head_option

HGM_MODES = ("off", "scale", "quadratic")


@dataclass
class HashConfig:
    num_experts: int = field(default=10, metadata={"help": "K: prefix experts per prompted block."})
    length: int = field(default=5, metadata={"help": "L_p: prefix length of each expert."})
    top_k: int = field(default=2, metadata={"help": "Experts mixed per sample and block."})
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Prompted blocks; null: the first third (4 of 12)."}
    )
    num_protected: int = field(
        default=2, metadata={"help": "M: most-used experts protected at the start of a task."}
    )
    protection: str = field(
        default="top",
        metadata={
            "help": "A_t rule: top (the M most used, the paper's), share (every expert with "
            "at least protect_share of its block's history)."
        },
    )
    protect_share: float = field(
        default=0.05,
        metadata={"help": "protection=share: minimum share H_e / sum H of a protected expert."},
    )
    hdr: bool = field(default=True, metadata={"help": "History-aware dynamic routing."})
    delta: float = field(default=0.1, metadata={"help": "HDR: score penalty of protected experts."})
    penalty: str = field(
        default="constant", metadata={"help": "HDR penalty phi: constant, proportional."}
    )
    hgm: str = field(
        default="scale", metadata={"help": "Gradient modulation: off, scale (beta), quadratic."}
    )
    beta: float = field(default=0.1, metadata={"help": "HGM scale: update multiplier in (0, 1]."})
    modulation: str = field(
        default="constant", metadata={"help": "HGM multiplier psi: constant, proportional."}
    )
    quadratic_lambda: float = field(
        default=1e-4,
        metadata={"help": "HGM quadratic: lambda of 1/2 lambda H_e ||theta_e - old||^2."},
    )
    contrast_coeff: float = field(
        default=0.0,
        metadata={
            "help": "Weight of HiDe-Prompt's contrastive term against old classes' feature "
            "means; 0 (the paper): off. An extension, docs/METHODS.md (issue 18)."
        },
    )
    contrast_temperature: float = 0.8
    prompt_init: float = field(default=1.0, metadata={"help": "Experts start as U(-a, a)."})
    router_init: float = field(default=1.0, metadata={"help": "Routers start as N(0, std^2)."})
    tii: TIIOptions = field(default_factory=TIIOptions)
    tap: TAPOptions | None = field(
        default_factory=TAPOptions, metadata={"help": "Head alignment after each task; null: off."}
    )
    head: str = head_option()

    def __post_init__(self) -> None:
        check_head(self.head)
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError("need 1 <= top_k <= num_experts")
        if not 0 <= self.num_protected <= self.num_experts:
            raise ValueError("need 0 <= num_protected <= num_experts")
        if self.hgm not in HGM_MODES:
            raise ValueError(f"hgm must be one of {', '.join(HGM_MODES)}")
        if self.penalty not in PENALTIES or self.modulation not in MODULATIONS:
            raise ValueError(
                f"penalty must be one of {', '.join(PENALTIES)}; "
                f"modulation one of {', '.join(MODULATIONS)}"
            )
        if self.protection not in PROTECTIONS:
            raise ValueError(f"protection must be one of {', '.join(PROTECTIONS)}")
        if not 0 < self.protect_share <= 1:
            raise ValueError("need 0 < protect_share <= 1")
        if not 0 < self.beta <= 1 or self.delta < 0:
            raise ValueError("need 0 < beta <= 1 and delta >= 0")
        if self.length < 1:
            raise ValueError("length must be >= 1")
        if min(self.quadratic_lambda, self.prompt_init, self.router_init, self.contrast_coeff) < 0:
            raise ValueError(
                "quadratic_lambda, prompt_init, router_init and contrast_coeff must be >= 0"
            )
        if self.contrast_temperature <= 0:
            raise ValueError("contrast_temperature must be > 0")
