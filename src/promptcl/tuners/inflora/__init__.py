from promptcl.tuners import register_tuner
from promptcl.tuners.inflora.config import InfLoRAConfig
from promptcl.tuners.inflora.model import InfLoRA

register_tuner(InfLoRA)

__all__ = ["InfLoRAConfig", "InfLoRA"]
