from promptcl.tuners import register_tuner
from promptcl.tuners.ncm.config import NCMConfig
from promptcl.tuners.ncm.model import NCM

register_tuner(NCM)

__all__ = ["NCM", "NCMConfig"]
