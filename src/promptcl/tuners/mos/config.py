from dataclasses import dataclass, field

from promptcl.tuners.adaptformer import AdapterOptions
from promptcl.tuners.align import TAPOptions


def mos_alignment() -> TAPOptions:
    """MOS's classifier alignment (its exps/*.json): 30 epochs, SGD lr 0.005, batches and
    samples per class of 5 x its batch size (CIFAR: 48), its weight decay 5e-4."""
    return TAPOptions(epochs=30, lr=0.005, batch_size=240, samples_per_class=240, weight_decay=5e-4)


@dataclass
class MOSConfig(AdapterOptions):
    bottleneck: int = field(
        default=16, metadata={"help": "Adapter hidden size (MOS's ffn_num: 16)."}
    )
    blocks: list[int] | None = field(
        default=None, metadata={"help": "Blocks with an adapter beside the MLP; null: all."}
    )
    adapter_momentum: float = field(
        default=0.1,
        metadata={
            "help": "alpha of the adapter merge: after each step the task's adapter becomes "
            "(1 - alpha) of itself + alpha x the mean of the older tasks' adapters (MOS: 0.1)."
        },
    )
    contrast_coeff: float = field(
        default=0.1,
        metadata={"help": "Weight of the term pushing features from old class means (MOS: 0.1)."},
    )
    contrast_temperature: float = field(
        default=0.8, metadata={"help": "Temperature of that term (MOS: 0.8)."}
    )
    head_lr_scale: float = field(
        default=0.1, metadata={"help": "Head learning rate relative to the adapter's (MOS: 0.1)."}
    )
    covariance: str = field(
        default="full",
        metadata={
            "help": "Class statistics for the alignment: full (MOS's covariance) or diagonal "
            "(its variance, used on ImageNet-A)."
        },
    )
    align: TAPOptions | None = field(
        default_factory=mos_alignment,
        metadata={"help": "Head alignment on class Gaussians after each task; null: off."},
    )
    refine_rounds: int = field(
        default=4,
        metadata={"help": "Most head evaluations of the self-refined retrieval (MOS: 4)."},
    )
    ensemble: bool = field(
        default=True,
        metadata={
            "help": "Add the softmax of the first adapter's prototype classifier (temperature "
            "1/T) to the refined prediction's (MOS: true)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine_rounds < 1:
            raise ValueError("refine_rounds must be >= 1")
        if not 0 <= self.adapter_momentum < 1:
            raise ValueError("adapter_momentum must be in [0, 1)")
        if self.contrast_coeff < 0 or self.head_lr_scale < 0:
            raise ValueError("contrast_coeff and head_lr_scale must be >= 0")
        if self.contrast_temperature <= 0:
            raise ValueError("contrast_temperature must be > 0")
        if self.covariance not in ("full", "diagonal"):
            raise ValueError(f"covariance must be full or diagonal, not {self.covariance!r}")
