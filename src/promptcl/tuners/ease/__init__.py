from promptcl.tuners import register_tuner
from promptcl.tuners.ease.config import EASEConfig
from promptcl.tuners.ease.model import EASE

register_tuner(EASE)

__all__ = ["EASE", "EASEConfig"]
