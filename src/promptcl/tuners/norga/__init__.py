from promptcl.tuners import register_tuner
from promptcl.tuners.norga.config import NoRGaConfig
from promptcl.tuners.norga.model import NoRGa

register_tuner(NoRGa)

__all__ = ["NoRGaConfig", "NoRGa"]
