from promptcl.tuners import register_tuner
from promptcl.tuners.sdlora.config import SDLoRAConfig
from promptcl.tuners.sdlora.model import SDLoRA

register_tuner(SDLoRA)

__all__ = ["SDLoRAConfig", "SDLoRA"]
