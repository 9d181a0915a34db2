from dataclasses import dataclass, field

from promptcl.tuners.hide.config import HiDeConfig

GATE_ACTIVATIONS = ("tanh", "sigmoid", "gelu")


@dataclass
class NoRGaConfig(HiDeConfig):
    gate_activation: str = field(
        default="tanh", metadata={"help": "sigma of the gate s + alpha * sigma(tau * s)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate_activation not in GATE_ACTIVATIONS:
            raise ValueError(f"gate_activation must be one of {', '.join(GATE_ACTIVATIONS)}")
