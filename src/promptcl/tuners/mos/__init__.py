from promptcl.tuners import register_tuner
from promptcl.tuners.mos.config import MOSConfig
from promptcl.tuners.mos.model import MOS

register_tuner(MOS)

__all__ = ["MOS", "MOSConfig"]
