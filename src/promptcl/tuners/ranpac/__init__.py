from promptcl.tuners import register_tuner
from promptcl.tuners.ranpac.config import RanPACConfig
from promptcl.tuners.ranpac.model import RanPAC

register_tuner(RanPAC)

__all__ = ["RanPAC", "RanPACConfig"]
