from promptcl.tuners import register_tuner
from promptcl.tuners.aper.config import APERConfig
from promptcl.tuners.aper.model import APER

register_tuner(APER)

__all__ = ["APER", "APERConfig"]
