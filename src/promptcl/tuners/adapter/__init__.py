from promptcl.tuners import register_tuner
from promptcl.tuners.adapter.config import AdapterConfig
from promptcl.tuners.adapter.model import Adapter

register_tuner(Adapter)

__all__ = ["AdapterConfig", "Adapter"]
