from promptcl.tuners import register_tuner
from promptcl.tuners.linear.config import LinearConfig
from promptcl.tuners.linear.model import LinearProbe

register_tuner(LinearProbe)

__all__ = ["LinearConfig", "LinearProbe"]
