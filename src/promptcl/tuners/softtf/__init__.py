from promptcl.tuners import register_tuner
from promptcl.tuners.softtf.config import SoftTFConfig
from promptcl.tuners.softtf.model import SoftTF

register_tuner(SoftTF)

__all__ = ["SoftTF", "SoftTFConfig"]
