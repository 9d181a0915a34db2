from promptcl.tuners import register_tuner
from promptcl.tuners.hide.config import HiDeConfig
from promptcl.tuners.hide.model import HiDePrompt

register_tuner(HiDePrompt)

__all__ = ["HiDeConfig", "HiDePrompt"]
