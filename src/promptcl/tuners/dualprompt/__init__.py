from promptcl.tuners import register_tuner
from promptcl.tuners.dualprompt.config import DualPromptConfig
from promptcl.tuners.dualprompt.model import DualPrompt

register_tuner(DualPrompt)

__all__ = ["DualPrompt", "DualPromptConfig"]
