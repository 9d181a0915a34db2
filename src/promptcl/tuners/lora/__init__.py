from promptcl.tuners import register_tuner
from promptcl.tuners.lora.config import LoRAConfig
from promptcl.tuners.lora.model import LoRA

register_tuner(LoRA)

__all__ = ["LoRAConfig", "LoRA"]
