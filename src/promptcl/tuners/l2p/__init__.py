from promptcl.tuners import register_tuner
from promptcl.tuners.l2p.config import L2PConfig
from promptcl.tuners.l2p.model import L2P

register_tuner(L2P)

__all__ = ["L2P", "L2PConfig"]
