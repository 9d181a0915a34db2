from promptcl.tuners import register_tuner
from promptcl.tuners.wsn.config import WSNConfig
from promptcl.tuners.wsn.model import WSN

register_tuner(WSN)

__all__ = ["WSNConfig", "WSN"]
