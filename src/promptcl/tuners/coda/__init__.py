from promptcl.tuners import register_tuner
from promptcl.tuners.coda.config import CODAConfig
from promptcl.tuners.coda.model import CODAPrompt

register_tuner(CODAPrompt)

__all__ = ["CODAConfig", "CODAPrompt"]
